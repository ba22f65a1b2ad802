//! A hostile guest on its own agent port: a process in the shared Debian guest stops
//! qemu-ga and writes garbage into `/dev/virtio-ports/org.qemu.guest_agent.0`, floods it,
//! or holds it open and silent. Meanwhile another VM's API calls stay within their usual
//! latency, the hostile VM's agent calls fail within a bound instead of hanging, and the
//! VM stops while its port is held silent. Then agent calls on the stopped VM are 409.

use super::exec_out;
use hostel_api::{Client, ClientError, CreateVm, ExecVm, FilePush, StopVm};
use std::time::{Duration, Instant};

/// What the hostile process does to the port (`PORT`) for 30 s, then qemu-ga is started
/// again; the silent case lasts until the VM stops. No `$` or `%`: systemd-run's command
/// line goes through systemd's own expansion.
const MODES: [(&str, &str); 3] = [
    (
        "garbage",
        r#"timeout 30 sh -c 'while :; do printf "{\"return\": 1}\n}}garbage\377{\"retu\n"; sleep 0.05; done' > PORT"#,
    ),
    // In a loop: a write while no host client is connected may fail and end one `cat`.
    (
        "flood",
        r#"timeout 30 sh -c 'while :; do cat /dev/urandom; done' > PORT"#,
    ),
    ("silent", r#"exec 3<>PORT; sleep 600"#),
];
const PORT: &str = "/dev/virtio-ports/org.qemu.guest_agent.0";
/// How long an agent call on the hostile VM may take before it fails: the sync deadline
/// (3 s) and a loaded host's scheduling.
const AGENT_FAILS_WITHIN: Duration = Duration::from_secs(15);
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// The other VM's usual calls, each timed: show it (when there is one), list VMs.
fn other_calls(acme: &Client, other: bool) -> Duration {
    let a = if other {
        let (r, a) = timed(|| acme.vms(None).show("other"));
        r.unwrap();
        a
    } else {
        Duration::ZERO
    };
    let (r, b) = timed(|| acme.vms(None).list());
    r.unwrap();
    a.max(b)
}

/// `other`: a busybox VM can be booted next to the Debian one (the guest assets are there).
pub fn hostile_guest(acme: &Client, other: bool) {
    if other {
        acme.vms(None)
            .create(&CreateVm {
                name: "other".into(),
                ..Default::default()
            })
            .unwrap();
    } else {
        eprintln!("no guest assets: the other VM is left out, its calls are the list's");
    }
    let other_calls = || other_calls(acme, other);
    let baseline = (0..5).map(|_| other_calls()).max().unwrap();
    // A call within ten times the slowest of five, and at least a second on a host other
    // engineers load too.
    let bound = (baseline * 10).max(Duration::from_secs(1));
    eprintln!("other VM's calls: slowest of 5 {baseline:?}, bound {bound:?}");

    for (mode, action) in MODES {
        let silent = mode == "silent";
        let restart = if silent {
            String::new()
        } else {
            "; systemctl start qemu-guest-agent".into()
        };
        let script = format!(
            "systemctl stop qemu-guest-agent; {}{restart}",
            action.replace("PORT", PORT)
        );
        // Started by systemd a few seconds later, so this exec ends (and its files are
        // read back) while the agent still answers.
        exec_out(
            acme,
            &[
                "systemd-run",
                &format!("--unit=hostile-{mode}"),
                "--on-active=4",
                "/bin/sh",
                "-c",
                &script,
            ],
        );
        // The phase has begun when the agent stops answering.
        let t = Instant::now();
        loop {
            let (r, took) = timed(|| acme.vms(None).guest("deb"));
            match r {
                Ok(_) => {}
                Err(ClientError::Api { status, .. }) => {
                    assert!(
                        matches!(status, 502 | 503 | 409),
                        "{mode}: agent call answered {status}"
                    );
                    // Not bounded: this call may have begun while the agent still
                    // answered and run into its stopping (one call deadline, 10 s).
                    eprintln!("{mode}: agent call failed with {status} in {took:?}");
                    break;
                }
                Err(e) => panic!("{mode}: {e}"),
            }
            assert!(
                t.elapsed() < PHASE_TIMEOUT,
                "{mode}: the agent kept answering"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // While it lasts: the other VM's calls are as quick as usual, the hostile VM's
        // agent calls fail within the bound, its other calls answer.
        // Three rounds (about 4 s each) fit well within the 30 s the hostile process runs.
        for _ in 0..3 {
            let took = other_calls();
            assert!(took < bound, "{mode}: another VM's call took {took:?}");
            let (r, took) = timed(|| acme.vms(None).guest("deb"));
            assert!(r.is_err(), "{mode}: the agent answered mid-phase");
            assert!(
                took < AGENT_FAILS_WITHIN,
                "{mode}: agent call took {took:?}"
            );
            let (r, took) = timed(|| acme.vms(None).show("deb"));
            r.unwrap();
            assert!(took < bound, "{mode}: showing the hostile VM took {took:?}");
        }
        if silent {
            break;
        }
        // qemu-ga is back: the next session resynchronises past whatever was left.
        let t = Instant::now();
        while acme.vms(None).guest("deb").is_err() {
            assert!(
                t.elapsed() < PHASE_TIMEOUT,
                "{mode}: the agent never came back"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("{mode}: agent back after {:.1?}", t.elapsed());
    }

    // The port is held silent: the VM still stops, within its graceful timeout.
    let (r, took) = timed(|| {
        acme.vms(None).stop(
            "deb",
            &StopVm {
                force: false,
                timeout_secs: Some(60),
            },
        )
    });
    let v = r.unwrap();
    eprintln!("stopped with a silent agent port in {took:?}");
    assert!(took < Duration::from_secs(120), "stop took {took:?}");
    let t = Instant::now();
    let mut state = v.state;
    while state != "stopped" {
        assert!(t.elapsed() < Duration::from_secs(120), "still {state}");
        std::thread::sleep(Duration::from_millis(500));
        state = acme.vms(None).show("deb").unwrap().state;
    }
    // Agent calls on a stopped VM: 409 naming its state, nothing tried.
    let stopped = |r: Result<(), ClientError>| match r {
        Err(ClientError::Api {
            status: 409,
            message,
            ..
        }) => assert!(message.contains("stopped"), "{message}"),
        other => panic!("on a stopped VM: {other:?}"),
    };
    stopped(
        acme.vms(None)
            .push_file(
                "deb",
                &FilePush {
                    path: "/root/x".into(),
                    ..Default::default()
                },
                &b"x"[..],
                1,
            )
            .map(|_| ()),
    );
    stopped(acme.vms(None).pull_file("deb", "/root/blob").map(|_| ()));
    stopped(
        acme.vms(None)
            .exec(
                "deb",
                &ExecVm {
                    command: vec!["true".into()],
                    ..Default::default()
                },
            )
            .map(|_| ()),
    );
}
