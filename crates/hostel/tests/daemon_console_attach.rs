//! `hostel vm console NAME --attach` against a real daemon and guest: typing into the serial
//! console reaches the guest's shell, Ctrl-] detaches and leaves the VM running, a second
//! client is refused while one is attached, and other tenants cannot even find the VM.

use hostel_api::{Client, CreateTenant, CreateToken, CreateVm, Size};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, LineWatcher, BOOT_TIMEOUT};
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOSTEL: &str = env!("CARGO_BIN_EXE_hostel");
/// How long an answer from the guest's shell may take on a loaded TCG machine.
const SHELL_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant and a client holding its token.
fn tenant(d: &TestDaemon, name: &str) -> (Client, String) {
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    op.create_tenant(&CreateTenant {
        name: name.into(),
        quota: None,
    })
    .unwrap();
    let tok = op.create_token(name, &CreateToken::default()).unwrap();
    (Client::new(&d.url, Some(tok.secret.clone())), tok.secret)
}

fn vm(name: &str, start: bool) -> CreateVm {
    CreateVm {
        name: name.into(),
        image: Some("busybox".into()),
        memory: Some(Size::Mib(128)),
        start: Some(start),
        ..Default::default()
    }
}

fn console_cmd(d: &TestDaemon, token: &str, vm: &str) -> Command {
    let mut cmd = Command::new(HOSTEL);
    cmd.args(["--url", &d.url, "--token", token])
        .args(["vm", "console", vm, "--attach"])
        .env("HOSTEL_CONFIG", "/nonexistent");
    cmd
}

/// One attach run to completion with stdin at EOF (which detaches at once if it attached).
fn attach_once(d: &TestDaemon, token: &str, vm: &str) -> Output {
    console_cmd(d, token, vm)
        .stdin(Stdio::null())
        .output()
        .expect("run hostel vm console --attach")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An attached `hostel vm console --attach`, killed on drop if the test fails midway.
struct Attached {
    child: Child,
    stdin: ChildStdin,
    stdout: LineWatcher,
    stderr: LineWatcher,
}

impl Attached {
    fn spawn(d: &TestDaemon, token: &str, vm: &str) -> Self {
        let mut child = console_cmd(d, token, vm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hostel vm console --attach");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = LineWatcher::new(child.stdout.take().expect("stdout"));
        let stderr = LineWatcher::new(child.stderr.take().expect("stderr"));
        Attached {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).expect("write to attach stdin");
        self.stdin.flush().expect("flush attach stdin");
    }

    /// Waits (bounded) for the process to exit; its status code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn attach_types_into_the_guest_and_detaches_with_ctrl_bracket() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(HOSTEL), guest_dir, "attach");
    let (acme, acme_token) = tenant(&d, "acme");
    let (_umbrella, umbrella_token) = tenant(&d, "umbrella");

    // A stopped VM has no console to attach to.
    acme.vms(None).create(&vm("idle", false)).unwrap();
    let out = attach_once(&d, &acme_token, "idle");
    assert!(!out.status.success(), "attached to a stopped VM: {out:?}");
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));

    acme.vms(None).create(&vm("con", true)).unwrap();
    let mut log = LineWatcher::new(acme.vms(None).console_follow("con").unwrap());
    assert!(
        log.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some(),
        "guest did not boot: {}",
        log.transcript()
    );

    // Another tenant cannot even see it.
    let out = attach_once(&d, &umbrella_token, "con");
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    let mut session = Attached::spawn(&d, &acme_token, "con");
    assert!(
        session
            .stderr
            .wait_for("Ctrl-] detaches", SHELL_TIMEOUT)
            .is_some(),
        "no attach hint: {}",
        session.stderr.transcript()
    );

    // QEMU serves one console client: a second one is refused while the first is attached.
    let out = attach_once(&d, &acme_token, "con");
    assert!(!out.status.success(), "second attach succeeded: {out:?}");
    assert!(
        stderr(&out).contains("console is attached elsewhere"),
        "{}",
        stderr(&out)
    );

    // Typing reaches the guest's shell; the shell's answer (not the echo of what was typed,
    // which reads `$((40+2))`) comes back. Sent again if the shell was not reading yet.
    let deadline = Instant::now() + SHELL_TIMEOUT * 2;
    let mut answered = false;
    while !answered && Instant::now() < deadline {
        session.send(b"echo ATTACH-$((40+2))\n");
        answered = session
            .stdout
            .wait_for("ATTACH-42", SHELL_TIMEOUT / 3)
            .is_some();
    }
    assert!(
        answered,
        "the guest's shell did not answer: {}",
        session.stdout.transcript()
    );

    // Ctrl-] detaches cleanly and leaves the guest alone.
    session.send(&[0x1d]);
    let code = session.wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "detach failed; stderr: {}",
        session.stderr.transcript()
    );
    assert!(
        session
            .stderr
            .wait_for("detached", Duration::from_secs(5))
            .is_some(),
        "{}",
        session.stderr.transcript()
    );
    assert_eq!(acme.vms(None).show("con").unwrap().state, "running");

    // The console is free again once the daemon has seen the client go.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let out = attach_once(&d, &acme_token, "con");
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(again.status.success(), "console not released: {again:?}");

    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    let attaches: Vec<_> = op
        .audit(Some("acme"), 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "vm.console.attach")
        .collect();
    assert!(
        attaches
            .iter()
            .any(|e| e.target == "con" && e.result == "ok"),
        "{attaches:?}"
    );
    assert!(
        attaches
            .iter()
            .any(|e| e.result.contains("attached elsewhere")),
        "{attaches:?}"
    );
}

/// A follow stream (`hostel vm console NAME` without --attach, or `?follow=true`) ends once
/// its VM is deleted, after the last output, instead of waiting forever for more.
#[test]
fn console_follow_ends_when_the_vm_is_deleted() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(HOSTEL), guest_dir, "follow-end");
    let (c, _) = tenant(&d, "acme");
    c.vms(None).create(&vm("f1", true)).unwrap();
    let mut stream = c.vms(None).console_follow("f1").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let r = std::io::Read::read_to_end(&mut stream, &mut all);
        let _ = tx.send((r.is_ok(), String::from_utf8_lossy(&all).into_owned()));
    });
    // Wait for the guest through a second stream, so this one is still open when deleted.
    let mut w = LineWatcher::new(c.vms(None).console_follow("f1").unwrap());
    assert!(
        w.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some(),
        "{}",
        w.transcript()
    );
    c.vms(None).delete("f1").unwrap();
    let (ok, text) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the follow stream did not end after the VM was deleted");
    assert!(ok, "stream ended with an error");
    assert!(text.contains("HOSTEL-READY"), "stream lost output: {text}");
}
