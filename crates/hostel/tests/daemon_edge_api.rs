//! Issue 15: the edge's API without guests. Bad input is a 4xx naming the field and stores
//! nothing (a port of 70000, a /33, an unknown protocol, an ICMP type on a TCP rule, a pool
//! outside the subnet); the public address quota holds; another tenant's floating address
//! is not found; attaching an attached address is a conflict naming it; the operator's
//! `external show` counts the pools' usage; and a daemon killed with -9 between steps comes
//! back with every acknowledged step and the switch programmed from them.
//!
//! The external interface is one end of a veth pair the test creates (needs root).

mod common;

use common::{daemon_without_guests, DaemonCli};
use hostel_api::{
    AddressView, AllocateAddress, AttachAddress, ExternalView, FirewallRuleBody, RuleAction,
    RuleDirection,
};
use hostel_testkit::{is_root, sh, which};

/// A veth pair whose one end is the external network's interface (nothing listens on the
/// other), deleted on drop.
struct Dummy(String);

impl Dummy {
    fn new() -> Dummy {
        let name = format!("hxd{}", std::process::id() % 100_000);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&format!(
            "ip link add {name} type veth peer name {name}p && \
             sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1 && \
             sysctl -qw net.ipv6.conf.{name}p.disable_ipv6=1 && \
             ip link set {name} up && ip link set {name}p up"
        ));
        Dummy(name)
    }
}

impl Drop for Dummy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

fn rule(proto: &str, port: &str) -> FirewallRuleBody {
    FirewallRuleBody {
        priority: None,
        direction: RuleDirection::Ingress,
        action: RuleAction::Allow,
        protocol: Some(proto.into()),
        source: vec![],
        destination: vec![],
        source_ports: vec![],
        destination_ports: vec![port.into()],
        icmp_type: None,
        icmp_code: None,
        vm: None,
        nic: None,
        stateless: false,
        log: false,
    }
}

fn field_of(e: hostel_api::ClientError) -> (u16, Option<String>, String) {
    match e {
        hostel_api::ClientError::Api {
            status,
            field,
            message,
            ..
        } => (status, field, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn bad_input_quotas_tenancy_and_a_daemon_kill_leave_nothing_half_made() {
    if !is_root() || !which("ip") {
        eprintln!("SKIPPED: needs root and `ip` (a veth pair for the external network)");
        return;
    }
    let nic = Dummy::new();
    let mut d = daemon_without_guests("edge-api");
    let op = d.client(&d.operator_token);

    // The external network: a pool outside the subnet is refused, naming it.
    let bad = d.op(&[
        "external",
        "set",
        "--interface",
        &nic.0,
        "--subnet",
        "203.0.113.0/24",
        "--gateway",
        "203.0.113.1",
        "--pool",
        "198.51.100.0/29",
    ]);
    bad.refused("pools[0]");
    let missing = d.op(&[
        "external",
        "set",
        "--interface",
        "no-such-nic9",
        "--subnet",
        "203.0.113.0/24",
        "--gateway",
        "203.0.113.1",
        "--pool",
        "203.0.113.8/30",
    ]);
    missing.refused("interface");
    assert_eq!(
        field_of(op.external().unwrap_err()).0,
        404,
        "nothing was stored"
    );
    let set = d.op(&[
        "external",
        "set",
        "--interface",
        &nic.0,
        "--subnet",
        "203.0.113.0/24",
        "--gateway",
        "203.0.113.1",
        "--pool",
        "203.0.113.8/29",
    ]);
    assert!(set.ok(), "{set:?}");

    let acme = d.tenant("acme", &["--max-public-addresses", "2"]);
    let other = d.tenant("other", &[]);
    let a = d.client(&acme.token);
    let o = d.client(&other.token);
    for (t, name) in [(&acme, "lan"), (&other, "lan")] {
        let out = t.cli(&[
            "network",
            "create",
            name,
            "--subnet",
            "10.9.0.0/24",
            "--external",
            "--snat",
        ]);
        assert!(out.ok(), "{}: {out:?}", t.name);
    }

    // Rules: each bad field named with a 400, nothing stored.
    let good = a.add_firewall_rule(None, &rule("tcp", "22")).unwrap();
    let mut icmp_on_tcp = rule("tcp", "22");
    icmp_on_tcp.icmp_type = Some(8);
    let mut cidr33 = rule("tcp", "22");
    cidr33.source = vec!["10.0.0.0/33".into()];
    for (body, field) in [
        (rule("tcp", "70000"), "destination_ports"),
        (rule("tcp", "http"), "destination_ports[0]"),
        (rule("bogus", "22"), "protocol"),
        (icmp_on_tcp, "icmp_type"),
        (cidr33, "source[0]"),
    ] {
        let (status, f, message) = field_of(a.add_firewall_rule(None, &body).unwrap_err());
        assert_eq!(status, 400, "{field}: {message}");
        assert_eq!(f.as_deref(), Some(field), "{message}");
    }
    let rules = a.list_firewall_rules(None).unwrap();
    assert_eq!(rules.len(), 1, "only the good rule is stored: {rules:?}");
    assert_eq!(rules[0].id, good.id);

    // Public addresses: the quota, another tenant's address, a double attach.
    let first = a
        .allocate_address(None, &AllocateAddress::default())
        .unwrap();
    a.allocate_address(None, &AllocateAddress::default())
        .unwrap();
    let (status, f, _) = field_of(
        a.allocate_address(None, &AllocateAddress::default())
            .unwrap_err(),
    );
    assert_eq!((status, f.as_deref()), (409, Some("public_addresses")));
    let mine = a.list_addresses(None).unwrap();
    assert_eq!(
        mine.iter().filter(|x| x.kind == "floating").count(),
        2,
        "{mine:?}"
    );
    let (status, _, _) = field_of(o.release_address(None, &first.address).unwrap_err());
    assert_eq!(status, 404, "another tenant's address is not found");
    let (status, _, _) = field_of(
        o.allocate_address(
            None,
            &AllocateAddress {
                address: Some(first.address.clone()),
            },
        )
        .unwrap_err(),
    );
    assert_eq!(status, 409, "a held address cannot be taken");

    // A VM to attach to (never started: no guest needed).
    let vm = acme.cli(&["vm", "create", "web", "--no-start", "--network", "lan"]);
    assert!(vm.ok(), "{vm:?}");
    let attach = AttachAddress {
        vm: "web".into(),
        nic: 0,
    };
    let (status, _, _) = field_of(o.attach_address(None, &first.address, &attach).unwrap_err());
    assert_eq!(status, 404, "another tenant cannot attach it");
    let attached: AddressView = a.attach_address(None, &first.address, &attach).unwrap();
    assert_eq!(attached.vm.as_deref(), Some("web"));
    assert!(attached.private.is_some());
    let (status, _, message) =
        field_of(a.attach_address(None, &first.address, &attach).unwrap_err());
    assert_eq!(status, 409);
    assert!(message.contains(&first.address), "names it: {message}");

    // A rule on one NIC, a set and a group: stored with their names, a bad set entry
    // named by its index, a set a rule uses cannot go.
    let mut on_web = rule("tcp", "80");
    on_web.vm = Some("web".into());
    on_web.source = vec!["set:office".into(), "group:app".into()];
    let (status, f, _) = field_of(a.add_firewall_rule(None, &on_web).unwrap_err());
    assert_eq!(
        (status, f.as_deref()),
        (400, Some("source[0]")),
        "no set yet"
    );
    let bad_set = acme.cli(&[
        "firewall",
        "set",
        "put",
        "office",
        "192.0.2.0/24",
        "10.0.0.0/33",
    ]);
    bad_set.refused("addresses[1]");
    assert!(acme
        .cli(&["firewall", "set", "put", "office", "192.0.2.0/24"])
        .ok());
    assert!(acme.cli(&["firewall", "group", "put", "app", "web"]).ok());
    let scoped = a.add_firewall_rule(None, &on_web).unwrap();
    assert_eq!((scoped.vm.as_deref(), scoped.nic), (Some("web"), Some(0)));
    let mut on_nic9 = on_web.clone();
    on_nic9.nic = Some(9);
    let (status, f, _) = field_of(a.add_firewall_rule(None, &on_nic9).unwrap_err());
    assert_eq!((status, f.as_deref()), (400, Some("nic")));
    acme.cli(&["firewall", "set", "delete", "office"])
        .refused("unknown address set");
    let fw = a.firewall(None).unwrap();
    assert_eq!(fw.sets.get("office").map(Vec::len), Some(1));
    assert_eq!(fw.groups.get("app").cloned(), Some(vec!["web".to_string()]));
    a.delete_firewall_rule(None, scoped.id).unwrap();
    assert!(acme.cli(&["firewall", "set", "delete", "office"]).ok());

    // Routed subnets come from the operator's routed pools only, one network each.
    assert!(d
        .op(&[
            "external",
            "set",
            "--interface",
            &nic.0,
            "--subnet",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
            "--pool",
            "203.0.113.8/29",
            "--routed-pool",
            "192.0.2.0/24",
        ])
        .ok());
    assert!(acme
        .cli(&["network", "create", "pub", "--subnet", "192.0.2.16/28"])
        .ok());
    assert!(acme
        .cli(&["network", "create", "far", "--subnet", "198.18.0.0/24"])
        .ok());
    acme.cli(&["network", "attach", "far", "--routed"])
        .refused("routed");
    assert!(acme.cli(&["network", "attach", "pub", "--routed"]).ok());
    assert!(other
        .cli(&["network", "create", "pub", "--subnet", "192.0.2.16/29"])
        .ok());
    other
        .cli(&["network", "attach", "pub", "--routed"])
        .refused("already routed");
    for (t, n) in [(&acme, "pub"), (&acme, "far"), (&other, "pub")] {
        assert!(t.cli(&["network", "delete", n]).ok());
    }

    let shown: ExternalView = op.external().unwrap();
    assert_eq!(shown.pool_size, 8, "203.0.113.8/29: {shown:?}");
    assert_eq!(
        shown.pool_used, 4,
        "two edges' own + two floating: {shown:?}"
    );
    assert_eq!(shown.edges.len(), 2);

    // Kill -9 between steps: everything acknowledged is there, the switch is programmed.
    d.kill9();
    d.respawn();
    let a = d.client(&acme.token);
    let after = a.list_addresses(None).unwrap();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after
        .iter()
        .any(|x| x.address == first.address && x.vm.as_deref() == Some("web")));
    assert_eq!(a.list_firewall_rules(None).unwrap().len(), 1);
    let edges = common::poll(
        "the edges in the switch",
        std::time::Duration::from_secs(20),
        || {
            let v = d.client(&d.operator_token).external().ok()?;
            (v.edges.iter().all(|e| e.conntrack_limit > 0) && v.edges.len() == 2).then_some(v)
        },
    );
    assert_eq!(edges.edges.len(), 2);

    // Detach, release, detach the network: the pools are whole again.
    a.detach_address(None, &first.address).unwrap();
    for x in a.list_addresses(None).unwrap() {
        if x.kind == "floating" {
            a.release_address(None, &x.address).unwrap();
        }
    }
    let out = acme.cli(&["vm", "delete", "web"]);
    assert!(out.ok(), "{out:?}");
    let out = acme.cli(&["network", "detach", "lan"]);
    assert!(out.ok(), "{out:?}");
    let v = d.client(&d.operator_token).external().unwrap();
    assert_eq!(
        v.pool_used, 1,
        "only the other tenant's edge holds one: {v:?}"
    );

    // The external interface goes away and the switch restarts: the tenants' networks come
    // back without the edge (the daemon applies them alone when the switch refuses the
    // external network), instead of every VM losing its network.
    drop(nic);
    let old = d.switch_pid().expect("a switch runs");
    // SAFETY: signalling the switch this test's daemon started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let sock = d.state_path().join("switch/control.sock");
    let config = common::poll(
        "a new switch with the networks",
        std::time::Duration::from_secs(30),
        || {
            if d.switch_pid() == Some(old) {
                return None;
            }
            let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
            use std::io::{BufRead, Write};
            s.write_all(b"{\"op\":\"show_config\"}\n").ok()?;
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line).ok()?;
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            let nets = v["config"]["networks"].as_array()?.len();
            (nets >= 1).then_some(v)
        },
    );
    assert!(
        config["config"]["external"].is_null(),
        "the external network cannot be up without its interface: {config}"
    );
    assert!(d.log().contains("applying the tenant networks without it"));
}
