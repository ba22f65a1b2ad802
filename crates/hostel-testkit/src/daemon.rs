//! A real `hostel daemon` for one test: its own state directory and port, killed on drop
//! together with every QEMU and switch process it started.

use crate::LineWatcher;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long a daemon may take to start listening (it replays its state and re-adopts VMs
/// first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's stderr (at `info`), in its state directory: read by [`TestDaemon::log`] and
/// printed when a test fails, instead of interleaving every daemon's log with the test output.
const LOG_FILE: &str = "daemon-stderr.log";

pub struct TestDaemon {
    pub child: Child,
    pub url: String,
    pub operator_token: String,
    /// The certificate's SHA-256 fingerprint as the daemon printed it (`AB:CD:…`), for a
    /// daemon started with [`TestDaemon::start_https`]; `None` for plain HTTP.
    pub fingerprint: Option<String>,
    /// HTTPS, or loopback plain HTTP (`--insecure-http-loopback`).
    https: bool,
    /// `None` once handed back by [`TestDaemon::kill_daemon_only`].
    state_dir: Option<TempDir>,
    /// What [`TestDaemon::respawn`] starts again.
    hostel: PathBuf,
    guest_dir: PathBuf,
    /// Extra environment of the daemon (its options' `HOSTEL_*` variables), kept for
    /// [`TestDaemon::respawn`].
    env: Vec<(String, String)>,
    _stdout: LineWatcher,
}

impl TestDaemon {
    /// Starts a daemon with `hostel` (the binary under test) and waits until it listens.
    pub fn start(hostel: &Path, guest_dir: &Path, tag: &str) -> Self {
        Self::start_with_env(hostel, guest_dir, tag, &[])
    }

    /// [`TestDaemon::start`] with extra environment variables, e.g. `HOSTEL_STANDBY`.
    pub fn start_with_env(
        hostel: &Path,
        guest_dir: &Path,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let state_dir = tempfile::Builder::new()
            .prefix(&format!("hostel-test-{tag}-"))
            .tempdir()
            .expect("temp dir");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_in_with_env(hostel, guest_dir, state_dir, env)
    }

    /// Starts (or restarts) a daemon on an existing state directory.
    pub fn start_in(hostel: &Path, guest_dir: &Path, state_dir: TempDir) -> Self {
        Self::start_in_with_env(hostel, guest_dir, state_dir, Vec::new())
    }

    /// A daemon serving HTTPS with its self-signed certificate, as in production: clients
    /// pin [`TestDaemon::fingerprint`]. The other constructors give the development
    /// loopback plain HTTP (`--insecure-http-loopback`), which the tests of everything
    /// behind the listener use (raw HTTP requests, console attach).
    pub fn start_https(hostel: &Path, guest_dir: &Path, tag: &str) -> Self {
        Self::start_https_with_env(hostel, guest_dir, tag, &[])
    }

    /// [`TestDaemon::start_https`] with extra environment variables.
    pub fn start_https_with_env(
        hostel: &Path,
        guest_dir: &Path,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let state_dir = tempfile::Builder::new()
            .prefix(&format!("hostel-test-{tag}-"))
            .tempdir()
            .expect("temp dir");
        Self::start_in_with(hostel, guest_dir, state_dir, env, true)
    }

    fn start_in_with_env(
        hostel: &Path,
        guest_dir: &Path,
        state_dir: TempDir,
        env: Vec<(String, String)>,
    ) -> Self {
        Self::start_in_with(hostel, guest_dir, state_dir, env, false)
    }

    fn start_in_with(
        hostel: &Path,
        guest_dir: &Path,
        state_dir: TempDir,
        env: Vec<(String, String)>,
        https: bool,
    ) -> Self {
        let (mut child, url, fingerprint, stdout) = spawn(
            hostel,
            guest_dir,
            state_dir.path(),
            "127.0.0.1:0",
            &env,
            https,
        );
        let operator_token = std::fs::read_to_string(state_dir.path().join("operator.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if operator_token.is_empty() {
            kill_all(&mut child, state_dir.path());
            panic!(
                "the daemon in {} wrote no operator token",
                state_dir.path().display()
            );
        }
        TestDaemon {
            child,
            url,
            operator_token,
            fingerprint,
            https,
            state_dir: Some(state_dir),
            hostel: hostel.to_path_buf(),
            guest_dir: guest_dir.to_path_buf(),
            env,
            _stdout: stdout,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.state_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// What the daemon wrote to stderr so far (all its runs, for [`TestDaemon::respawn`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_path().join(LOG_FILE)).unwrap_or_default()
    }

    /// `kill -9` of the daemon alone: its VMs and switch keep running. Returns the state
    /// directory for [`TestDaemon::start_in`]; whoever holds it next cleans up.
    pub fn kill_daemon_only(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state_dir.take().expect("state dir")
    }

    /// `kill -9` of the daemon alone, keeping this handle (and the state directory) for
    /// [`TestDaemon::respawn`]: clients holding the URL and tokens reach the next daemon.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap the daemon");
    }

    /// Starts the daemon again after [`TestDaemon::kill9`], on the same state directory and
    /// the same address, so [`TestDaemon::url`] stays valid.
    /// [`TestDaemon::respawn`] with `env` in place of the daemon's extra environment (for
    /// this and later starts), e.g. a failpoint for one run.
    pub fn respawn_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.respawn();
    }

    pub fn respawn(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "daemon still running"
        );
        let listen = self
            .url
            .split_once("://")
            .map_or("", |(_, a)| a)
            .to_string();
        let state = self.state_path();
        let (child, url, fingerprint, stdout) = spawn(
            &self.hostel,
            &self.guest_dir,
            &state,
            &listen,
            &self.env,
            self.https,
        );
        assert_eq!(url, self.url, "restarted daemon listens elsewhere");
        self.child = child;
        self.fingerprint = fingerprint;
        self._stdout = stdout;
    }
}

/// Runs `hostel daemon` on `state` and waits for its "listening" line; returns the process,
/// its URL, its certificate's fingerprint (HTTPS) and the watcher that keeps draining its
/// stdout (so it never writes into a closed pipe).
fn spawn(
    hostel: &Path,
    guest_dir: &Path,
    state: &Path,
    listen: &str,
    env: &[(String, String)],
    https: bool,
) -> (Child, String, Option<String>, LineWatcher) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join(LOG_FILE))
        .expect("daemon log");
    let mut child = Command::new(hostel)
        .arg("daemon")
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", listen])
        .arg("--guest-dir")
        .arg(guest_dir)
        .args((!https).then_some("--insecure-http-loopback"))
        // The daemon has no use for a client's endpoint and token.
        .env_remove("HOSTEL_URL")
        .env_remove("HOSTEL_TOKEN")
        .env_remove("HOSTEL_STANDBY")
        .env("HOSTEL_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn hostel daemon");
    let mut stdout = LineWatcher::new(child.stdout.take().expect("stdout"));
    let scheme = if https { "https://" } else { "http://" };
    let started = (|| {
        let line = stdout.wait_for(&format!("listening on {scheme}"), START_TIMEOUT)?;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with(scheme))?
            .to_string();
        let fingerprint = if https {
            let line = stdout.wait_for("certificate SHA-256 fingerprint: ", START_TIMEOUT)?;
            Some(line.rsplit(' ').next().unwrap_or_default().to_string())
        } else {
            None
        };
        Some((url, fingerprint))
    })();
    let Some((url, fingerprint)) = started else {
        // No harness owns these processes yet: a failed start must not leave the daemon,
        // or the QEMUs and the switch it adopted or started, running after the test.
        kill_all(&mut child, state);
        let log = std::fs::read_to_string(state.join(LOG_FILE)).unwrap_or_default();
        panic!(
            "daemon did not start: {}\n--- daemon stderr ---\n{log}",
            stdout.transcript()
        )
    };
    (child, url, fingerprint, stdout)
}

/// Kills the daemon, then every process of its state directory (QEMUs, the switch).
fn kill_all(daemon: &mut Child, state: &Path) {
    let _ = daemon.kill();
    let _ = daemon.wait();
    kill_processes_mentioning(&state.to_string_lossy());
    remove_vpss(state);
}

/// Removes the daemon's VPSs (containers, cgroups, mounts, namespaces): like QEMUs they
/// outlive the daemon on purpose, and runc's state is in the directory about to go.
fn remove_vpss(state: &Path) {
    let Ok(dirs) = std::fs::read_dir(state.join("vps")) else {
        return;
    };
    let runc = hostel_vps::runc::Runc::new(state.join("runc"));
    for d in dirs.flatten() {
        let id = d.file_name().to_string_lossy().into_owned();
        let paths = hostel_vps::VpsPaths::new(d.path());
        if let Err(e) = hostel_vps::vps::destroy(&runc, &id, &paths, None) {
            eprintln!("removing VPS {id} of a test daemon: {e}");
        }
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
    // A process may fork between a scan and its kill (a daemon starting a QEMU, `setsid`
    // forking before it execs): the child is not in that scan. Scan again until one finds
    // nothing, within a bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_mentioning(&[marker]);
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: signalling a process this test started (its command line names the
            // test's private state directory).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::yield_now();
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

impl TestDaemon {
    /// The daemon's storage process, if one runs (its control socket is in the state dir).
    pub fn storage_pid(&self) -> Option<i32> {
        let dir = self.state_path();
        pids_mentioning(&["storage-backend", "--control", &dir.to_string_lossy()])
            .into_iter()
            .next()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // The daemon first, so it restarts nothing; then everything that names its state
        // directory: QEMUs (including ones adopted after a restart) and the switch.
        match &self.state_dir {
            Some(dir) => kill_all(&mut self.child, dir.path()),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A "daemon" that starts a child naming its state directory (as a QEMU would) and
    /// exits without listening: the failed start must leave no process of that directory.
    #[test]
    fn a_failed_start_kills_every_process_of_its_state_dir() {
        let tools = tempfile::tempdir().unwrap();
        let fake = tools.path().join("hostel");
        std::fs::write(
            &fake,
            "#!/bin/sh\n# argv: daemon --state-dir DIR ...\n\
             setsid sh -c 'while :; do sleep 1; done' \"$3/run/x/qemu.pid\" \
               </dev/null >/dev/null 2>&1 &\n\
             while ! grep -qs qemu.pid /proc/$!/cmdline; do :; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = tempfile::Builder::new()
            .prefix("hostel-testkit-fail-")
            .tempdir()
            .unwrap();
        let marker = state.path().to_string_lossy().to_string();
        let start = std::panic::catch_unwind(|| {
            spawn(&fake, tools.path(), state.path(), "127.0.0.1:0", &[], false)
        });
        assert!(
            start.is_err(),
            "a daemon that never listens is a failed start"
        );
        // The fake's child was running (with its command line) before the fake exited; the
        // harness kills it before `spawn` panics, so at most its reaping is left to wait for.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pids_mentioning(&["qemu.pid", &marker]).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "processes of the state directory survived a failed start"
            );
            std::thread::yield_now();
        }
    }
}
