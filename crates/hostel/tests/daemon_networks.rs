//! Tenant networks through the daemon, with real guests on the daemon-managed switch: VMs of
//! one tenant reach each other at the addresses the switch handed out by DHCP; a tenant with
//! the same subnet cannot reach them; IPv6 by SLAAC; an uplink to a host outside; a TCP
//! transfer across a switch kill; bad requests refused naming the field.

use hostel_api::{Client, CreateNetwork, CreateTenant, CreateToken, CreateVm, NicRequest};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;

/// A new tenant, and a client holding its token.
fn new_tenant(d: &TestDaemon, name: &str) -> Client {
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    op.create_tenant(&CreateTenant {
        name: name.into(),
        quota: None,
    })
    .unwrap();
    let tok = op.create_token(name, &CreateToken::default()).unwrap();
    Client::new(&d.url, Some(tok.secret))
}

/// A new tenant with a dual-stack network `lan`.
fn tenant_client(d: &TestDaemon, name: &str) -> Client {
    let c = new_tenant(d, name);
    c.create_network(
        None,
        &CreateNetwork {
            name: "lan".into(),
            subnet: "10.9.0.0/24".into(),
            gateway: None,
            uplink: false,
            subnet6: Some("fd00:9::/64".into()),
        },
    )
    .unwrap();
    c
}

fn vm(name: &str, ip: Option<&str>, script: Option<&str>) -> CreateVm {
    CreateVm {
        name: name.into(),
        memory: Some(hostel_api::Size::Mib(128)),
        cmdline: script.map(run_arg),
        networks: vec![NicRequest {
            network: "lan".into(),
            ip: ip.map(str::to_string),
        }],
        ..Default::default()
    }
}

/// Follows a VM's console until `needle` (or the end marker) shows up.
fn console_until(c: &Client, name: &str, needle: &str) -> (Option<String>, String) {
    let mut w = LineWatcher::new(c.vms(None).console_follow(name).unwrap());
    let hit = w.wait_for(needle, BOOT_TIMEOUT);
    (hit, w.transcript())
}

#[test]
fn tenant_vms_reach_each_other_and_a_same_subnet_tenant_cannot() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(env!("CARGO_BIN_EXE_hostel")), guest_dir, "nets");
    let acme = tenant_client(&d, "acme");
    let umbrella = tenant_client(&d, "umbrella");

    // acme's first VM idles; DHCP gives it the lowest free address.
    let a1 = acme.vms(None).create(&vm("a1", None, None)).unwrap();
    assert_eq!(a1.nics[0].ipv4.as_deref(), Some("10.9.0.2"));
    let (ready, log) = console_until(&acme, "a1", "HOSTEL-READY");
    assert!(ready.is_some(), "a1 did not boot: {log}");

    // IPv4 by DHCP; IPv6 by SLAAC from the switch's router advertisements (the guest waits
    // until its global address has passed duplicate address detection).
    let a1_v6 = a1.nics[0].ipv6.clone().expect("a1 has an IPv6 address");
    assert!(a1_v6.starts_with("fd00:9::"), "{a1_v6}");
    let ping = format!(
        "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; \
         if ping -c 2 -W 3 10.9.0.2 >/dev/null; then echo PING-OK; else echo PING-FAILED; fi; \
         i=0; while [ $i -lt 100 ]; do \
           ip -6 addr show eth0 scope global | grep inet6 | grep -qv tentative && break; \
           sleep 0.2; i=$((i+1)); done; \
         ip -6 addr show eth0 scope global | grep -o 'inet6 [0-9a-f:]*'; \
         if ping6 -c 2 -W 3 {a1_v6} >/dev/null; then echo PING6-OK; else echo PING6-FAILED; fi"
    );
    let a2 = acme.vms(None).create(&vm("a2", None, Some(&ping))).unwrap();
    let (exit, log) = console_until(&acme, "a2", "HOSTEL-EXIT");
    assert!(exit.is_some(), "a2 never finished: {log}");
    assert!(
        log.contains("inet 10.9.0.3"),
        "DHCP did not configure a2: {log}"
    );
    assert!(log.contains("PING-OK"), "a2 could not reach a1: {log}");
    let a2_v6 = a2.nics[0].ipv6.clone().expect("a2 has an IPv6 address");
    assert!(
        log.contains(&format!("inet6 {a2_v6}")),
        "SLAAC did not give a2 {a2_v6}: {log}"
    );
    assert!(
        log.contains("PING6-OK"),
        "a2 could not reach a1 over IPv6: {log}"
    );

    // umbrella has the same subnet; 10.9.0.2 there is nobody (its VM is .3).
    umbrella
        .vms(None)
        .create(&vm("u1", Some("10.9.0.3"), Some(&ping)))
        .unwrap();
    let (exit, log) = console_until(&umbrella, "u1", "HOSTEL-EXIT");
    assert!(exit.is_some(), "u1 never finished: {log}");
    assert!(
        log.contains("PING-FAILED") && log.contains("PING6-FAILED"),
        "umbrella reached acme's VM: {log}"
    );

    // The network shows its ports, addresses and counters; tenants see only their own.
    let lan = acme.show_network(None, "lan").unwrap();
    let names: Vec<_> = lan.ports.iter().map(|p| p.vm.as_str()).collect();
    assert_eq!(names, ["a1", "a2"]);
    let a1_port = &lan.ports[0];
    assert!(
        a1_port.rx_packets > 0 && a1_port.tx_packets > 0,
        "{a1_port:?}"
    );
    assert_eq!(umbrella.show_network(None, "lan").unwrap().ports.len(), 1);
}

/// Deletes a host interface at the end of a test, wherever the test got to.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A network's uplink TAP, moved into a namespace that plays the external network (a host
/// at 198.51.100.1 behind the gateway address): the VM reaches that host and the host
/// reaches the VM, and a capture on the uplink shows both directions with the addresses
/// as the endpoints wrote them (no translation on the path).
#[test]
fn external_host_reaches_a_vm_through_the_uplink_untranslated() {
    let Some(a) = guest_assets() else { return };
    if !hostel_testkit::which("tcpdump") {
        eprintln!("SKIPPED: tcpdump missing (scripts/install-deps.sh installs it)");
        return;
    }
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(env!("CARGO_BIN_EXE_hostel")), guest_dir, "uplink");
    let c = new_tenant(&d, "acme");
    let lan = c
        .create_network(
            None,
            &CreateNetwork {
                name: "lan".into(),
                subnet: "10.9.0.0/24".into(),
                gateway: None,
                uplink: true,
                subnet6: None,
            },
        )
        .unwrap();
    let ifname = lan
        .uplink
        .as_ref()
        .expect("uplink in view")
        .interface
        .clone();
    let _guard = LinkGuard(ifname.clone());

    let ext = hostel_testkit::NetNs::new("ext");
    hostel_testkit::sh(&format!("ip link set dev {ifname} netns {}", ext.name));
    ext.exec(&format!(
        "ip addr add 10.9.0.1/24 dev {ifname} && ip link set {ifname} up && \
         ip addr add 198.51.100.1/32 dev lo"
    ));
    let mut tcpdump = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ext.name, "tcpdump", "-n", "-l", "-U", "-i",
        ])
        .args([ifname.as_str(), "icmp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut started = LineWatcher::new(tcpdump.stderr.take().unwrap());
    assert!(
        started
            .wait_for("listening on", std::time::Duration::from_secs(20))
            .is_some(),
        "tcpdump did not start: {}",
        started.transcript()
    );
    let mut capture = LineWatcher::new(tcpdump.stdout.take().unwrap());

    let script =
        "if ping -c 2 -W 3 198.51.100.1 >/dev/null; then echo OUT-OK; else echo OUT-FAILED; fi; \
                  echo VM-UP; sleep 600";
    c.vms(None).create(&vm("v1", None, Some(script))).unwrap();
    let (out, log) = console_until(&c, "v1", "OUT-");
    assert!(
        out.as_deref().is_some_and(|l| l.contains("OUT-OK")),
        "the VM could not reach the external host: {log}"
    );
    ext.exec("busybox ping -c 2 -W 3 -I 198.51.100.1 10.9.0.2 >/dev/null");

    let t = std::time::Duration::from_secs(10);
    for want in [
        "IP 10.9.0.2 > 198.51.100.1: ICMP echo request",
        "IP 198.51.100.1 > 10.9.0.2: ICMP echo reply",
        "IP 198.51.100.1 > 10.9.0.2: ICMP echo request",
        "IP 10.9.0.2 > 198.51.100.1: ICMP echo reply",
    ] {
        assert!(
            capture.seen.iter().any(|l| l.contains(want)) || capture.wait_for(want, t).is_some(),
            "capture lacks {want:?}:\n{}",
            capture.transcript()
        );
    }
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();

    let shown = c.show_network(None, "lan").unwrap();
    let up = shown.uplink.expect("uplink");
    assert!(up.attached, "{up:?}");
    assert!(
        up.from_host_packets >= 2 && up.to_host_packets >= 2,
        "uplink counters: {up:?}"
    );

    // Deleting the network deletes the device, wherever the host put it.
    c.vms(None).delete("v1").unwrap();
    c.delete_network(None, "lan").unwrap();
    assert!(
        link_gone_soon(Some(&ext.name), &ifname),
        "{ifname} outlived its network"
    );
}

/// A checksummed TCP transfer between two VMs of one tenant, with the switch process killed
/// halfway through: the daemon brings up a new switch with the same tables, QEMU reconnects
/// the NICs, TCP retransmits what was lost, and every byte arrives (same MD5, same length).
#[test]
fn tcp_transfer_survives_the_switch_being_killed_mid_transfer() {
    let Some(a) = guest_assets() else { return };
    let guest_dir = a.initrd.parent().unwrap_or(Path::new("."));
    let d = TestDaemon::start(Path::new(env!("CARGO_BIN_EXE_hostel")), guest_dir, "xfer");
    let c = tenant_client(&d, "acme");

    let receiver = "mkfifo /tmp/hold; exec 3<>/tmp/hold; echo LISTENING; \
                    nc -l -p 5000 <&3 >/tmp/got; \
                    echo RECV $(md5sum </tmp/got | cut -c1-32) $(wc -c </tmp/got); sleep 600";
    c.vms(None).create(&vm("rx", None, Some(receiver))).unwrap();
    let mut rx_console = LineWatcher::new(c.vms(None).console_follow("rx").unwrap());
    assert!(
        rx_console.wait_for("LISTENING", BOOT_TIMEOUT).is_some(),
        "receiver did not start: {}",
        rx_console.transcript()
    );

    // 100 chunks of 64 KiB, paced over ~10 s so the switch dies with the transfer under way.
    let sender = "dd if=/dev/urandom of=/tmp/chunk bs=65536 count=1 2>/dev/null; \
                  i=0; while [ $i -lt 100 ]; do cat /tmp/chunk; i=$((i+1)); done \
                    | md5sum | cut -c1-32 > /tmp/want; echo WANT $(cat /tmp/want); \
                  i=0; while [ $i -lt 100 ]; do cat /tmp/chunk; \
                    [ $i -eq 20 ] && echo MIDWAY >&2; sleep 0.1; i=$((i+1)); done \
                    | nc 10.9.0.2 5000; echo SENT $?";
    c.vms(None).create(&vm("tx", None, Some(sender))).unwrap();
    let mut tx_console = LineWatcher::new(c.vms(None).console_follow("tx").unwrap());
    let want = tx_console
        .wait_for("WANT ", BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("sender did not start: {}", tx_console.transcript()));
    let want = want.split_whitespace().nth(1).expect("md5").to_string();
    assert!(
        tx_console.wait_for("MIDWAY", BOOT_TIMEOUT).is_some(),
        "transfer did not start: {}",
        tx_console.transcript()
    );

    let old = d.switch_pid().expect("a switch process");
    // SAFETY: the switch of this test's daemon (its command line names the state dir).
    unsafe { libc::kill(old, libc::SIGKILL) };

    let got = rx_console
        .wait_for("RECV ", std::time::Duration::from_secs(120))
        .unwrap_or_else(|| panic!("transfer never completed: {}", rx_console.transcript()));
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>()[1..],
        [want.as_str(), "6553600"],
        "received data differs from what was sent"
    );
    let sent = tx_console.wait_for("SENT", std::time::Duration::from_secs(30));
    assert_eq!(sent.as_deref().map(str::trim), Some("SENT 0"));
    let new = d.switch_pid().expect("the daemon restarted the switch");
    assert_ne!(new, old, "the switch was not replaced");
    // The receiver (still running; the sender powered off after its script) is attached
    // to the new switch.
    let lan = c.show_network(None, "lan").unwrap();
    let rx_port = lan.ports.iter().find(|p| p.vm == "rx").expect("rx port");
    assert!(rx_port.connected, "{rx_port:?}");
}

/// Bad network requests are refused naming the field, and leave nothing behind: no
/// network record, no uplink device.
#[test]
fn bad_network_requests_name_the_field_and_leave_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(
        Path::new(env!("CARGO_BIN_EXE_hostel")),
        empty.path(),
        "badnet",
    );
    let c = new_tenant(&d, "acme");
    let base = CreateNetwork {
        name: "lan".into(),
        subnet: "10.9.0.0/24".into(),
        gateway: None,
        uplink: true,
        subnet6: None,
    };
    let cases = [
        (
            CreateNetwork {
                subnet: "10.9.0.0/33".into(),
                ..base.clone()
            },
            "subnet",
        ),
        (
            CreateNetwork {
                gateway: Some("10.8.0.1".into()),
                ..base.clone()
            },
            "gateway4",
        ),
        (
            CreateNetwork {
                subnet6: Some("fd00:9::/48".into()),
                ..base.clone()
            },
            "subnet6",
        ),
        (
            CreateNetwork {
                subnet6: Some("fe80::/64".into()),
                ..base.clone()
            },
            "subnet6",
        ),
        (
            CreateNetwork {
                name: "no spaces".into(),
                ..base.clone()
            },
            "name",
        ),
    ];
    for (req, field) in cases {
        match c.create_network(None, &req) {
            Err(hostel_api::ClientError::Api {
                status, field: f, ..
            }) => assert_eq!((status, f.as_deref()), (400, Some(field)), "{req:?}"),
            other => panic!("{req:?} was not refused: {other:?}"),
        }
    }
    assert!(c.list_networks(None).unwrap().is_empty());
    let made = c.create_network(None, &base).unwrap();
    assert_eq!(made.subnet6, None);
    let ifname = made.uplink.expect("uplink").interface;
    let _guard = LinkGuard(ifname.clone());
    assert!(link_exists(None, &ifname), "no uplink device {ifname}");
    c.delete_network(None, "lan").unwrap();
    assert!(
        link_gone_soon(None, &ifname),
        "the uplink device outlived its network"
    );
}

fn link_exists(netns: Option<&str>, ifname: &str) -> bool {
    let mut cmd = std::process::Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["link", "show", ifname])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The switch closes a removed uplink once no datapath thread holds the old tables, which
/// is promptly but not synchronously with the API call.
fn link_gone_soon(netns: Option<&str>, ifname: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while link_exists(netns, ifname) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}
