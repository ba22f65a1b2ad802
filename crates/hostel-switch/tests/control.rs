//! The control protocol end to end: `run()` serving JSON lines on a Unix socket.

use std::path::Path;
use std::time::{Duration, Instant};

use hostel_switch::control::{Client, Request};
use hostel_switch::{
    run, NetworkConfig, PortConfig, PortLimits, RateLimit, RunOptions, SwitchConfig,
};

fn connect(path: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(path) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("control socket never came up: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn network(id: &str) -> NetworkConfig {
    NetworkConfig {
        id: id.into(),
        subnet4: Some("10.1.0.0/24".parse().unwrap()),
        gateway4: Some("10.1.0.1".parse().unwrap()),
        subnet6: None,
        gateway6: None,
        gateway_mac: "02:00:00:00:00:01".parse().unwrap(),
        uplink: None,
        dns: vec![],
        mtu: 0,
    }
}

#[test]
fn control_socket_programs_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl.sock");
    let opts = RunOptions {
        control_socket: ctl.clone(),
        config: None,
    };
    let server = std::thread::spawn(move || run(opts));
    let mut c = connect(&ctl);

    let r = c
        .call(&Request::AddNetwork {
            network: network("n1"),
        })
        .unwrap();
    assert!(r.ok, "{r:?}");
    let port = PortConfig {
        id: "vm1-0".into(),
        network: "n1".into(),
        mac: "52:54:00:12:34:56".parse().unwrap(),
        ipv4: Some("10.1.0.5".parse().unwrap()),
        ipv6: vec![],
        socket: dir.path().join("vm1-0.sock"),
        limits: Default::default(),
        kind: Default::default(),
    };
    assert!(c.call(&Request::AddPort { port: port.clone() }).unwrap().ok);
    assert!(dir.path().join("vm1-0.sock").exists());

    // Conflicts are refused without side effects.
    let mut dup = port.clone();
    dup.id = "vm2-0".into();
    dup.socket = dir.path().join("vm2-0.sock");
    let r = c.call(&Request::AddPort { port: dup }).unwrap();
    assert!(!r.ok && r.error.unwrap().contains("already used"));
    let r = c.call(&Request::RemoveNetwork { id: "n1".into() }).unwrap();
    assert!(!r.ok);

    let r = c.call(&Request::Stats).unwrap();
    let stats = r.stats.unwrap();
    assert!(!stats.ports["vm1-0"].connected);

    let cfg = c.call(&Request::ShowConfig).unwrap().config.unwrap();
    assert_eq!(cfg.ports, vec![port.clone()]);

    // A daemon re-sending its tables after a restart: apply replaces everything.
    let replacement = SwitchConfig {
        networks: vec![network("n2")],
        ports: vec![PortConfig {
            network: "n2".into(),
            ..port.clone()
        }],
        policies: vec![],
        external: None,
    };
    assert!(
        c.call(&Request::Apply {
            config: replacement.clone()
        })
        .unwrap()
        .ok
    );
    let cfg = c.call(&Request::ShowConfig).unwrap().config.unwrap();
    assert_eq!(cfg, replacement);

    assert!(
        c.call(&Request::RemovePort { id: "vm1-0".into() })
            .unwrap()
            .ok
    );
    assert!(!dir.path().join("vm1-0.sock").exists());

    let mut raw = connect(&ctl);
    let bad = raw.call_raw("{\"op\":\"frobnicate\"}").unwrap();
    assert!(bad.contains("\"ok\":false"), "{bad}");

    limits_travel_over_the_socket(&mut c, &mut raw, dir.path());
    policies_travel_over_the_socket(&mut c, &mut raw, dir.path());

    assert!(c.call(&Request::Shutdown).unwrap().ok);
    server.join().unwrap().unwrap();
}

/// Limits ride on `add_port`, `set_limits` and `apply`; old configs without them still parse;
/// a misspelt or zero limit is refused with the field's name and changes nothing.
fn limits_travel_over_the_socket(c: &mut Client, raw: &mut Client, dir: &Path) {
    let sock = dir.join("vm3-0.sock");
    let old_style = format!(
        r#"{{"op":"add_port","port":{{"id":"vm3-0","network":"n2","mac":"52:54:00:00:00:33",
        "ipv4":"10.1.0.33","socket":{sock:?}}}}}"#
    )
    .replace('\n', "");
    let r = raw.call_raw(&old_style).unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    let shown = |c: &mut Client| {
        let cfg = c.call(&Request::ShowConfig).unwrap().config.unwrap();
        cfg.ports.into_iter().find(|p| p.id == "vm3-0").unwrap()
    };
    assert_eq!(shown(c).limits, PortLimits::default());

    let set = r#"{"op":"set_limits","id":"vm3-0","limits":{"flood":{"packets_per_sec":50,"burst_packets":5},"total":{"bytes_per_sec":1000000}}}"#;
    let r = raw.call_raw(set).unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    let want = PortLimits {
        flood: RateLimit {
            packets_per_sec: Some(50),
            burst_packets: Some(5),
            ..Default::default()
        },
        total: RateLimit {
            bytes_per_sec: Some(1_000_000),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(shown(c).limits, want);

    let typo = r#"{"op":"set_limits","id":"vm3-0","limits":{"flood":{"packets_per_second":1}}}"#;
    let r = raw.call_raw(typo).unwrap();
    assert!(
        r.contains("\"ok\":false") && r.contains("packets_per_second"),
        "{r}"
    );
    let zero = r#"{"op":"set_limits","id":"vm3-0","limits":{"unknown":{"packets_per_sec":0}}}"#;
    let r = raw.call_raw(zero).unwrap();
    assert!(
        r.contains("\"ok\":false") && r.contains("limits.unknown.packets_per_sec"),
        "{r}"
    );
    assert_eq!(shown(c).limits, want);
    assert!(
        c.call(&Request::RemovePort { id: "vm3-0".into() })
            .unwrap()
            .ok
    );
}

/// `set_policies` swaps every policy at once and shows in `show_config`; a policy with a
/// misspelt field or naming a missing port is refused and changes nothing.
fn policies_travel_over_the_socket(c: &mut Client, raw: &mut Client, dir: &Path) {
    let sock = dir.join("ids.sock");
    let ids = format!(
        r#"{{"op":"add_port","port":{{"id":"ids","network":"n2","mac":"52:54:00:00:00:99","ipv4":null,"socket":{sock:?}}}}}"#
    );
    let r = raw.call_raw(&ids).unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    let set = r#"{"op":"set_policies","policies":[{"id":"no-ssh","scope":{"network":"n2"},"rules":[{"protocol":6,"dst_ports":[22,22],"action":"drop"},{"action":{"mirror":"ids"}}]}]}"#;
    let r = raw.call_raw(set).unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    let mut shown = || {
        c.call(&Request::ShowConfig)
            .unwrap()
            .config
            .unwrap()
            .policies
    };
    let now = shown();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].rules[0].dst_ports, Some((22, 22)));
    let typo = r#"{"op":"set_policies","policies":[{"id":"x","scope":{"network":"n2"},"rules":[{"dst_port":[1,1],"action":"drop"}]}]}"#;
    let r = raw.call_raw(typo).unwrap();
    assert!(r.contains("\"ok\":false") && r.contains("dst_port"), "{r}");
    let orphan =
        r#"{"op":"set_policies","policies":[{"id":"x","scope":{"port":"vm9-9"},"rules":[]}]}"#;
    let r = raw.call_raw(orphan).unwrap();
    assert!(r.contains("\"ok\":false") && r.contains("vm9-9"), "{r}");
    assert_eq!(shown(), now);
    let r = raw.call_raw(r#"{"op":"remove_port","id":"ids"}"#).unwrap();
    assert!(r.contains("\"ok\":false") && r.contains("no-ssh"), "{r}");
    let r = raw
        .call_raw(r#"{"op":"set_policies","policies":[]}"#)
        .unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
    let r = raw.call_raw(r#"{"op":"remove_port","id":"ids"}"#).unwrap();
    assert!(r.contains("\"ok\":true"), "{r}");
}
