//! The guest agent through a real daemon and busybox guests, which run no agent: every agent
//! call on such a VM fails quickly with "no guest agent answers", the silent channel neither
//! delays the VM's stop nor another VM's API calls, bad input is refused naming its field,
//! and other tenants cannot find the VM. (The agent's protocol against garbage, floods and
//! overlong lines is tested in `hostel-engine/src/agent_tests.rs` with a fake guest side;
//! the real qemu-ga in `daemon_agent_debian.rs`.)

mod common;

use common::{boot_slots, HOSTEL};
use hostel_api::{Client, ClientError, CreateTenant, CreateToken, CreateVm, ExecVm, Size, StopVm};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

fn api_err<T>(r: Result<T, ClientError>) -> (u16, String, Option<String>) {
    match r {
        Err(ClientError::Api {
            status,
            message,
            field,
            ..
        }) => (status, message, field),
        Err(other) => panic!("expected an API error, got {other:?}"),
        Ok(_) => panic!("expected an API error, got a success"),
    }
}

fn exec(cmd: &[&str]) -> ExecVm {
    ExecVm {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn a_vm_without_an_agent_answers_quickly_and_stays_stoppable() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(HOSTEL), guest_dir, "agent");
    let (acme, acme_token) = tenant(&d, "acme");
    let (umbrella, _) = tenant(&d, "umbrella");
    let vms = acme.vms(None);

    // Bad input and a stopped VM: refused before the guest is asked anything.
    vms.create(&vm("idle", false)).unwrap();
    let (status, msg, field) = api_err(vms.exec("idle", &exec(&[])));
    assert_eq!((status, field.as_deref()), (400, Some("command")), "{msg}");
    let (status, msg, _) = api_err(vms.exec("idle", &exec(&["true"])));
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("is stopped"), "{msg}");

    let _slots = boot_slots(2);
    vms.create(&vm("quiet", true)).unwrap();
    vms.create(&vm("other", true)).unwrap();
    for name in ["quiet", "other"] {
        let mut log = LineWatcher::new(vms.console_follow(name).unwrap());
        assert!(
            log.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some(),
            "{name} did not boot: {}",
            log.transcript()
        );
    }

    // Another tenant cannot find it.
    let (status, msg, _) = api_err(umbrella.vms(None).exec("quiet", &exec(&["true"])));
    assert_eq!(status, 404, "{msg}");
    let (status, _, _) = api_err(umbrella.vms(None).guest("quiet"));
    assert_eq!(status, 404);

    // No agent: a clear 503, within the sync deadline (3 s) and some slack.
    let t = Instant::now();
    let (status, msg, _) = api_err(vms.exec("quiet", &exec(&["uname", "-a"])));
    assert_eq!(status, 503, "{msg}");
    assert!(msg.contains("no guest agent answers in this VM"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let (status, msg, _) = api_err(vms.guest("quiet"));
    assert_eq!(status, 503, "{msg}");

    // The CLI says the same and fails.
    let out = Command::new(HOSTEL)
        .args(["--url", &d.url, "--token", &acme_token])
        .args(["vm", "exec", "quiet", "--", "true"])
        .env("HOSTEL_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no guest agent answers"), "{err}");

    // The audit log has the command line.
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    let audit = op.audit(Some("acme"), 50).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "vm.exec" && e.target.contains("uname -a")),
        "{audit:?}"
    );

    // Agent calls held on the silent channel (several at once, queued on its lock) delay
    // neither another VM's calls nor this VM's stop.
    let (url, token) = (d.url.clone(), acme_token.clone());
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let c = Client::new(&url, Some(token));
                let _ = c.vms(None).exec("quiet", &exec(&["true"]));
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(vms.show("other").unwrap().state, "running");
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "another VM's show took {worst:?}"
    );
    let t = Instant::now();
    let stopped = vms
        .stop(
            "quiet",
            &StopVm {
                force: true,
                timeout_secs: None,
            },
        )
        .unwrap();
    assert_eq!(stopped.state, "stopped");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    for c in callers {
        c.join().unwrap();
    }
}

/// A fake guest side in place of QEMU's end of a busybox VM's channel (a mock: the busybox
/// guest has no agent): answers sync, exec, status and file reads like qemu-ga, so the
/// daemon's exec stream and the CLI's exit status are tested without a Debian guest.
fn fake_agent(sock: &Path, output: Vec<u8>, exit: i32) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let _ = std::fs::remove_file(sock);
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut offset = 0usize;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                line.retain(|&b| b != 0xFF);
                let Ok(cmd) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                let reply = match cmd["execute"].as_str().unwrap_or("") {
                    "guest-sync-delimited" => {
                        let mut v = b"noise\xff".to_vec();
                        v.extend(format!("{{\"return\": {}}}\n", cmd["arguments"]["id"]).bytes());
                        v
                    }
                    "guest-exec" => {
                        if cmd["arguments"]["path"] == "/bin/sh" {
                            offset = 0;
                        }
                        b"{\"return\": {\"pid\": 99}}\n".to_vec()
                    }
                    "guest-exec-status" => {
                        format!("{{\"return\": {{\"exited\": true, \"exitcode\": {exit}}}}}\n")
                            .into_bytes()
                    }
                    "guest-file-open" => {
                        let h = if cmd["arguments"]["path"].as_str().unwrap().ends_with(".out") {
                            1
                        } else {
                            2
                        };
                        format!("{{\"return\": {h}}}\n").into_bytes()
                    }
                    "guest-file-read" => {
                        let count = cmd["arguments"]["count"].as_u64().unwrap() as usize;
                        let data: &[u8] = if cmd["arguments"]["handle"] == 1 {
                            let end = (offset + count).min(output.len());
                            let d = &output[offset..end];
                            offset = end;
                            d
                        } else {
                            b""
                        };
                        format!(
                            "{{\"return\": {{\"count\": {}, \"buf-b64\": \"{}\", \"eof\": {}}}}}\n",
                            data.len(),
                            b64.encode(data),
                            data.is_empty()
                        )
                        .into_bytes()
                    }
                    _ => b"{\"return\": {}}\n".to_vec(),
                };
                if w.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    })
}

#[test]
fn exec_streams_a_fake_agents_output_and_exit_status_through_the_cli() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(HOSTEL), guest_dir, "agentfake");
    let (acme, acme_token) = tenant(&d, "acme");
    let _slots = boot_slots(1);
    let v = acme.vms(None).create(&vm("fake", true)).unwrap();
    let sock = d.state_path().join("run").join(&v.id).join("qga.sock");
    // 3 MiB and a bit: several chunks, the last one partial.
    let output: Vec<u8> = (0..(3 << 20) + 1234).map(|i| (i % 251) as u8).collect();
    let _agent = fake_agent(&sock, output.clone(), 7);
    let out = Command::new(HOSTEL)
        .args(["--url", &d.url, "--token", &acme_token])
        .args(["vm", "exec", "fake", "--", "cat", "big"])
        .env("HOSTEL_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), output.len());
    assert!(out.stdout == output, "the output differs");
}

/// A hostile guest side in place of QEMU's end of the channel: floods garbage without end.
/// The call fails fast (502), another VM's calls stay fast, the VM stays stoppable.
#[test]
fn a_flooding_agent_fails_its_calls_fast_and_harms_nothing_else() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(HOSTEL), guest_dir, "agentflood");
    let (acme, _) = tenant(&d, "acme");
    let _slots = boot_slots(1);
    let v = acme.vms(None).create(&vm("flood", true)).unwrap();
    let sock = d.state_path().join("run").join(&v.id).join("qga.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || while conn.write_all(&[b'{'; 65536]).is_ok() {});
        }
    });
    let t = Instant::now();
    let (status, msg, _) = api_err(acme.vms(None).exec("flood", &exec(&["true"])));
    assert!(status == 502 || status == 503, "{status} {msg}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(acme.vms(None).list().unwrap().len(), 1);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let stopped = acme
        .vms(None)
        .stop(
            "flood",
            &StopVm {
                force: true,
                timeout_secs: None,
            },
        )
        .unwrap();
    assert_eq!(stopped.state, "stopped");
}
