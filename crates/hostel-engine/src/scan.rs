//! Finding the QEMUs launched under a run root by their command line, with or without a pid
//! file: a QEMU killed (or a launcher cut) before it wrote `qemu.pid` is still found, so no
//! QEMU is ever left running unknown to whoever owns the run root.
//!
//! A command line is something any local user can forge, so it only names the run directory:
//! a process counts only if it also runs as our effective uid and executes the QEMU binary
//! we launch ([`QemuIdentity`]). Anything else is neither adopted nor signalled.

use crate::error::EngineError;
use crate::run_dir::RunDir;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What makes a process one of our QEMUs besides its command line: its owner and its
/// executable (by device and inode, so every spelling of the path and every hard link
/// matches, and a look-alike copy does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuIdentity {
    uid: u32,
    dev: u64,
    ino: u64,
}

impl QemuIdentity {
    /// The identity of processes running `qemu` as this process's effective user.
    pub fn of(qemu: &Path) -> Result<Self, EngineError> {
        let meta = std::fs::metadata(qemu)
            .map_err(|e| EngineError::QemuMissing(format!("{}: {e}", qemu.display())))?;
        Ok(Self {
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The identity of the QEMU a launch without an explicit binary uses (`$HOSTEL_QEMU` or
    /// `qemu-system-x86_64` on PATH).
    pub fn default_qemu() -> Result<Self, EngineError> {
        Self::of(&crate::preflight::find_qemu(None)?)
    }

    /// Whether `pid` runs as our user and executes our QEMU binary. A process whose `exe`
    /// we may not read (another user's, under ptrace rules) is not ours.
    pub fn matches(&self, pid: i32) -> bool {
        let owned = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.uid);
        owned
            && std::fs::metadata(format!("/proc/{pid}/exe"))
                .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// A live QEMU whose `-pidfile` lies in `<run root>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundQemu {
    pub pid: i32,
    /// The name of its run directory (for the daemon: the VM id).
    pub name: String,
    pub run_dir: RunDir,
    /// When it started (clock ticks since boot): orders processes where pids, which wrap,
    /// cannot.
    pub started: u64,
}

/// Every live (not zombie) process of `qemu` launched with `-pidfile <run_root>/<name>/qemu.pid`.
/// Processes that vanish while being read are skipped.
pub fn find_qemus(run_root: &Path, qemu: &QemuIdentity) -> Vec<FoundQemu> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<FoundQemu> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let name = run_dir_name(&cmdline, run_root)?;
            if !qemu.matches(pid) {
                tracing::warn!(pid, dir = %name, "ignoring a process that names a run directory but is not our QEMU");
                return None;
            }
            let started = start_time(pid)?;
            crate::vm::process_alive(pid).then(|| FoundQemu {
                pid,
                run_dir: RunDir::new(run_root.join(&name)),
                name,
                started,
            })
        })
        .collect();
    found.sort_by_key(|f| (f.started, f.pid));
    found
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
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
/// is pinned by a pidfd and checked again first (command line, owner, executable, start
/// time), so a pid reused since the scan is never signalled. Returns whether it is gone.
pub async fn kill_found(found: &FoundQemu, qemu: &QemuIdentity, timeout: Duration) -> bool {
    let Ok(pidfd) = pidfd_open(found.pid) else {
        return true; // already gone
    };
    let still_ours = std::fs::read(format!("/proc/{}/cmdline", found.pid))
        .ok()
        .and_then(|c| run_dir_name(&c, found.run_dir.path().parent()?))
        .is_some_and(|n| n == found.name)
        && qemu.matches(found.pid)
        && start_time(found.pid) == Some(found.started);
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

    /// Spawns `sh` with a `-pidfile` under `run` in its command line (as `uid` if given),
    /// waiting on a pipe we hold; returns once its command line shows it.
    async fn fake_qemu(run: &Path, uid: Option<u32>) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(run).unwrap();
        // `sh -c` keeps its extra arguments in its command line; `read` is a builtin, so no
        // forked child shows the same command line.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "read x", "sh", "-pidfile"])
            .arg(run.join("qemu.pid"))
            .stdin(std::process::Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid);
        }
        let child = cmd.spawn().unwrap();
        // The new command line shows a moment after `spawn` returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let shows = || {
            std::fs::read(format!("/proc/{}/cmdline", child.id()))
                .is_ok_and(|c| c.windows(8).any(|w| w == b"-pidfile"))
        };
        while !shows() {
            assert!(std::time::Instant::now() < deadline, "sh never exec'd");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child
    }

    fn sh() -> QemuIdentity {
        QemuIdentity::of(Path::new("/bin/sh")).unwrap()
    }

    /// A process started with a `-pidfile` under a run root (and no pid file written) is
    /// found by its command line and killed; others are not.
    #[tokio::test]
    async fn finds_and_kills_a_process_without_a_pidfile() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("vm-1");
        let mut child = fake_qemu(&run, None).await;
        let pid = child.id() as i32;
        let found = find_qemus(root.path(), &sh());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].pid, found[0].name.as_str(), &found[0].run_dir),
            (pid, "vm-1", &RunDir::new(&run))
        );
        assert!(!run.join("qemu.pid").exists());
        assert!(kill_found(&found[0], &sh(), Duration::from_secs(10)).await);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(find_qemus(root.path(), &sh()).is_empty());
    }

    /// A forger's command line names a VM's run directory, but the process runs another
    /// binary, or as another user: it is not found, and not killed when asked to.
    #[tokio::test]
    async fn a_forged_command_line_is_neither_found_nor_killed() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("vm-1");
        let mut child = fake_qemu(&run, None).await;
        let other_binary = QemuIdentity::of(&std::env::current_exe().unwrap()).unwrap();
        assert!(find_qemus(root.path(), &other_binary).is_empty());
        let found = find_qemus(root.path(), &sh());
        assert_eq!(found.len(), 1);
        assert!(kill_found(&found[0], &other_binary, Duration::from_secs(1)).await);
        assert_eq!(child.try_wait().unwrap(), None, "killed a process not ours");
        child.kill().unwrap();
        child.wait().unwrap();

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped the other-user case: it needs root to run a process as nobody");
            return;
        }
        let mut nobody = fake_qemu(&run, Some(65534)).await;
        assert!(find_qemus(root.path(), &sh()).is_empty());
        nobody.kill().unwrap();
        nobody.wait().unwrap();
    }

    /// A process's start time orders it where a wrapped pid would not.
    #[test]
    fn start_time_reads_field_22() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(t > 0);
        assert_eq!(start_time(me), Some(t));
    }
}
