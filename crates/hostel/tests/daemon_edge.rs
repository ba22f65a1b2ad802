//! Issue 15: the edge through the daemon, with real guests and real frames. The host's
//! "real NIC" is one end of a veth pair; the other end sits in a namespace playing the
//! internet (the upstream router 203.0.113.1 and an external host 198.51.100.7). Set up
//! through the CLI as an operator and a tenant would: `external set`, `network create
//! --external --snat`, `firewall rule add`, `address allocate/attach`.
//!
//! From the external host: the VM's floating address answers on the allowed port only, the
//! reply comes back, a reject rule answers with a RST; a VM without a floating address
//! reaches the external host through source NAT, which sees the tenant edge's address; the
//! rule's hit counter moved and the rule logged; a VM on a routed public subnet reaches the
//! external host untranslated, and its routed IPv6 address answers pings from outside while
//! an icmpv6 rule allows them and not once the rule is deleted; after the switch is killed (the daemon starts a new one) the
//! rules are back. Two guests, booted together. Skipped without root, `ip` or the guest.

mod common;

use common::internet::Internet;
use common::{boot_slots, daemon_with_guests, poll, DaemonCli};
use hostel_api::{AddressView, FirewallRuleView, NetworkView};
use hostel_testkit::{is_root, run_arg, which, LineWatcher, BOOT_TIMEOUT};
use std::io::{ErrorKind, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const FAR: &str = "198.51.100.7";

/// The web VM: three servers, each answering its port's name.
const WEB: &str = "for p in 22 23 24; do printf '#!/bin/sh\\necho OPEN%s\\n' $p > /tmp/o$p; \
     chmod +x /tmp/o$p; nc -ll -p $p -e /tmp/o$p & done; echo SERVING; sleep 3600";

/// The worker VM (no floating address): reaches the far host through source NAT.
const WORKER: &str = "for i in $(seq 1 90); do \
     if out=$(nc -w 3 198.51.100.7 8080 </dev/null) && [ -n \"$out\" ]; then \
       echo SNAT-GOT $out; break; fi; sleep 1; done; echo WORKER-DONE; sleep 3600";

#[test]
fn floating_address_firewall_and_source_nat_with_real_guests_survive_a_switch_restart() {
    if !is_root() || !which("ip") {
        eprintln!("SKIPPED: needs root and `ip` (namespaces, veth, AF_PACKET)");
        return;
    }
    let Some(d) = daemon_with_guests("edge") else {
        return;
    };
    let net = Internet::new("edge", "hx", &[FAR], Some("2001:db8:1::1/64"));
    net.set_external(
        &d,
        &[
            "--routed-pool",
            "192.0.2.0/24",
            "--subnet6",
            "2001:db8:1::/64",
            "--gateway6",
            "2001:db8:1::1",
            "--routed-pool6",
            "2001:db8:2::/48",
        ],
    );
    let t = d.tenant("acme", &[]);
    let made = t.cli(&[
        "network",
        "create",
        "lan",
        "--subnet",
        "10.9.0.0/24",
        "--external",
        "--snat",
        "-o",
        "json",
    ]);
    let lan: NetworkView = made.json();
    let outside = lan.external.expect("attached").outside;
    assert_eq!(
        outside, "203.0.113.8",
        "the edge takes the pool's first address"
    );

    let allow: FirewallRuleView = t
        .cli(&[
            "firewall",
            "rule",
            "add",
            "--direction",
            "ingress",
            "--action",
            "allow",
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--log",
            "-o",
            "json",
        ])
        .json();
    let reject = t.cli(&[
        "firewall",
        "rule",
        "add",
        "--direction",
        "ingress",
        "--action",
        "reject",
        "--protocol",
        "tcp",
        "--port",
        "24",
    ]);
    assert!(reject.ok(), "{reject:?}");

    // The far host's server, up before the worker boots.
    let server = net.ns.spawn_in(|| {
        let l = TcpListener::bind(format!("{FAR}:8080")).expect("bind in the namespace");
        let (mut s, peer) = l.accept().expect("accept");
        let _ = s.write_all(b"HELLO-OUTSIDE\n");
        peer
    });

    let _slots = boot_slots(2);
    for (name, script) in [("web", WEB), ("worker", WORKER)] {
        let out = t.cli(&[
            "vm",
            "create",
            name,
            "--memory",
            "128M",
            "--network",
            "lan",
            "--cmdline",
            &run_arg(script),
        ]);
        assert!(out.ok(), "vm create {name}: {out:?}");
    }
    let floating: AddressView = t.cli(&["address", "allocate", "-o", "json"]).json();
    let attached = t.cli(&["address", "attach", &floating.address, "web"]);
    assert!(attached.ok(), "{attached:?}");
    let fip = floating.address.clone();

    let c = d.client(&t.token);
    let mut web = LineWatcher::new(c.vms(None).console_follow("web").unwrap());
    assert!(
        web.wait_for("SERVING", BOOT_TIMEOUT).is_some(),
        "web did not start its servers: {}",
        web.transcript()
    );
    // Allowed port: the VM answers and the answer comes back (the guest's ARP for its
    // gateway and the edge's for the far end may take a moment: retry to a deadline).
    let open = poll("port 22 through the floating address", BOOT_TIMEOUT, || {
        net.tcp(format!("{fip}:22")).ok()
    });
    assert_eq!(open, "OPEN22");
    assert_eq!(
        net.tcp(format!("{fip}:23")),
        Err(ErrorKind::TimedOut),
        "a port no rule allows is dropped silently (default ingress drop)"
    );
    assert_eq!(
        net.tcp(format!("{fip}:24")),
        Err(ErrorKind::ConnectionRefused),
        "a reject rule answers with a RST"
    );

    // Source NAT: the worker has no floating address; the far host sees the edge's.
    let mut worker = LineWatcher::new(c.vms(None).console_follow("worker").unwrap());
    let got = worker.wait_for("SNAT-GOT", BOOT_TIMEOUT);
    assert!(
        got.as_deref().is_some_and(|l| l.contains("HELLO-OUTSIDE")),
        "the worker never reached the far host: {}",
        worker.transcript()
    );
    let peer = server.join().expect("server thread");
    assert_eq!(
        peer.ip().to_string(),
        outside,
        "the far host sees the tenant edge's address"
    );

    // A routed public subnet: its VM reaches the far host untranslated (the upstream routes
    // the subnet to the edge's address).
    drop(_slots);
    let routed: NetworkView = t
        .cli(&[
            "network",
            "create",
            "pub",
            "--subnet",
            "192.0.2.16/28",
            "--subnet6",
            "2001:db8:2::/64",
            "--external",
            "--routed",
            "-o",
            "json",
        ])
        .json();
    assert!(
        routed.external.as_ref().is_some_and(|x| x.routed),
        "{routed:?}"
    );
    // The edge's IPv6 address: the external prefix with its IPv4 address as the last 32 bits.
    net.ns.exec(&format!(
        "ip route add 192.0.2.16/28 via {outside} && \
         ip -6 route add 2001:db8:2::/64 via 2001:db8:1::cb00:7108"
    ));
    let server = net.ns.spawn_in(|| {
        let l = TcpListener::bind(format!("{FAR}:8081")).expect("bind in the namespace");
        let (mut s, peer) = l.accept().expect("accept");
        let _ = s.write_all(b"HELLO-ROUTED\n");
        peer
    });
    let _slot = boot_slots(1);
    let out = t.cli(&[
        "vm",
        "create",
        "pubvm",
        "--memory",
        "128M",
        "--network",
        "pub",
        "--cmdline",
        &run_arg(&WORKER.replace("8080", "8081")),
    ]);
    assert!(out.ok(), "vm create pubvm: {out:?}");
    let mut pubvm = LineWatcher::new(c.vms(None).console_follow("pubvm").unwrap());
    let got = pubvm.wait_for("SNAT-GOT", BOOT_TIMEOUT);
    assert!(
        got.as_deref().is_some_and(|l| l.contains("HELLO-ROUTED")),
        "the routed VM never reached the far host: {}",
        pubvm.transcript()
    );
    let peer = server.join().expect("server thread");
    let shown: NetworkView = t.cli(&["network", "show", "pub", "-o", "json"]).json();
    assert_eq!(
        Some(peer.ip().to_string()),
        shown.ports[0].ipv4,
        "the far host sees the VM's own (routed) address"
    );

    // An IPv6 rule: the routed VM's SLAAC address answers pings from the external network
    // while an icmpv6 rule allows them, and no longer once it is deleted.
    let v6 = shown.ports[0]
        .ipv6
        .clone()
        .expect("the routed VM's IPv6 address");
    let ping6 = |n: u32| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &net.ns.name, "busybox", "ping", "-6", "-c"])
            .arg(n.to_string())
            .args(["-W", "2", &v6])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("ping")
            .success()
    };
    let icmp6: FirewallRuleView = t
        .cli(&[
            "firewall",
            "rule",
            "add",
            "--direction",
            "ingress",
            "--action",
            "allow",
            "--protocol",
            "icmpv6",
            "--source",
            "2001:db8:1::/64",
            "-o",
            "json",
        ])
        .json();
    poll(
        "ping6 to the routed VM through its rule",
        BOOT_TIMEOUT,
        || ping6(1).then_some(()),
    );
    let out = t.cli(&["firewall", "rule", "delete", &icmp6.id.to_string()]);
    assert!(out.ok(), "{out:?}");
    assert!(!ping6(2), "the deleted IPv6 rule still lets pings in");

    let rules: Vec<FirewallRuleView> = t.cli(&["firewall", "rule", "list", "-o", "json"]).json();
    let hits = rules
        .iter()
        .find(|r| r.id == allow.id)
        .expect("rule listed");
    assert!(hits.hits_packets > 0, "the allow rule's counter: {hits:?}");
    // The allow rule logs: its entries name it and the port (inside addresses: the VM's).
    let log: Vec<hostel_api::FirewallLogView> = t
        .cli(&["firewall", "log", "-o", "json"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
        .collect();
    assert!(
        log.iter()
            .any(|e| e.rule == Some(allow.id) && e.destination_port == 22),
        "no log entry of the allow rule: {log:?}"
    );
    let metrics = d.client(&d.operator_token).get_text("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hostel_firewall_rule_hits_total")
                && l.contains(&format!("rule=\"{}\"", allow.id))),
        "metrics lack the per-rule hits:\n{metrics}"
    );
    assert!(
        metrics.contains("hostel_firewall_conntrack{tenant=\"acme\"}"),
        "metrics lack the conntrack occupancy:\n{metrics}"
    );

    // Kill the switch: the daemon's watchdog starts another with the same tables, QEMU
    // reconnects the NICs, and the rules hold again.
    let old = d.switch_pid().expect("a switch runs");
    // SAFETY: signalling the switch this test's daemon started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let again = loop {
        let now = d.switch_pid();
        if now.is_some_and(|p| p != old) {
            if let Ok(line) = net.tcp(format!("{fip}:22")) {
                break line;
            }
        }
        assert!(
            Instant::now() < deadline,
            "port 22 never answered again after the switch restart:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(again, "OPEN22");
    assert_eq!(net.tcp(format!("{fip}:23")), Err(ErrorKind::TimedOut));
    assert_eq!(
        net.tcp(format!("{fip}:24")),
        Err(ErrorKind::ConnectionRefused)
    );
}
