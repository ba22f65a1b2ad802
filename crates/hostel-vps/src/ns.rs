//! The VPS's own user and network namespaces, made once by the host and kept (bind-mounted
//! on two files in its directory) for the VPS's whole life: the network namespace is owned
//! by the user namespace, so root in the VPS may mount `sysfs` and configure its own
//! interfaces, and the TAP moved in stays there across container restarts; the same user
//! namespace idmaps the image's root (`rootfs.rs`). runc joins both.

use crate::{cmd, VpsError, ID_RANGE};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The two namespace files of a VPS.
#[derive(Debug, Clone)]
pub struct NsPaths {
    pub user: PathBuf,
    pub net: PathBuf,
}

impl NsPaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            user: dir.join("userns"),
            net: dir.join("netns"),
        }
    }

    /// Both files hold a namespace (a bind mount of an nsfs inode).
    pub fn exist(&self) -> bool {
        is_nsfs(&self.user) && is_nsfs(&self.net)
    }

    /// Makes the pair with `uid_base` mapped to root, unless it exists already.
    pub fn create(&self, uid_base: u32) -> Result<(), VpsError> {
        if self.exist() {
            return Ok(());
        }
        // A parked child in fresh namespaces: `unshare` happens in the child after fork
        // (async-signal-safe) and before it execs `sleep`, so once `spawn` returns (it waits
        // for the exec) both namespaces exist.
        let mut child = {
            let mut c = Command::new("sleep");
            c.arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // `unshare`, which is async-signal-safe and touches no memory of the parent.
            unsafe { c.pre_exec(enter_namespaces) };
            c.spawn().map_err(|source| VpsError::Sys {
                call: "spawn namespace holder",
                source,
            })?
        };
        let result = self.capture(child.id(), uid_base);
        let _ = child.kill();
        let _ = child.wait();
        if result.is_err() {
            let _ = self.remove();
        }
        result
    }

    fn capture(&self, pid: u32, uid_base: u32) -> Result<(), VpsError> {
        let map = format!("0 {uid_base} {ID_RANGE}\n");
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{pid}/{f}");
            fs::write(&p, &map).map_err(VpsError::io("write", &p))?;
        }
        for (kind, target) in [("user", &self.user), ("net", &self.net)] {
            fs::write(target, b"").map_err(VpsError::io("create", target))?;
            let src = format!("/proc/{pid}/ns/{kind}");
            bind(Path::new(&src), target)?;
        }
        Ok(())
    }

    /// Releases both namespaces (the network one goes, with the VPS's NIC, once no process
    /// is left in it) and removes the files. Missing ones are fine.
    pub fn remove(&self) -> Result<(), VpsError> {
        for p in [&self.net, &self.user] {
            if is_nsfs(p) {
                umount(p)?;
            }
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VpsError::io("remove", p)(e)),
            }
        }
        Ok(())
    }

    /// Runs `program args…` inside the network namespace.
    pub fn run_in_net(&self, program: &'static str, args: &[&str]) -> Result<String, VpsError> {
        let net = format!("--net={}", self.net.display());
        let mut all = vec![net.as_str(), program];
        all.extend_from_slice(args);
        cmd::run("nsenter", &all)
    }
}

/// The holder's first act in the child: new user and network namespaces.
fn enter_namespaces() -> std::io::Result<()> {
    // SAFETY: unshare takes flags only and changes this (child) process alone.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

fn is_nsfs(p: &Path) -> bool {
    statfs_type(p) == Some(NSFS_MAGIC)
}

pub(crate) fn statfs_type(p: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is valid for writes; both outlive the call.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    (r == 0).then_some(st.f_type as i64)
}

pub(crate) fn bind(src: &Path, target: &Path) -> Result<(), VpsError> {
    let s = path_c(src)?;
    let t = path_c(target)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; null fstype and data
    // are allowed for a bind mount.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(VpsError::sys("mount --bind"));
    }
    Ok(())
}

/// Unmounts `p` (lazily if it is busy: a process still holding it keeps the object alive,
/// the path is freed now). Not mounted is fine.
pub(crate) fn umount(p: &Path) -> Result<(), VpsError> {
    let c = path_c(p)?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
            if r == 0 {
                Ok(())
            } else {
                Err(VpsError::sys("umount (detach)"))
            }
        }
        _ => Err(VpsError::Sys {
            call: "umount",
            source: err,
        }),
    }
}

pub(crate) fn path_c(p: &Path) -> Result<std::ffi::CString, VpsError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| VpsError::Invalid {
        field: "path",
        reason: format!("{} contains NUL", p.display()),
    })
}
