//! End to end through the `hostel` CLI against a real `hostel daemon`: tenants and their
//! isolation, quotas, spec errors, the console, a `kill -9` of the daemon under running VMs,
//! racing clients, and a guest's QEMU dying behind the daemon's back.
//!
//! Each test spawns its own daemon on a fresh state directory and a free port, and on drop
//! kills it and every process whose command line names that directory (its VMs' QEMUs and its
//! switch), so a failing test leaves nothing running. Guests boot under TCG on a small
//! machine, so every test takes a slot from [`BOOT_SLOTS`] for each VM it lets boot: at most
//! two boot at once across the whole test binary.

use hostel_api::{Client, ClientError, CreateVm, Size, TenantView, VmView};
use hostel_testkit::{guest_assets, workspace_root, LineWatcher, BOOT_TIMEOUT};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const HOSTEL: &str = env!("CARGO_BIN_EXE_hostel");
/// How long the daemon may take to start listening (it replays its state first).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// "Noticed within a second or two", with a little slack for a loaded machine.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval for watching state change through the API (bounded by a deadline every time).
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Boot slots: at most two guests booting at once in this test binary.

const MAX_BOOTING: usize = 2;
static BOOT_SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// `n` boot slots, held until dropped. Taken all at once so two tests each wanting two slots
/// cannot each hold one and wait forever for the other.
struct BootSlots(usize);

fn boot_slots(n: usize) -> BootSlots {
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
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == 0
    }

    /// The stdout of a successful run, parsed as JSON.
    fn json<T: DeserializeOwned>(&self) -> T {
        assert!(self.ok(), "command failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout))
    }

    /// Asserts the command was refused with `needle` in its error and returns the stderr.
    fn refused(&self, needle: &str) -> &str {
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
fn hostel_cmd() -> Command {
    let mut cmd = Command::new(HOSTEL);
    cmd.env_remove("HOSTEL_URL")
        .env_remove("HOSTEL_TOKEN")
        .env("HOSTEL_CONFIG", "/nonexistent/hostel-config.toml")
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Out {
    let out = cmd.output().expect("run hostel");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child process killed (and reaped) on drop.
struct ChildGuard(Child);

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
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), starttime field 22.
    Some((fields[0].chars().next()?, fields[19].parse().ok()?))
}

fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

fn cmdline(pid: &str) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes (other than this one) whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && cmdline(&pid.to_string()).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) with a pid we read from the daemon or /proc; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Calls `f` every [`POLL`] until it returns `Some`, panicking with `what` at the deadline.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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

/// A `hostel daemon` on its own state directory and port; killed with everything it started
/// on drop.
struct Daemon {
    state: tempfile::TempDir,
    listen: String,
    url: String,
    guest_dir: PathBuf,
    /// Behind a lock so tenants can keep borrowing the daemon while it is killed and
    /// restarted, and racing threads can share it.
    process: Mutex<Process>,
    operator: String,
}

#[derive(Default)]
struct Process {
    child: Option<Child>,
    /// Keeps draining the daemon's stdout so it never writes into a closed pipe.
    stdout: Option<LineWatcher>,
}

impl Daemon {
    /// Starts a daemon if the guest assets are there (else the caller skips).
    fn with_guests() -> Option<Daemon> {
        let assets = guest_assets()?;
        let dir = assets.vmlinux.parent().expect("guest dir").to_path_buf();
        Some(Daemon::start(dir))
    }

    /// Starts a daemon for tests that never boot a guest.
    fn without_guests() -> Daemon {
        let dir = std::env::var_os("HOSTEL_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/guest"));
        Daemon::start(dir)
    }

    fn start(guest_dir: PathBuf) -> Daemon {
        let state = tempfile::Builder::new()
            .prefix("hostel-e2e-")
            .tempdir()
            .expect("state dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut d = Daemon {
            url: format!("http://{listen}"),
            listen,
            state,
            guest_dir,
            process: Mutex::default(),
            operator: String::new(),
        };
        d.spawn();
        d.operator = std::fs::read_to_string(d.state.path().join("operator.token"))
            .expect("operator.token")
            .trim()
            .to_string();
        assert!(!d.operator.is_empty(), "empty operator token");
        d
    }

    fn log_path(&self) -> PathBuf {
        self.state.path().join("daemon-stderr.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// (Re)starts the daemon on the same state directory and port and waits for its
    /// "listening" line.
    fn spawn(&self) {
        let mut process = self.process.lock().unwrap();
        assert!(process.child.is_none(), "daemon already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let mut child = Command::new(HOSTEL)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--listen", &self.listen])
            .arg("--guest-dir")
            .arg(&self.guest_dir)
            .env_remove("HOSTEL_URL")
            .env_remove("HOSTEL_TOKEN")
            .env("HOSTEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn hostel daemon");
        let mut lines = LineWatcher::new(child.stdout.take().expect("stdout"));
        process.child = Some(child);
        let ready = lines.wait_for("hostel daemon listening on", START_TIMEOUT);
        process.stdout = Some(lines);
        assert!(
            ready.as_deref().is_some_and(|l| l.contains(&self.url)),
            "daemon did not start listening on {}: {ready:?}\n{}",
            self.url,
            self.log()
        );
    }

    /// `kill -9` of the daemon alone: its VMs are left to fend for themselves.
    fn kill9(&self) {
        let mut process = self.process.lock().unwrap();
        let mut child = process.child.take().expect("daemon running");
        sigkill(child.id());
        child.wait().expect("reap daemon");
        process.stdout = None;
    }

    /// `hostel --url <daemon> ARGS` with `token` in HOSTEL_TOKEN.
    fn cli(&self, token: &str, args: &[&str]) -> Out {
        let mut cmd = hostel_cmd();
        cmd.args(["--url", &self.url])
            .env("HOSTEL_TOKEN", token)
            .args(args);
        run(cmd)
    }

    fn op(&self, args: &[&str]) -> Out {
        self.cli(&self.operator, args)
    }

    fn client(&self, token: &str) -> Client {
        Client::new(self.url.clone(), Some(token.to_string()))
    }

    /// Creates a tenant (with quota flags) and a token for it.
    fn tenant(&self, name: &str, quota: &[&str]) -> Tenant<'_> {
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
            d: self,
            name: name.to_string(),
            token,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The daemon first, so it restarts nothing; then everything that names its state
        // directory: QEMUs (including ones adopted after a restart) and the switch.
        let process = self.process.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = process.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let needle = self.state.path().to_string_lossy().into_owned();
        for pid in pids_mentioning(&needle) {
            sigkill(pid);
        }
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.log());
        }
    }
}

/// A tenant and its token.
struct Tenant<'a> {
    d: &'a Daemon,
    name: String,
    token: String,
}

impl Tenant<'_> {
    fn cli(&self, args: &[&str]) -> Out {
        self.d.cli(&self.token, args)
    }

    fn vms(&self) -> Vec<VmView> {
        self.cli(&["vm", "list", "-o", "json"]).json()
    }

    fn show(&self, vm: &str) -> VmView {
        self.cli(&["vm", "show", vm, "-o", "json"]).json()
    }

    fn create(&self, vm: &str, extra: &[&str]) -> VmView {
        let mut args = vec!["vm", "create", vm, "-o", "json"];
        args.extend_from_slice(extra);
        self.cli(&args).json()
    }

    /// Waits until `vm` is running with a QEMU pid.
    fn wait_running(&self, vm: &str, timeout: Duration) -> VmView {
        poll(&format!("{vm} running"), timeout, || {
            let v = self.show(vm);
            (v.state == "running" && v.pid.is_some()).then_some(v)
        })
    }

    /// Follows `vm console --follow` until the guest's `boot`-th HOSTEL-READY (1 for its first
    /// boot): the console log spans boots, so an earlier boot's line proves nothing.
    fn wait_ready(&self, vm: &str, boot: usize) {
        let mut cmd = hostel_cmd();
        cmd.args(["--url", &self.d.url, "vm", "console", vm, "--follow"])
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

    fn tenant_view(&self) -> TenantView {
        let all: Vec<TenantView> = self.d.op(&["tenant", "list", "-o", "json"]).json();
        all.into_iter()
            .find(|t| t.name == self.name)
            .expect("tenant listed")
    }
}

fn names(vms: &[VmView]) -> BTreeSet<String> {
    vms.iter().map(|v| v.name.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// Tests.

/// Two tenants each boot a VM; neither can see, touch or guess the other's; quotas and bad
/// specs are refused with the server's reason and the field; the console shows the guest.
#[test]
fn tenants_are_isolated_and_refusals_name_the_reason() {
    let Some(d) = Daemon::with_guests() else {
        return;
    };

    // Endpoint and token from the config file when no flag or variable gives them, and a
    // flag beating the environment.
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join(".config/hostel/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!("url = \"{}\"\ntoken = \"{}\"\n", d.url, d.operator),
    )
    .unwrap();
    let mut cmd = hostel_cmd();
    cmd.env_remove("HOSTEL_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home.path())
        .args(["tenant", "list", "-o", "json"]);
    let listed: Vec<TenantView> = run(cmd).json();
    assert!(listed.is_empty());
    let mut cmd = hostel_cmd();
    cmd.env("HOSTEL_URL", "http://127.0.0.1:9")
        .env("HOSTEL_TOKEN", &d.operator)
        .args(["--url", &d.url, "image", "list"]);
    let out = run(cmd);
    assert!(out.ok() && out.stdout.contains("busybox"), "{out:?}");
    // No token: the server's refusal, not a crash.
    let mut cmd = hostel_cmd();
    cmd.args(["--url", &d.url, "tenant", "list"]);
    assert_ne!(run(cmd).code, 0);

    let a = d.tenant(
        "acme",
        &["--vcpus", "4", "--memory", "512M", "--max-vms", "2"],
    );
    let b = d.tenant("beta", &[]);

    // One guest per tenant, booting together; both named "web" (names are per tenant).
    {
        let _slots = boot_slots(2);
        let va = a.create("web", &["--memory", "128M"]);
        let vb = b.create("web", &["--memory", "128M"]);
        assert_eq!((va.tenant.as_str(), vb.tenant.as_str()), ("acme", "beta"));
        assert_ne!(va.id, vb.id);
        a.wait_ready("web", 1);
        b.wait_ready("web", 1);
    }
    let console = a.cli(&["vm", "console", "web"]);
    assert!(
        console.ok() && console.stdout.contains("HOSTEL-READY"),
        "{console:?}"
    );
    let b_secret = b.create("b-only", &["--no-start", "--memory", "64M"]);

    // Each sees only its own.
    let (a_vms, b_vms) = (a.vms(), b.vms());
    assert_eq!(names(&a_vms), BTreeSet::from(["web".to_string()]));
    assert_eq!(
        names(&b_vms),
        BTreeSet::from(["web".to_string(), "b-only".to_string()])
    );
    assert!(a_vms.iter().all(|v| v.tenant == "acme"));
    let b_ids: BTreeSet<_> = b_vms.iter().map(|v| v.id.clone()).collect();
    assert!(a_vms.iter().all(|v| !b_ids.contains(&v.id)));
    let table = a.cli(&["vm", "list"]);
    assert!(table.ok() && !table.stdout.contains("beta"), "{table:?}");
    for args in [
        &["vm", "show", "b-only"][..],
        &["vm", "start", "b-only"],
        &["vm", "delete", "b-only"],
        &["vm", "console", "b-only"],
        // A tenant naming another tenant gets nothing either.
        &["vm", "show", "b-only", "--tenant", "beta"],
        &["vm", "delete", "web", "--tenant", "beta"],
    ] {
        let out = a.cli(args);
        out.refused("not found");
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
    }
    assert_eq!(b.show("b-only").id, b_secret.id);
    assert_eq!(b.show("web").state, "running");
    // The operator sees any tenant's VMs when naming it.
    let via_op: Vec<VmView> = d
        .op(&["vm", "list", "--tenant", "beta", "-o", "json"])
        .json();
    assert_eq!(names(&via_op), names(&b_vms));
    // Tenants are not operators.
    a.cli(&["tenant", "list"]).refused("");
    a.cli(&["quota", "set", "acme", "--max-vms", "100"])
        .refused("");

    // Bad specs: refused with the field, exit status 2, nothing created.
    for (args, field) in [
        (&["--vcpus", "0"][..], "vcpus"),
        (&["--memory", "lots"], "memory"),
        (&["--image", "no-such-image"], "image"),
    ] {
        let mut full = vec!["vm", "create", "bad", "--no-start"];
        full.extend_from_slice(args);
        let out = a.cli(&full);
        out.refused(&format!("(field: {field})"));
        assert_eq!(out.code, 2, "{out:?}");
    }
    let out = a.cli(&["vm", "create", "web", "--no-start", "--memory", "64M"]);
    out.refused("(field: name)");
    assert_eq!(names(&a.vms()), BTreeSet::from(["web".to_string()]));

    // Quotas (acme: 4 vCPUs, 512M, 2 VMs; "web" holds 1 vCPU, 128M): the message names the
    // resource.
    let out = a.cli(&["vm", "create", "big", "--no-start", "--memory", "1G"]);
    assert!(
        out.refused("quota").to_lowercase().contains("memory"),
        "{out:?}"
    );
    let out = a.cli(&[
        "vm",
        "create",
        "wide",
        "--no-start",
        "--vcpus",
        "4",
        "--memory",
        "64M",
    ]);
    assert!(out.refused("quota").contains("vcpus"), "{out:?}");
    a.create("second", &["--no-start", "--memory", "64M"]);
    let out = a.cli(&["vm", "create", "third", "--no-start", "--memory", "64M"]);
    assert!(
        out.refused("quota").to_lowercase().contains("vms"),
        "{out:?}"
    );
    // Raising one quota field keeps the others.
    let raised: TenantView = d
        .op(&["quota", "set", "acme", "--max-vms", "3", "-o", "json"])
        .json();
    assert_eq!(
        (
            raised.quota.vms,
            raised.quota.vcpus,
            raised.quota.memory_mib
        ),
        (3, 4, 512)
    );
    a.create("third", &["--no-start", "--memory", "64M"]);
    let usage = a.tenant_view().usage;
    assert_eq!((usage.vms, usage.memory_mib), (3, 128 + 64 + 64));

    // Resize a stopped VM; stop the running one; delete.
    let resized: VmView = a
        .cli(&["vm", "resize", "second", "--vcpus", "2", "-o", "json"])
        .json();
    assert_eq!(resized.vcpus, 2);
    a.cli(&["vm", "resize", "second", "--memory", "lots"])
        .refused("(field: memory)");
    let web_pid = a.show("web").pid.expect("web pid");
    let stopped: VmView = a
        .cli(&["vm", "stop", "web", "--force", "-o", "json"])
        .json();
    assert_eq!(stopped.desired, "stopped");
    poll("web stopped", Duration::from_secs(30), || {
        let v = a.show("web");
        (v.state == "stopped" && v.pid.is_none() && !alive(web_pid)).then_some(())
    });
    let out = a.cli(&["vm", "delete", "third"]);
    assert!(out.ok(), "{out:?}");
    a.cli(&["vm", "show", "third"]).refused("not found");

    // The audit log saw it all, per tenant.
    let audit = d.op(&["audit", "--tenant", "acme", "--limit", "100"]);
    assert!(audit.ok(), "{audit:?}");
    assert!(audit.stdout.contains("acme"), "{audit:?}");
    let entries: Vec<hostel_api::AuditView> = d
        .op(&["audit", "--tenant", "acme", "--limit", "100", "-o", "json"])
        .json();
    assert!(
        entries
            .iter()
            .any(|e| e.action.contains("create") && e.target.contains("web")),
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| !matches!(e.tenant.as_deref(), Some(t) if t != "acme")),
        "{entries:#?}"
    );
}

/// `kill -9` of the daemon under running guests: they keep running, and the restarted
/// daemon shows everything as it was, with the same QEMU processes, and supervises them.
#[test]
fn daemon_kill9_and_restart_keeps_everything() {
    let Some(d) = Daemon::with_guests() else {
        return;
    };
    let a = d.tenant("alpha", &[]);
    let b = d.tenant("bravo", &[]);
    {
        let _slots = boot_slots(2);
        a.create("one", &["--memory", "128M"]);
        b.create("two", &["--memory", "128M", "--restart-policy", "never"]);
        a.wait_ready("one", 1);
        b.wait_ready("two", 1);
    }
    a.create("idle", &["--no-start", "--memory", "64M"]);

    let tenants_before: Vec<TenantView> = d.op(&["tenant", "list", "-o", "json"]).json();
    let (a_before, b_before) = (a.vms(), b.vms());
    let procs: Vec<(u32, u64)> = a_before
        .iter()
        .chain(&b_before)
        .filter_map(|v| v.pid)
        .map(|pid| (pid, proc_stat(pid).expect("QEMU alive").1))
        .collect();
    assert_eq!(procs.len(), 2, "{a_before:#?} {b_before:#?}");

    d.kill9();
    for (pid, start) in &procs {
        assert!(alive(*pid), "QEMU {pid} died with the daemon");
        assert_eq!(proc_stat(*pid).map(|s| s.1), Some(*start));
    }
    // While it is down the CLI says so.
    a.cli(&["vm", "list"]).refused("cannot reach");

    d.spawn();
    let tenants_after: Vec<TenantView> = d.op(&["tenant", "list", "-o", "json"]).json();
    let key = |ts: &[TenantView]| -> Vec<_> {
        ts.iter()
            .map(|t| (t.id.clone(), t.name.clone(), t.quota, t.usage))
            .collect()
    };
    assert_eq!(key(&tenants_after), key(&tenants_before));
    // Old tokens still work; every VM is as it was.
    let shape = |vms: &[VmView]| -> BTreeMap<String, String> {
        vms.iter()
            .map(|v| {
                (
                    v.id.clone(),
                    format!(
                        "{} {} {} {} {:?} {} {} {} {} {:?}",
                        v.name,
                        v.state,
                        v.desired,
                        v.restart_count,
                        v.pid,
                        v.vcpus,
                        v.memory_mib,
                        v.image,
                        v.restart_policy,
                        v.last_exit
                    ),
                )
            })
            .collect()
    };
    assert_eq!(shape(&a.vms()), shape(&a_before));
    assert_eq!(shape(&b.vms()), shape(&b_before));
    for (pid, start) in &procs {
        assert!(alive(*pid), "QEMU {pid} died across the restart");
        assert_eq!(
            proc_stat(*pid).map(|s| s.1),
            Some(*start),
            "QEMU {pid} replaced"
        );
    }
    let console = a.cli(&["vm", "console", "one"]);
    assert!(console.stdout.contains("HOSTEL-READY"), "{console:?}");

    // The new daemon supervises the guests it adopted: a kill behind its back is noticed...
    let two = b.show("two");
    let two_pid = two.pid.unwrap();
    sigkill(two_pid);
    let crashed = poll("adopted VM noticed dead", NOTICE_TIMEOUT, || {
        let v = b.show("two");
        (v.state == "crashed").then_some(v)
    });
    assert!(crashed.pid.is_none(), "{crashed:?}");
    assert!(crashed.last_exit.is_some(), "{crashed:?}");
    // ...and it can stop them.
    let one_pid = a.show("one").pid.unwrap();
    let out = a.cli(&["vm", "stop", "one", "--force"]);
    assert!(out.ok(), "{out:?}");
    poll("adopted VM stopped", Duration::from_secs(30), || {
        let v = a.show("one");
        (v.state == "stopped" && !alive(one_pid)).then_some(())
    });

    // Start, restart and stop on QEMUs the new daemon started itself.
    let _slot = boot_slots(1);
    let started: VmView = a.cli(&["vm", "start", "one", "-o", "json"]).json();
    assert_eq!(started.desired, "running");
    let first = a.wait_running("one", Duration::from_secs(30));
    assert_ne!(first.pid, Some(one_pid));
    a.wait_ready("one", 2);
    let out = a.cli(&["vm", "restart", "one"]);
    assert!(out.ok(), "{out:?}");
    let second = poll("one restarted", Duration::from_secs(60), || {
        let v = a.show("one");
        (v.state == "running" && v.pid.is_some() && v.pid != first.pid).then_some(v)
    });
    a.wait_ready("one", 3);
    // A booted guest powers off when asked: well inside the timeout, and it says so.
    let out = a.cli(&["vm", "stop", "one", "--timeout", "60", "-o", "json"]);
    let stopped: VmView = out.json();
    let pid = second.pid.unwrap();
    let stopped = poll("one stopped", Duration::from_secs(30), || {
        let v = if stopped.state == "stopped" {
            stopped.clone()
        } else {
            a.show("one")
        };
        (v.state == "stopped" && !alive(pid)).then_some(v)
    });
    assert_eq!(
        stopped.last_exit.as_deref(),
        Some("guest powered off"),
        "{stopped:?}"
    );
}

/// Twenty clients creating at once: exactly as many VMs exist as creates succeeded, the
/// quota holds, and a name raced by everyone is taken exactly once.
#[test]
fn concurrent_creates_leave_consistent_state() {
    let d = Daemon::without_guests();
    let t = d.tenant(
        "racers",
        &[
            "--vcpus",
            "100",
            "--memory",
            "100G",
            "--disk-gib",
            "1000",
            "--max-vms",
            "15",
        ],
    );

    // 20 CLI processes, distinct names, quota for 15.
    let d_ref = &d;
    let token = t.token.clone();
    let results: Vec<(String, Out)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let token = token.clone();
                s.spawn(move || {
                    let name = format!("vm-{i:02}");
                    let out = d_ref.cli(
                        &token,
                        &[
                            "vm",
                            "create",
                            &name,
                            "--no-start",
                            "--memory",
                            "64M",
                            "-o",
                            "json",
                        ],
                    );
                    (name, out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: BTreeSet<String> = results
        .iter()
        .filter(|(_, o)| o.ok())
        .map(|(n, _)| n.clone())
        .collect();
    for (_, out) in results.iter().filter(|(_, o)| !o.ok()) {
        out.refused("quota");
    }
    assert_eq!(ok.len(), 15, "{results:#?}");
    let listed = t.vms();
    assert_eq!(listed.len(), ok.len());
    assert_eq!(names(&listed), ok);
    assert_eq!(t.tenant_view().usage.vms, 15);

    // 20 API clients, one name, in a tenant with room for all of them.
    let u = d.tenant(
        "samename",
        &["--max-vms", "20", "--vcpus", "40", "--memory", "40G"],
    );
    let client = d.client(&u.token);
    let outcomes: Vec<Result<VmView, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let client = client.clone();
                s.spawn(move || {
                    client.vms(None).create(&CreateVm {
                        name: "contested".into(),
                        vcpus: Some(1),
                        memory: Some(Size::Text("64M".into())),
                        image: None,
                        disk_gib: None,
                        cmdline: None,
                        restart_policy: None,
                        start: Some(false),
                        networks: Vec::new(),
                        ..Default::default()
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{outcomes:#?}");
    for r in &outcomes {
        if let Err(e) = r {
            assert!(
                matches!(e, ClientError::Api { field: Some(f), .. } if f == "name"),
                "{e:?}"
            );
        }
    }
    let listed = u.vms();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(u.tenant_view().usage.vms, 1);
    // The first tenant is untouched by the second's race.
    assert_eq!(t.vms().len(), 15);
}

/// A guest's QEMU killed behind the daemon's back: noticed within a couple of seconds, and
/// restarted (new pid, restart_count 1) when the policy says so.
#[test]
fn killed_qemu_is_noticed_and_restarted_by_policy() {
    let Some(d) = Daemon::with_guests() else {
        return;
    };
    let t = d.tenant("crashy", &["--vcpus", "8", "--memory", "2G"]);
    for (vm, policy, restarts) in [
        ("stays-down", "never", false),
        ("comes-back", "always", true),
        ("on-failure", "on_failure", true),
    ] {
        let _slot = boot_slots(1);
        t.create(vm, &["--memory", "128M", "--restart-policy", policy]);
        let first = t.wait_running(vm, Duration::from_secs(30));
        assert_eq!(first.restart_policy, policy);
        let pid = first.pid.unwrap();
        sigkill(pid);

        let noticed = poll(&format!("{vm}: the kill noticed"), NOTICE_TIMEOUT, || {
            let v = t.show(vm);
            (v.state == "crashed" || v.restart_count > 0).then_some(v)
        });
        if restarts {
            let again = poll(&format!("{vm} restarted"), Duration::from_secs(30), || {
                let v = t.show(vm);
                (v.state == "running" && v.pid.is_some_and(|p| p != pid)).then_some(v)
            });
            assert_eq!(again.restart_count, 1, "{again:?}");
            assert!(alive(again.pid.unwrap()));
            // `last_exit` is why it last exited, restarted since or not: it must still say
            // what killed it.
            assert!(
                again.last_exit.as_deref().unwrap_or("").contains("SIGKILL"),
                "{vm} restarted, but last_exit lost the reason: {again:?}"
            );
        } else {
            assert!(
                noticed
                    .last_exit
                    .as_deref()
                    .unwrap_or("")
                    .contains("SIGKILL"),
                "{vm}: {noticed:?}"
            );
            assert_eq!(noticed.state, "crashed", "{noticed:?}");
            assert!(noticed.pid.is_none(), "{noticed:?}");
            assert_eq!(noticed.restart_count, 0);
        }
        // Done with this one: delete it and make sure its QEMU is gone.
        let pid_now = t.show(vm).pid;
        let out = t.cli(&["vm", "delete", vm]);
        assert!(out.ok(), "{out:?}");
        if let Some(p) = pid_now {
            poll(
                &format!("{vm}'s QEMU gone"),
                Duration::from_secs(30),
                || (!alive(p)).then_some(()),
            );
        }
    }
}
