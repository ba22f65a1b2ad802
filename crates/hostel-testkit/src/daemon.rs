//! A real `hostel daemon` for one test: its own state directory and port, killed on drop
//! together with every QEMU and switch process it started.

use crate::LineWatcher;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub struct TestDaemon {
    pub child: Child,
    pub url: String,
    pub operator_token: String,
    /// `None` once handed back by [`TestDaemon::kill_daemon_only`].
    state_dir: Option<TempDir>,
    _stdout: LineWatcher,
}

impl TestDaemon {
    /// Starts a daemon with `hostel` (the binary under test) and waits until it listens.
    pub fn start(hostel: &Path, guest_dir: &Path, tag: &str) -> Self {
        let state_dir = tempfile::Builder::new()
            .prefix(&format!("hostel-test-{tag}-"))
            .tempdir()
            .expect("temp dir");
        Self::start_in(hostel, guest_dir, state_dir)
    }

    /// Starts (or restarts) a daemon on an existing state directory.
    pub fn start_in(hostel: &Path, guest_dir: &Path, state_dir: TempDir) -> Self {
        let mut child = Command::new(hostel)
            .arg("daemon")
            .arg("--state-dir")
            .arg(state_dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .arg("--guest-dir")
            .arg(guest_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn hostel daemon");
        let mut stdout = LineWatcher::new(child.stdout.take().expect("stdout"));
        let line = stdout
            .wait_for("listening on http://", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("daemon did not start: {}", stdout.transcript()));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("url")
            .to_string();
        let operator_token = std::fs::read_to_string(state_dir.path().join("operator.token"))
            .expect("operator token")
            .trim()
            .to_string();
        TestDaemon {
            child,
            url,
            operator_token,
            state_dir: Some(state_dir),
            _stdout: stdout,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.state_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// `kill -9` of the daemon alone: its VMs and switch keep running. Returns the state
    /// directory for [`TestDaemon::start_in`]; whoever holds it next cleans up.
    pub fn kill_daemon_only(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state_dir.take().expect("state dir")
    }
}

/// Processes (other than this one) whose command line contains every one of `markers`.
pub fn pids_mentioning(markers: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (pid != me && markers.iter().all(|m| cmd.contains(m))).then_some(pid)
        })
        .collect()
}

/// Kills every process whose command line mentions `marker` (VMs and the switch of a test).
pub fn kill_processes_mentioning(marker: &str) {
    for pid in pids_mentioning(&[marker]) {
        // SAFETY: signalling a process this test started (its command line names the
        // test's private state directory).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl TestDaemon {
    /// The daemon's switch process, if one runs (its control socket is in the state dir).
    pub fn switch_pid(&self) -> Option<i32> {
        let dir = self.state_path();
        pids_mentioning(&["switch", "--control", &dir.to_string_lossy()])
            .into_iter()
            .next()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.state_dir {
            kill_processes_mentioning(&dir.path().to_string_lossy());
        }
    }
}
