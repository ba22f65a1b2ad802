//! The state directory: where everything the daemon keeps lives.
//!
//! `hostel.db` (SQLite, WAL) · `operator.token` (0600) · `daemon.lock` · `disks/<tenant>/<vm>/`
//! · `run/<vm>/` (QMP and console sockets, pid file, console log) · `switch/` (control socket,
//! `ports/<vm>-<nic>.sock`, log) · `hostel.sock` (API).

use hostel_state::{TenantId, VmId};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// Creates the state directory if needed and lays it out under its canonical path. The
    /// daemon finds its QEMUs by the paths in their command lines, so a daemon restarted with
    /// the directory spelled differently (relative, through a symlink) must still build the
    /// same paths.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let layout = Self::new(root);
        layout.create()?;
        Ok(Self::new(std::fs::canonicalize(root)?))
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn operator_token(&self) -> PathBuf {
        self.root.join("operator.token")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("hostel.sock")
    }
    /// The switch's control socket, log and port sockets.
    pub fn switch_dir(&self) -> PathBuf {
        self.root.join("switch")
    }
    /// The storage process's control socket, log and disk sockets.
    pub fn storage_dir(&self) -> PathBuf {
        self.root.join("storage")
    }
    pub fn vm_run_dir(&self, vm: &VmId) -> PathBuf {
        self.root.join("run").join(vm.to_string())
    }
    pub fn vm_disk_dir(&self, tenant: &TenantId, vm: &VmId) -> PathBuf {
        self.root
            .join("disks")
            .join(tenant.to_string())
            .join(vm.to_string())
    }
    /// A standby's disks (root overlay, empty seed) until a create takes it.
    pub fn standby_disk_dir(&self, vm: &VmId) -> PathBuf {
        self.root.join("standby").join(vm.to_string())
    }
    pub fn standby_root(&self) -> PathBuf {
        self.root.join("standby")
    }
    pub fn vm_root_disk(&self, tenant: &TenantId, vm: &VmId) -> PathBuf {
        self.vm_disk_dir(tenant, vm).join("disk0.raw")
    }

    pub fn create(&self) -> std::io::Result<()> {
        for d in [
            self.root.clone(),
            self.root.join("run"),
            self.root.join("disks"),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)?;
        }
        Ok(())
    }
}

/// How long a busy state-directory lock is retried at start-up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds an exclusive lock on the state directory for the daemon's lifetime: two daemons
/// on one directory would each adopt and supervise the same VMs.
pub struct DaemonLock {
    _file: std::fs::File,
}

impl DaemonLock {
    pub fn acquire(layout: &Layout) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(layout.lock_file())?;
        // A daemon killed while it was forking a QEMU leaves the lock with the child until
        // that child execs (the descriptor is close-on-exec): moments, not a live daemon. So
        // a busy lock is retried for a bounded time (as SQLite's busy timeout does) before
        // another daemon is assumed.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(err);
            }
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("another hostel daemon is using {}", layout.root().display()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Writes a secret file readable by its owner only, atomically (temp file + rename).
pub fn write_secret(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_the_state_dir_gives_one_root() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("state");
        let canonical = Layout::open(&real).unwrap().root().to_path_buf();
        assert!(canonical.is_absolute());
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        for spelling in [
            tmp.path().join("link"),
            tmp.path().join("state/../state/."),
            tmp.path().join("link/run/.."),
        ] {
            let layout = Layout::open(&spelling).unwrap();
            assert_eq!(layout.root(), canonical, "{}", spelling.display());
            let id = VmId::new_random();
            assert_eq!(
                layout.vm_run_dir(&id),
                canonical.join("run").join(id.to_string())
            );
        }
    }
}
