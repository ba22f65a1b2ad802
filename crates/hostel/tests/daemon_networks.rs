//! Tenant networks through the daemon, with real guests on the daemon-managed switch: VMs of
//! one tenant reach each other at the addresses the switch handed out by DHCP; a tenant with
//! the same subnet cannot reach them.

use hostel_api::{Client, CreateNetwork, CreateTenant, CreateToken, CreateVm, NicRequest};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{guest_assets, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;

fn tenant_client(d: &TestDaemon, name: &str) -> Client {
    let op = Client::new(&d.url, Some(d.operator_token.clone()));
    op.create_tenant(&CreateTenant {
        name: name.into(),
        quota: None,
    })
    .unwrap();
    let tok = op.create_token(name, &CreateToken::default()).unwrap();
    let c = Client::new(&d.url, Some(tok.secret));
    c.create_network(
        None,
        &CreateNetwork {
            name: "lan".into(),
            subnet: "10.9.0.0/24".into(),
            gateway: None,
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

    let ping = "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; \
                if ping -c 2 -W 3 10.9.0.2 >/dev/null; then echo PING-OK; else echo PING-FAILED; fi";
    acme.vms(None).create(&vm("a2", None, Some(ping))).unwrap();
    let (exit, log) = console_until(&acme, "a2", "HOSTEL-EXIT");
    assert!(exit.is_some(), "a2 never finished: {log}");
    assert!(
        log.contains("inet 10.9.0.3"),
        "DHCP did not configure a2: {log}"
    );
    assert!(log.contains("PING-OK"), "a2 could not reach a1: {log}");

    // umbrella has the same subnet; 10.9.0.2 there is nobody (its VM is .3).
    umbrella
        .vms(None)
        .create(&vm("u1", Some("10.9.0.3"), Some(ping)))
        .unwrap();
    let (exit, log) = console_until(&umbrella, "u1", "HOSTEL-EXIT");
    assert!(exit.is_some(), "u1 never finished: {log}");
    assert!(
        log.contains("PING-FAILED"),
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
