//! Issue 16, live through the daemon with two real guests of one tenant on a network attached
//! to the external network (a veth whose far end is a namespace playing the internet):
//!
//! - edge detection: the client VM's probe to the far host raises its alert; after `kill -9`
//!   of the switch the daemon's watchdog starts a new one and the daemon installs the
//!   tenant's rules on it by itself: the probe alerts again without any API change;
//! - VM-to-VM inspection (`--intra-network`): the client's probe to the other VM raises no
//!   alert while it is off, one (with the VMs' own addresses) once on, and in prevent mode
//!   the probe is dropped (the server never answers) while the far host still does.
//!
//! Skipped without root, `ip` or the guest.

mod common;

use common::internet::{snat_lan, Internet};
use common::{boot_slots, daemon_with_guests, poll, DaemonCli, Tenant};
use hostel_api::{NetworkView, VmView};
use hostel_testkit::{is_root, run_arg, which, LineWatcher, BOOT_TIMEOUT};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const FAR: &str = "198.51.100.7";
/// Alert only: the probe to the far host (crosses the edge).
const SID_OUT: u64 = 1601;
/// Drop: the probe to the other VM (never crosses the edge).
const SID_IN: u64 = 1602;

const RULES: &str = "\
alert tcp $HOME_NET any -> any 8080 (msg:\"probe out\"; content:\"HOSTEL-PROBE-OUT\"; sid:1601; rev:1;)
drop tcp $HOME_NET any -> $HOME_NET 9000 (msg:\"probe in\"; content:\"HOSTEL-PROBE-IN\"; sid:1602; rev:1;)
";

/// The server VM: answers each line on port 9000 with `ACK <line>`.
const SERVER: &str = "printf '#!/bin/sh\\nread l\\necho ACK $l\\n' > /tmp/ack; chmod +x /tmp/ack; \
     nc -ll -p 9000 -e /tmp/ack & echo SERVING; sleep 3600";

/// The client VM: every second, one probe to the server VM and one to the far host, each
/// printed with what came back (empty: no answer; `timeout` bounds a connection whose data
/// was dropped, which nc would otherwise wait on).
fn client_script(server: &str) -> String {
    format!(
        "i=0; while true; do i=$((i+1)); \
         a=$(echo HOSTEL-PROBE-IN-$i | timeout 4 nc -w 2 {server} 9000); echo \"IN $i [$a]\"; \
         b=$(echo HOSTEL-PROBE-OUT-$i | timeout 4 nc -w 2 {FAR} 8080); echo \"OUT $i [$b]\"; \
         sleep 1; done"
    )
}

/// (sid, src_ip, dest_ip, dest_port, action) of one alert.
type Alert = (u64, String, String, u64, String);

/// The tenant's alerts on the switch now; `None` while the switch has no edge for it (just
/// restarted).
fn alerts(t: &Tenant) -> Option<Vec<Alert>> {
    let out = t.cli(&["ids", "alerts"]);
    if !out.ok() {
        return None;
    }
    Some(
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("an EVE line");
                (
                    v["alert"]["signature_id"].as_u64().unwrap_or(0),
                    v["src_ip"].as_str().unwrap_or("").to_string(),
                    v["dest_ip"].as_str().unwrap_or("").to_string(),
                    v["dest_port"].as_u64().unwrap_or(0),
                    v["alert"]["action"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// The next console line `IN n [...]` / `OUT n [...]` (`kind`) with n above `after`:
/// (n, what came back).
fn next_round(w: &mut LineWatcher, kind: &str, after: u64) -> (u64, String) {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = w
            .wait_for(&format!("{kind} "), left)
            .unwrap_or_else(|| panic!("no `{kind}` round after {after}:\n{}", w.transcript()));
        let Some(rest) = line.split(&format!("{kind} ")).nth(1) else {
            continue;
        };
        let Some((n, got)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        if n > after {
            return (n, got.trim_matches(['[', ']']).to_string());
        }
    }
}

#[test]
fn edge_detection_survives_a_switch_restart_and_vm_to_vm_inspection_alerts_and_drops() {
    if !is_root() || !which("ip") {
        eprintln!("SKIPPED: needs root and `ip` (namespaces, veth, AF_PACKET)");
        return;
    }
    let Some(d) = daemon_with_guests("idslive") else {
        return;
    };
    let net = Internet::new("idsl", "hi", &[FAR], None);
    net.set_external(&d, &[]);
    let t = d.tenant("acme", &[]);
    snat_lan(&t);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.rules");
    std::fs::write(&file, RULES).unwrap();
    let rules = t.cli(&["ids", "rules", file.to_str().unwrap()]);
    assert!(rules.ok(), "{rules:?}");
    let on = t.cli(&["ids", "set", "--network", "lan", "--mode", "detect"]);
    assert!(on.ok() && on.stdout.contains("applied"), "{on:?}");

    // The far host: answers every line with `ACK <line>`, for the whole test.
    let _far = net.ns.spawn_in(|| {
        let l = TcpListener::bind(format!("{FAR}:8080")).expect("bind in the namespace");
        for s in l.incoming().flatten() {
            let mut line = String::new();
            let mut r = BufReader::new(&s);
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            if r.read_line(&mut line).is_ok() {
                let _ = (&s).write_all(format!("ACK {line}").as_bytes());
            }
        }
    });

    let _slots = boot_slots(2);
    let made = t.cli(&[
        "vm",
        "create",
        "srv",
        "--memory",
        "128M",
        "--network",
        "lan",
        "--cmdline",
        &run_arg(SERVER),
    ]);
    assert!(made.ok(), "vm create srv: {made:?}");
    let lan: NetworkView = t.cli(&["network", "show", "lan", "-o", "json"]).json();
    let srv_ip = lan
        .ports
        .iter()
        .find(|p| p.vm == "srv")
        .and_then(|p| p.ipv4.clone())
        .expect("srv's address");
    let made = t.cli(&[
        "vm",
        "create",
        "cli",
        "--memory",
        "128M",
        "--network",
        "lan",
        "--cmdline",
        &run_arg(&client_script(&srv_ip)),
    ]);
    assert!(made.ok(), "vm create cli: {made:?}");
    let cli: VmView = t.cli(&["vm", "show", "cli", "-o", "json"]).json();
    let cli_ip = cli.nics[0].ipv4.clone().expect("cli's address");
    let c = d.client(&t.token);
    let mut console = LineWatcher::new(c.vms(None).console_follow("cli").unwrap());

    // Edge detection: the far host's probe alerts; the VM-to-VM probe is answered and,
    // intra-tenant inspection being off, raises nothing.
    let seen = poll("the outbound probe's alert", BOOT_TIMEOUT, || {
        alerts(&t).filter(|a| a.iter().any(|x| x.0 == SID_OUT))
    });
    let out = seen.iter().find(|x| x.0 == SID_OUT).expect("found");
    assert_eq!(
        (out.1.as_str(), out.2.as_str(), out.3),
        (cli_ip.as_str(), FAR, 8080),
        "tenant-side addresses"
    );
    let (n, got) = next_round(&mut console, "IN", 0);
    let (n, got) = if got.is_empty() {
        next_round(&mut console, "IN", n)
    } else {
        (n, got)
    };
    assert!(got.starts_with("ACK HOSTEL-PROBE-IN"), "round {n}: {got:?}");
    let (n, _) = next_round(&mut console, "IN", n);
    assert!(
        !alerts(&t).unwrap_or_default().iter().any(|x| x.0 == SID_IN),
        "VM-to-VM traffic inspected while the option is off"
    );

    // kill -9 the switch: the watchdog starts another, the daemon gives it the rules back
    // by itself (no API call), and the probe alerts on the new switch.
    let old = d.switch_pid().expect("a switch runs");
    // SAFETY: signalling the switch this test's daemon started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    poll("a new switch", BOOT_TIMEOUT, || {
        d.switch_pid().filter(|p| *p != old)
    });
    poll(
        "the outbound probe's alert on the restarted switch",
        BOOT_TIMEOUT,
        || alerts(&t).filter(|a| a.iter().any(|x| x.0 == SID_OUT)),
    );
    let shown = t.cli(&["ids", "show"]);
    assert!(shown.ok(), "{shown:?}");

    // VM to VM, detect: the probe alerts with the VMs' own addresses and is answered.
    let on = t.cli(&[
        "ids",
        "set",
        "--network",
        "lan",
        "--intra-network",
        "lan",
        "--mode",
        "detect",
    ]);
    assert!(on.ok() && on.stdout.contains("applied"), "{on:?}");
    let seen = poll("the VM-to-VM probe's alert", BOOT_TIMEOUT, || {
        alerts(&t).filter(|a| a.iter().any(|x| x.0 == SID_IN))
    });
    let inner = seen.iter().find(|x| x.0 == SID_IN).expect("found");
    assert_eq!(
        (
            inner.1.as_str(),
            inner.2.as_str(),
            inner.3,
            inner.4.as_str()
        ),
        (cli_ip.as_str(), srv_ip.as_str(), 9000, "allowed")
    );
    let (n, got) = next_round(&mut console, "IN", n);
    let (mut n, got) = if got.is_empty() {
        next_round(&mut console, "IN", n)
    } else {
        (n, got)
    };
    assert!(
        got.starts_with("ACK"),
        "detect must not block: round {n}: {got:?}"
    );

    // Prevent: the probe to the server VM is dropped (no answer), the far host still
    // answers, and the alert says `blocked`. A round already under way when the mode
    // changed may still get its answer: wait for the first unanswered one, then require
    // the next ones to be unanswered too.
    let on = t.cli(&[
        "ids",
        "set",
        "--network",
        "lan",
        "--intra-network",
        "lan",
        "--mode",
        "prevent",
    ]);
    assert!(on.ok(), "{on:?}");
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let (k, got) = next_round(&mut console, "IN", n);
        n = k;
        if got.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prevent never blocked the VM-to-VM probe:\n{}",
            console.transcript()
        );
    }
    let (k, got) = next_round(&mut console, "OUT", n - 1);
    assert!(got.starts_with("ACK"), "the far host: round {k}: {got:?}");
    let (k, got) = next_round(&mut console, "IN", n);
    assert!(got.is_empty(), "round {k} passed in prevent mode: {got:?}");
    let blocked = alerts(&t).unwrap_or_default();
    assert!(
        blocked.iter().any(|x| x.0 == SID_IN && x.4 == "blocked"),
        "{blocked:?}"
    );
}
