//! A VPS's root filesystem: the image's root, read-only and idmapped into the VPS's user
//! namespace (so its root-owned files are the VPS root's, with no per-VPS copy or chown),
//! under an overlay whose writable layer lives on an ext4 file of the VPS's disk size,
//! loop-mounted by the host. The ext4 is one the host made itself (`mkfs.ext4` on a fresh
//! sparse file), never a customer's filesystem, and it makes the disk limit hold the way a
//! VM's disk does: the upper layer cannot outgrow it. A project quota would need a host
//! filesystem with quotas on; this needs nothing of the host's.

use crate::ns::{path_c, umount};
use crate::{cmd, VpsError};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where VPS roots are mounted. Not under the VPS's directory: runc bind-mounts the root from
/// inside the VPS's user namespace, as the VPS's root, which cannot search the daemon's state
/// directory (0700, it holds secrets); every component of this path is world-searchable.
pub const MOUNT_BASE: &str = "/run/hostel-vps";

/// Where a VPS's filesystem pieces live: under its directory, the root's mount point under
/// [`MOUNT_BASE`].
#[derive(Debug, Clone)]
pub struct RootfsPaths {
    /// The ext4 file (sparse, the disk's size).
    pub disk: PathBuf,
    /// Its mount: `upper/` and `work/` of the overlay.
    pub data: PathBuf,
    /// The idmapped image root.
    pub lower: PathBuf,
    /// The overlay: the container's root.
    pub root: PathBuf,
}

impl RootfsPaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            disk: dir.join("disk.ext4"),
            data: dir.join("data"),
            lower: dir.join("lower"),
            root: Path::new(MOUNT_BASE)
                .join(dir.file_name().unwrap_or_default())
                .join("rootfs"),
        }
    }

    /// Makes the disk file (once: a restart keeps the VPS's data).
    pub fn create_disk(&self, disk_gib: u64, uid_base: u32) -> Result<(), VpsError> {
        if self.disk.exists() {
            return Ok(());
        }
        let tmp = self.disk.with_extension("new");
        let f = fs::File::create(&tmp).map_err(VpsError::io("create", &tmp))?;
        f.set_len(disk_gib.saturating_mul(1 << 30))
            .map_err(VpsError::io("size", &tmp))?;
        drop(f);
        let owner = format!("root_owner={uid_base}:{uid_base}");
        let t = tmp.to_string_lossy();
        // No reserved blocks: the whole size is the customer's; lazy init keeps it quick.
        cmd::run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                &format!("{owner},lazy_itable_init=1,lazy_journal_init=1"),
                &t,
            ],
        )?;
        // Renamed only when complete, so a crash in between leaves no half-made disk that a
        // later start would take for the VPS's own.
        fs::rename(&tmp, &self.disk).map_err(VpsError::io("rename", &tmp))
    }

    /// Mounts the disk, the idmapped image root and the overlay (each unless mounted).
    /// Returns the disk's loop device (major, minor) for the I/O throttle.
    pub fn mount(
        &self,
        image_root: &Path,
        userns: &Path,
        uid_base: u32,
    ) -> Result<(u64, u64), VpsError> {
        for d in [&self.data, &self.lower, &self.root] {
            fs::create_dir_all(d).map_err(VpsError::io("create", d))?;
        }
        // Searchable by the VPS's root whatever the umask (see `MOUNT_BASE`).
        if let Some(parent) = self.root.parent() {
            for d in [Path::new(MOUNT_BASE), parent] {
                fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(VpsError::io("chmod", d))?;
            }
        }
        if !is_mountpoint(&self.data) {
            let disk = self.disk.to_string_lossy();
            let data = self.data.to_string_lossy();
            cmd::run(
                "mount",
                &["-o", "loop,nosuid,nodev", "-t", "ext4", &disk, &data],
            )?;
        }
        let dev = fs::metadata(&self.data)
            .map_err(VpsError::io("stat", &self.data))?
            .dev();
        let upper = self.data.join("upper");
        let work = self.data.join("work");
        for d in [&upper, &work] {
            if !d.exists() {
                fs::create_dir(d).map_err(VpsError::io("create", d))?;
            }
        }
        // The upper root is the VPS root's (so it may create files in `/`), and so is the
        // data disk's top (its lost+found is the host's business).
        std::os::unix::fs::chown(&upper, Some(uid_base), Some(uid_base))
            .map_err(VpsError::io("chown", &upper))?;
        if !is_mountpoint(&self.lower) {
            idmapped_bind(image_root, &self.lower, userns)?;
        }
        if !is_mountpoint(&self.root) {
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                self.lower.display(),
                upper.display(),
                work.display()
            );
            let root = self.root.to_string_lossy();
            cmd::run("mount", &["-t", "overlay", "overlay", "-o", &opts, &root])?;
        }
        Ok((u64::from(libc::major(dev)), u64::from(libc::minor(dev))))
    }

    /// Unmounts everything (missing pieces are fine); the disk file stays.
    pub fn unmount(&self) -> Result<(), VpsError> {
        for p in [&self.root, &self.lower, &self.data] {
            while is_mountpoint(p) {
                umount(p)?;
            }
        }
        Ok(())
    }

    /// Unmounts and removes every piece, the disk included.
    pub fn destroy(&self) -> Result<(), VpsError> {
        self.unmount()?;
        let root_parent = self.root.parent().map(Path::to_path_buf);
        for d in [
            Some(&self.root),
            root_parent.as_ref(),
            Some(&self.lower),
            Some(&self.data),
        ]
        .into_iter()
        .flatten()
        {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VpsError::io("remove", d)(e)),
            }
        }
        for f in [self.disk.clone(), self.disk.with_extension("new")] {
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VpsError::io("remove", &f)(e)),
            }
        }
        Ok(())
    }
}

/// Something is mounted at `p` (by `/proc/self/mountinfo`: a bind of the image's root can
/// be on the same device as its parent, so comparing devices would miss it).
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = p.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == target))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Mounts `src` at `target` read-only with ids mapped through the user namespace at
/// `userns`: the image's uid 0 appears as the VPS's root.
fn idmapped_bind(src: &Path, target: &Path, userns: &Path) -> Result<(), VpsError> {
    let s = path_c(src)?;
    let t = path_c(target)?;
    let ns = fs::File::open(userns).map_err(VpsError::io("open", userns))?;
    // SAFETY: `s` is NUL-terminated and outlives the call; open_tree returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            s.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(VpsError::sys("open_tree"));
    }
    let fd_i32 = i32::try_from(fd).map_err(|_| VpsError::Sys {
        call: "open_tree",
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })?;
    // SAFETY: open_tree returned this fd just now and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd_i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `tree` is a detached mount fd we own, `empty` is NUL-terminated, `attr` is a
    // valid mount_attr of the size passed; all outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(VpsError::sys("mount_setattr (idmap)"));
    }
    // SAFETY: as above; `t` is NUL-terminated and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(VpsError::sys("move_mount"));
    }
    Ok(())
}
