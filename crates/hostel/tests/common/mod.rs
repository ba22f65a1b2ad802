//! What the daemon end-to-end tests share: a daemon to drive through the `hostel` CLI
//! (a [`TestDaemon`]), tenants with their tokens, process inspection, and boot slots.
//!
//! Each test spawns its own daemon on a fresh state directory and a free port, and on drop
//! kills it and every process whose command line names that directory (its VMs' QEMUs and its
//! switch), so a failing test leaves nothing running. Guests boot under TCG on a small
//! machine, so every test takes a slot from [`BOOT_SLOTS`] for each VM it lets boot: at most
//! two boot at once across one test binary.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod api;
pub mod internet;

use hostel_api::{Client, TenantView, VmView};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, workspace_root, LineWatcher, BOOT_TIMEOUT};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub const HOSTEL: &str = env!("CARGO_BIN_EXE_hostel");
/// "Noticed within a second or two", with a little slack for a loaded machine.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval for watching state change through the API (bounded by a deadline every time).
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Boot slots: at most two guests booting at once in this test binary.

const MAX_BOOTING: usize = 2;
static BOOT_SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// `n` boot slots, held until dropped. Taken all at once so two tests each wanting two slots
/// cannot each hold one and wait forever for the other.
pub struct BootSlots(usize);

pub fn boot_slots(n: usize) -> BootSlots {
    assert!(n <= MAX_BOOTING);
    let (lock, cv) = &BOOT_SLOTS;
    let mut used = cv
        .wait_while(lock.lock().unwrap_or_else(|e| e.into_inner()), |used| {
            *used + n > MAX_BOOTING
        })
        .unwrap_or_else(|e| e.into_inner());
    *used += n;
    BootSlots(n)
}

impl Drop for BootSlots {
    fn drop(&mut self) {
        let (lock, cv) = &BOOT_SLOTS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= self.0;
        cv.notify_all();
    }
}

// ---------------------------------------------------------------------------------------
// Running the CLI.

/// One finished `hostel` invocation.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// The stdout of a successful run, parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        assert!(self.ok(), "command failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout))
    }

    /// Asserts the command was refused with `needle` in its error and returns the stderr.
    pub fn refused(&self, needle: &str) -> &str {
        assert!(!self.ok(), "expected a refusal, got success: {self:?}");
        assert!(
            self.stderr.starts_with("hostel: error: "),
            "error not in the documented form: {self:?}"
        );
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in the error: {self:?}"
        );
        &self.stderr
    }
}

/// A `hostel` command with no ambient configuration: no HOSTEL_* variables from the
/// environment running the tests, and a config file path that does not exist.
pub fn hostel_cmd() -> Command {
    let mut cmd = Command::new(HOSTEL);
    cmd.env_remove("HOSTEL_URL")
        .env_remove("HOSTEL_TOKEN")
        .env_remove("HOSTEL_REMOTE")
        .env_remove("HOSTEL_FINGERPRINT")
        .env_remove("HOSTEL_CA")
        .env("HOSTEL_CONFIG", "/nonexistent/hostel-config.toml")
        .stdin(Stdio::null());
    cmd
}

pub fn run(mut cmd: Command) -> Out {
    let out = cmd.output().expect("run hostel");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Processes.

/// `/proc/<pid>/stat`'s state and start time, or `None` when the process is gone. The start
/// time tells "the same process" from "a new process that got the same pid".
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), starttime field 22.
    Some((fields[0].chars().next()?, fields[19].parse().ok()?))
}

pub fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) with a pid we read from the daemon or /proc; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Calls `f` every [`POLL`] until it returns `Some`, panicking with `what` at the deadline.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------
// The daemon.

/// Starts a daemon if the guest assets are there (else the caller skips).
pub fn daemon_with_guests(tag: &str) -> Option<TestDaemon> {
    let assets = guest_assets()?;
    let dir = assets.vmlinux.parent().expect("guest dir").to_path_buf();
    Some(TestDaemon::start(Path::new(HOSTEL), &dir, tag))
}

/// Starts a daemon for tests that never boot a guest.
pub fn daemon_without_guests(tag: &str) -> TestDaemon {
    let dir = std::env::var_os("HOSTEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"));
    TestDaemon::start(Path::new(HOSTEL), &dir, tag)
}

/// Driving a [`TestDaemon`] through the CLI.
pub trait DaemonCli {
    /// `hostel --url <daemon> ARGS` with `token` in HOSTEL_TOKEN.
    fn cli(&self, token: &str, args: &[&str]) -> Out;
    /// [`DaemonCli::cli`] as the operator.
    fn op(&self, args: &[&str]) -> Out;
    fn client(&self, token: &str) -> Client;
    /// Creates a tenant (with quota flags) and a token for it.
    fn tenant(&self, name: &str, quota: &[&str]) -> Tenant;
}

impl DaemonCli for TestDaemon {
    fn cli(&self, token: &str, args: &[&str]) -> Out {
        cli_at(&self.url, token, args)
    }

    fn op(&self, args: &[&str]) -> Out {
        self.cli(&self.operator_token, args)
    }

    fn client(&self, token: &str) -> Client {
        Client::new(self.url.clone(), Some(token.to_string()))
    }

    fn tenant(&self, name: &str, quota: &[&str]) -> Tenant {
        let mut args = vec!["tenant", "create", name];
        args.extend_from_slice(quota);
        let out = self.op(&args);
        assert!(out.ok(), "tenant create {name}: {out:?}");
        let out = self.op(&["token", "create", "--tenant", name, "--name", "e2e"]);
        assert!(out.ok(), "token create: {out:?}");
        let token = out.stdout.trim().to_string();
        assert!(
            !token.is_empty() && !token.contains('\n'),
            "token create should print only the secret: {out:?}"
        );
        Tenant {
            url: self.url.clone(),
            operator: self.operator_token.clone(),
            name: name.to_string(),
            token,
        }
    }
}

pub fn cli_at(url: &str, token: &str, args: &[&str]) -> Out {
    let mut cmd = hostel_cmd();
    cmd.args(["--url", url])
        .env("HOSTEL_TOKEN", token)
        .args(args);
    run(cmd)
}

/// A tenant and its token. Holds the daemon's address rather than the daemon, so a test can
/// kill and restart the daemon (same address) while its tenants carry on.
pub struct Tenant {
    url: String,
    operator: String,
    pub name: String,
    pub token: String,
}

impl Tenant {
    pub fn cli(&self, args: &[&str]) -> Out {
        cli_at(&self.url, &self.token, args)
    }

    pub fn vms(&self) -> Vec<VmView> {
        self.cli(&["vm", "list", "-o", "json"]).json()
    }

    pub fn show(&self, vm: &str) -> VmView {
        self.cli(&["vm", "show", vm, "-o", "json"]).json()
    }

    pub fn create(&self, vm: &str, extra: &[&str]) -> VmView {
        let mut args = vec!["vm", "create", vm, "-o", "json"];
        args.extend_from_slice(extra);
        self.cli(&args).json()
    }

    /// Waits until `vm` is running with a QEMU pid.
    pub fn wait_running(&self, vm: &str, timeout: Duration) -> VmView {
        poll(&format!("{vm} running"), timeout, || {
            let v = self.show(vm);
            (v.state == "running" && v.pid.is_some()).then_some(v)
        })
    }

    /// Follows `vm console --follow` until the guest's `boot`-th HOSTEL-READY (1 for its first
    /// boot): the console log spans boots, so an earlier boot's line proves nothing.
    pub fn wait_ready(&self, vm: &str, boot: usize) {
        let mut cmd = hostel_cmd();
        cmd.args(["--url", &self.url, "vm", "console", vm, "--follow"])
            .env("HOSTEL_TOKEN", &self.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard(cmd.spawn().expect("hostel vm console"));
        let mut lines = LineWatcher::new(child.0.stdout.take().expect("stdout"));
        let deadline = Instant::now() + BOOT_TIMEOUT;
        for n in 1..=boot {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                lines.wait_for("HOSTEL-READY", left).is_some(),
                "{}/{vm} printed HOSTEL-READY {} times, not {boot}:\n{}",
                self.name,
                n - 1,
                lines.transcript()
            );
        }
    }

    pub fn tenant_view(&self) -> TenantView {
        let all: Vec<TenantView> =
            cli_at(&self.url, &self.operator, &["tenant", "list", "-o", "json"]).json();
        all.into_iter()
            .find(|t| t.name == self.name)
            .expect("tenant listed")
    }
}

pub fn names(vms: &[VmView]) -> BTreeSet<String> {
    vms.iter().map(|v| v.name.clone()).collect()
}
