//! Finding the QEMUs launched under a run root by their command line, with or without a pid
//! file: a QEMU killed (or a launcher cut) before it wrote `qemu.pid` is still found, so no
//! QEMU is ever left running unknown to whoever owns the run root.

use crate::run_dir::RunDir;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A live QEMU whose `-pidfile` lies in `<run root>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundQemu {
    pub pid: i32,
    /// The name of its run directory (for the daemon: the VM id).
    pub name: String,
    pub run_dir: RunDir,
}

/// Every live (not zombie) process launched with `-pidfile <run_root>/<name>/qemu.pid`.
/// Processes that vanish while being read are skipped.
pub fn find_qemus(run_root: &Path) -> Vec<FoundQemu> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<FoundQemu> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let name = run_dir_name(&cmdline, run_root)?;
            crate::vm::process_alive(pid).then(|| FoundQemu {
                pid,
                run_dir: RunDir::new(run_root.join(&name)),
                name,
            })
        })
        .collect();
    found.sort_by_key(|f| f.pid);
    found
}

/// The `<name>` of a NUL-separated command line holding `-pidfile <run_root>/<name>/qemu.pid`.
fn run_dir_name(cmdline: &[u8], run_root: &Path) -> Option<String> {
    let mut args = cmdline.split(|b| *b == 0);
    while let Some(arg) = args.next() {
        if arg != b"-pidfile" {
            continue;
        }
        let path = PathBuf::from(std::str::from_utf8(args.next()?).ok()?);
        if path.file_name()? != "qemu.pid" {
            return None;
        }
        let dir = path.parent()?;
        if dir.parent()? != run_root {
            return None;
        }
        return dir.file_name()?.to_str().map(str::to_owned);
    }
    None
}

/// SIGKILLs the QEMU `found` names and waits (up to `timeout`) until it is gone. The process
/// is pinned by a pidfd and its command line checked again first, so a pid reused since the
/// scan is never signalled. Returns whether it is gone.
pub async fn kill_found(found: &FoundQemu, timeout: Duration) -> bool {
    let Ok(pidfd) = pidfd_open(found.pid) else {
        return true; // already gone
    };
    let still_ours = std::fs::read(format!("/proc/{}/cmdline", found.pid))
        .ok()
        .and_then(|c| run_dir_name(&c, found.run_dir.path().parent()?))
        .is_some_and(|n| n == found.name);
    if !still_ours {
        return true;
    }
    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent < 0 {
        return !crate::vm::process_alive(found.pid);
    }
    wait_pidfd(pidfd, Some(timeout)).await
}

/// Waits until the process behind `pidfd` has exited (the pidfd turns readable), at most
/// `timeout` if one is given. Returns whether it exited.
pub(crate) async fn wait_pidfd(pidfd: OwnedFd, timeout: Option<Duration>) -> bool {
    // SAFETY: the AsyncFd owns `pidfd` (an OwnedFd), which stays open until it drops.
    let Ok(fd) = (unsafe { tokio::io::unix::AsyncFd::register(pidfd) }) else {
        return false;
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, fd.readable()).await.is_ok(),
        None => fd.readable().await.is_ok(),
    }
}

pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(args: &[&str]) -> Vec<u8> {
        args.join("\0").into_bytes()
    }

    #[test]
    fn names_the_run_directory_of_its_pidfile_only_under_the_root() {
        let root = Path::new("/state/run");
        let line = cmdline(&["qemu", "-name", "x", "-pidfile", "/state/run/abc/qemu.pid"]);
        assert_eq!(run_dir_name(&line, root).as_deref(), Some("abc"));
        for other in [
            cmdline(&["qemu", "-pidfile", "/other/run/abc/qemu.pid"]),
            cmdline(&["qemu", "-pidfile", "/state/run/abc/deeper/qemu.pid"]),
            cmdline(&["qemu", "-pidfile", "/state/run/abc/other.pid"]),
            cmdline(&["hostel", "daemon", "--state-dir", "/state/run/abc/qemu.pid"]),
            cmdline(&["qemu", "-pidfile"]),
            cmdline(&["switch", "--control", "/state/switch/control.sock"]),
        ] {
            assert_eq!(run_dir_name(&other, root), None, "{other:?}");
        }
    }

    /// A process started with a `-pidfile` under a run root (and no pid file written) is
    /// found by its command line and killed; others are not.
    #[tokio::test]
    async fn finds_and_kills_a_process_without_a_pidfile() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("vm-1");
        std::fs::create_dir_all(&run).unwrap();
        // `sh -c` keeps its extra arguments in its command line; `read` is a builtin, so no
        // forked child shows the same command line. It waits on a pipe we hold open.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x", "sh", "-pidfile"])
            .arg(run.join("qemu.pid"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The new command line can show a moment after `spawn` returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut found = find_qemus(root.path());
        while found.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            found = find_qemus(root.path());
        }
        assert_eq!(
            found,
            vec![FoundQemu {
                pid,
                name: "vm-1".into(),
                run_dir: RunDir::new(&run)
            }]
        );
        assert!(!run.join("qemu.pid").exists());
        assert!(kill_found(&found[0], Duration::from_secs(10)).await);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(find_qemus(root.path()).is_empty());
    }
}
