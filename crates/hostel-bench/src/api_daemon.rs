//! The daemon `bench-api` measures: started in a throw-away state directory, and torn down
//! with every VM it ran even when the benchmark fails or is interrupted.
//!
//! Tear-down matters more here than anywhere else: the daemon deliberately leaves its QEMU
//! processes running when it exits (they live in their own sessions so a daemon upgrade never
//! touches a guest), so a benchmark that only killed the daemon would leave up to twenty VMs
//! burning the shared host's two cores.

use anyhow::{bail, Context, Result};
use hostel_api::Client;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A daemon that is not listening after this long is broken, not slow.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the daemon gets to exit on SIGTERM before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// One running `hostel daemon` owned by the benchmark.
pub struct Daemon {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, or `https://` from [`Daemon::spawn_https`].
    pub url: String,
    /// The certificate's SHA-256 fingerprint the daemon printed (HTTPS only).
    pub fingerprint: Option<String>,
    /// The operator token's secret.
    pub operator: String,
    /// Everything the benchmark writes: `state/` (the daemon's), `runs/` (`hostel run`'s
    /// run dirs) and `daemon.log`. Removed at the end.
    root: tempfile::TempDir,
}

impl Daemon {
    /// Starts `hostel daemon` on a port the kernel picks (`127.0.0.1:0`; the daemon prints
    /// the address it bound), so two benchmarks or a developer's `make run` never collide.
    pub fn spawn(hostel: &Path, guest: &Path) -> Result<Self> {
        Self::spawn_with(hostel, Some(guest), "hostel-bench-api-")
    }

    /// The same with the busybox guest assets optional (OS images need none) and the
    /// temporary directory named after the benchmark.
    pub fn spawn_with(hostel: &Path, guest: Option<&Path>, prefix: &str) -> Result<Self> {
        Self::spawn_listener(hostel, guest, prefix, false)
    }

    /// A daemon serving HTTPS with its self-signed certificate (the others serve the
    /// development loopback plain HTTP: they measure what is behind the listener).
    pub fn spawn_https(hostel: &Path, guest: Option<&Path>, prefix: &str) -> Result<Self> {
        Self::spawn_listener(hostel, guest, prefix, true)
    }

    fn spawn_listener(
        hostel: &Path,
        guest: Option<&Path>,
        prefix: &str,
        https: bool,
    ) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating the benchmark's temporary directory")?;
        let state = root.path().join("state");
        std::fs::create_dir_all(root.path().join("runs"))?;
        let log = std::fs::File::create(root.path().join("daemon.log"))?;
        let mut cmd = Command::new(hostel);
        cmd.arg("daemon")
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0"]);
        if !https {
            cmd.arg("--insecure-http-loopback");
        }
        if let Some(guest) = guest {
            let guest = std::fs::canonicalize(guest)
                .with_context(|| format!("guest directory {}", guest.display()))?;
            cmd.arg("--guest-dir").arg(guest);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} daemon", hostel.display()))?;
        register(root.path(), Some(child.id() as i32));

        let stdout = child.stdout.take().context("daemon stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the first line, so the daemon never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut me = Daemon {
            child: Some(child),
            url: String::new(),
            fingerprint: None,
            operator: String::new(),
            root,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(fp) = line.strip_prefix("certificate SHA-256 fingerprint: ") {
                        me.fingerprint = Some(fp.trim().to_owned());
                    }
                    if let Some(url) = listening_url(&line) {
                        if !https {
                            break url;
                        }
                        me.url = url;
                    }
                    if https && me.fingerprint.is_some() && !me.url.is_empty() {
                        break me.url.clone();
                    }
                }
                Err(_) => bail!(
                    "the daemon did not report listening within {} s; its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    me.log_tail(30)
                ),
            }
        };
        me.url = url;
        me.operator = std::fs::read_to_string(state.join("operator.token"))
            .context("reading operator.token")?
            .trim()
            .to_owned();
        Ok(me)
    }

    /// The operator's client; of an HTTPS daemon, pinning its certificate.
    pub fn operator_client(&self) -> Client {
        let token = Some(self.operator.clone());
        let pin = self
            .fingerprint
            .as_deref()
            .and_then(|fp| hostel_api::tls::Fingerprint::parse(fp).ok());
        match pin {
            Some(fp) => Client::with_trust(
                self.url.clone(),
                token.clone(),
                hostel_api::tls::Trust::Pinned(fp),
            )
            .unwrap_or_else(|_| Client::new(self.url.clone(), token)),
            None => Client::new(self.url.clone(), token),
        }
    }

    /// QEMU's console log of a VM, which the daemon's console follow re-reads: watching it
    /// directly tells when the guest wrote a line, independently of the API.
    pub fn console_log(&self, vm_id: &str) -> PathBuf {
        self.state_dir().join("run").join(vm_id).join("console.log")
    }

    /// The daemon's state directory (`--state-dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    /// A fresh directory for one `hostel run` (its sockets, pid file and data disk), inside
    /// the tree the stray-QEMU sweep covers.
    pub fn run_dir(&self, label: &str) -> Result<PathBuf> {
        let d = self.root.path().join("runs").join(label);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.root.path().join("daemon.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Shuts the daemon down once a measurement against it is over, before anything is
    /// reported (a VM or QEMU left behind is itself a finding). A failed measurement comes
    /// back with the daemon's last log lines printed, which usually say why; a successful one
    /// with what [`Daemon::shutdown`] found still running, for the benchmark to warn about.
    pub fn shutdown_after<T>(&mut self, outcome: Result<T>) -> Result<(T, Result<Vec<i32>>)> {
        let strays = self.shutdown();
        match outcome {
            Ok(measured) => Ok((measured, strays)),
            Err(e) => {
                eprintln!("daemon log tail:\n{}", self.log_tail(20));
                Err(e)
            }
        }
    }

    /// Deletes every VM of every tenant through the API (which stops their QEMU), stops the
    /// daemon, then kills any QEMU still running from this state directory. Returns what had
    /// to be killed by hand: anything there means the API's delete left a VM running.
    pub fn shutdown(&mut self) -> Result<Vec<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(Vec::new());
        };
        let deleted = delete_all_vms(&self.operator_client());
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + EXIT_GRACE;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let strays = kill_stray_qemu(self.root.path());
        kill_switch(self.root.path());
        register(self.root.path(), None);
        deleted.map(|()| strays)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        match self.shutdown() {
            Ok(strays) if !strays.is_empty() => {
                eprintln!("killed QEMU left running after delete: pids {strays:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("tearing down the daemon: {e:#}"),
        }
    }
}

/// The URL in `hostel daemon listening on http(s)://ADDR and SOCKET`.
fn listening_url(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let url = rest.split_whitespace().next()?;
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_owned())
}

fn delete_all_vms(op: &Client) -> Result<()> {
    let mut first_err = None;
    for t in op.list_tenants()? {
        let vms = op.vms(Some(&t.name));
        for vm in vms.list()? {
            if let Err(e) = vms.delete(&vm.name) {
                first_err.get_or_insert(anyhow::anyhow!("deleting {}/{}: {e}", t.name, vm.name));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// SIGKILLs every QEMU whose pid file lies under `root`, checking the pid really is that
/// QEMU (its command line names the pid file) so a recycled pid is never hit. Returns the
/// pids it killed.
pub fn kill_stray_qemu(root: &Path) -> Vec<i32> {
    let mut pidfiles = Vec::new();
    find_named(root, "qemu.pid", 4, &mut pidfiles);
    let mut killed = Vec::new();
    for pf in pidfiles {
        let Some(pid) = std::fs::read_to_string(&pf)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = pf.display().to_string();
        if !String::from_utf8_lossy(&cmdline).contains(&needle) {
            continue;
        }
        // SAFETY: kill(2) on a QEMU this benchmark's daemon or `hostel run` started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        killed.push(pid);
    }
    // Wait (bounded) until they are gone, so the next measurement has the host to itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Stops the switch the daemon started for its networks: like QEMU it runs in a session of
/// its own so that it outlives daemon restarts, so stopping the daemon leaves it running. It
/// is found by its command line, which names the control socket under `root`.
pub fn kill_switch(root: &Path) -> Vec<i32> {
    let needle = root.join("state/switch/control.sock").display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_switch = args.get(1).is_some_and(|a| *a == b"switch");
        if is_switch && String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill(2) on the switch this benchmark's daemon started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            pids.push(pid);
        }
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        if Instant::now() > deadline {
            for &p in &pids {
                // SAFETY: as above; it ignored SIGTERM.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pids
}

fn find_named(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => find_named(&p, name, depth - 1, out),
            Ok(t) if t.is_file() && e.file_name() == name => out.push(p),
            _ => {}
        }
    }
}

/// What the signal watcher must clean up: the temporary root and the daemon's pid.
static LIVE: Mutex<Option<(PathBuf, Option<i32>)>> = Mutex::new(None);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn register(root: &Path, daemon: Option<i32>) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    *live = daemon.map(|pid| (root.to_owned(), Some(pid)));
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C and SIGTERM clean up instead of killing the benchmark mid-way: Drop does not
/// run on a signal, and the daemon (which also gets the terminal's SIGINT) exits leaving its
/// VMs running. A watcher thread sees the flag the handler sets, kills every QEMU under the
/// temporary root, stops the daemon and removes the directory, then exits.
pub fn install_interrupt_cleanup() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; handlers
    // reset to the default on exec, so children are unaffected.
    unsafe { libc::signal(libc::SIGINT, handler) };
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGTERM, handler) };
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_millis(50));
        if !INTERRUPTED.load(Ordering::SeqCst) {
            continue;
        }
        eprintln!("interrupted: stopping every VM and the daemon");
        let live = LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((root, daemon)) = live {
            if let Some(pid) = daemon {
                // SAFETY: kill(2) on the daemon we started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let killed = kill_stray_qemu(&root);
            eprintln!("killed {} QEMU process(es)", killed.len());
            kill_switch(&root);
            let _ = std::fs::remove_dir_all(&root);
        }
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_read_from_the_ready_line() {
        assert_eq!(
            listening_url(
                "hostel daemon listening on http://127.0.0.1:4567 and /tmp/x/hostel.sock"
            )
            .as_deref(),
            Some("http://127.0.0.1:4567")
        );
        assert_eq!(listening_url("something else"), None);
    }

    #[test]
    fn stray_sweep_ignores_pid_files_of_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("state/run/vm1");
        std::fs::create_dir_all(&run).unwrap();
        // Our own pid: alive, but its command line does not name the pid file.
        std::fs::write(run.join("qemu.pid"), std::process::id().to_string()).unwrap();
        assert!(kill_stray_qemu(dir.path()).is_empty());
        // No switch runs for a state directory that never had a daemon.
        assert!(kill_switch(dir.path()).is_empty());
    }
}
