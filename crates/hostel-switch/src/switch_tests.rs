//! Control-plane behaviour that needs the switch's private state: which changes keep a
//! guest connected, and how policies travel with the ports they name.

use crate::config::{PortLimits, RateLimit, SwitchConfig};
use crate::datapath::flow_tests::{Vm, ALL};
use crate::datapath::tests::{net, port};
use crate::switch::Switch;

/// A switch with one network and port "a2" whose runtime looks connected (its RX target
/// is a test VM's ring), as after a guest's vhost-user handshake.
fn connected_switch(dir: &std::path::Path) -> (std::sync::Arc<Switch>, SwitchConfig, Vm) {
    let sw = Switch::new();
    let mut p = port("a2", "a", 2);
    p.socket = dir.join("a2.sock");
    let cfg = SwitchConfig {
        networks: vec![net("a", false)],
        ports: vec![p],
        policies: vec![],
        external: None,
    };
    sw.apply(&cfg).unwrap();
    let vm = Vm::new("guest", ALL);
    sw.state().runtimes["a2"].set_rx(vm.rt.rx());
    assert!(sw.stats().ports["a2"].connected);
    (sw, cfg, vm)
}

#[test]
fn changing_limits_through_apply_keeps_the_guest_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (sw, mut cfg, _vm) = connected_switch(dir.path());
    cfg.ports[0].limits = PortLimits {
        flood: RateLimit {
            packets_per_sec: Some(100),
            ..Default::default()
        },
        ..Default::default()
    };
    sw.apply(&cfg).unwrap();
    assert!(
        sw.stats().ports["a2"].connected,
        "a limit change reconnected the port"
    );
    assert_eq!(sw.config(), cfg);
    let t = sw.core.tables();
    let pi = t.port_by_id("a2").unwrap();
    assert_eq!(t.port(pi).cfg.limits, cfg.ports[0].limits);
    // Any other change still rebuilds the port.
    cfg.ports[0].ipv4 = Some("10.0.0.9".parse().unwrap());
    sw.apply(&cfg).unwrap();
    assert!(!sw.stats().ports["a2"].connected);
    sw.shutdown();
}

#[test]
fn invalid_limits_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sw, cfg, _vm) = connected_switch(dir.path());
    let mut bad = cfg.clone();
    bad.ports[0].limits.unknown.bytes_per_sec = Some(0);
    let err = sw.apply(&bad).unwrap_err().to_string();
    assert!(err.contains("limits.unknown.bytes_per_sec"), "{err}");
    let err = sw
        .set_port_limits("a2", bad.ports[0].limits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.unknown.bytes_per_sec"), "{err}");
    assert_eq!(sw.config(), cfg);
    assert!(sw.stats().ports["a2"].connected);
    sw.shutdown();
}

fn mirror_policy(to: &str) -> crate::policy::PolicyConfig {
    crate::policy::PolicyConfig {
        id: "ids".into(),
        scope: crate::policy::PolicyScope {
            network: Some("a".into()),
            port: None,
        },
        rules: vec![crate::policy::RuleConfig {
            ethertype: None,
            protocol: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: crate::policy::Action::Mirror(to.into()),
        }],
    }
}

#[test]
fn policies_arrive_with_the_ports_they_name_and_are_swapped_with_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (sw, mut cfg, _vm) = connected_switch(dir.path());
    // One apply adds the mirror port and the policy naming it: neither is refused for
    // the other not being there yet.
    let mut ids = port("a9", "a", 9);
    ids.socket = dir.path().join("a9.sock");
    cfg.ports.push(ids);
    cfg.policies.push(mirror_policy("a9"));
    sw.apply(&cfg).unwrap();
    assert_eq!(sw.config(), cfg);
    assert!(sw.core.tables().has_policies());
    assert!(
        sw.stats().ports["a2"].connected,
        "adding a policy reconnected a port"
    );

    // A port a policy needs cannot be pulled from under it.
    let err = sw.remove_port("a9").unwrap_err().to_string();
    assert!(
        err.contains("policy \"ids\"") && err.contains("a9"),
        "{err}"
    );
    let err = sw
        .set_policies(vec![mirror_policy("a7")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("mirror port \"a7\" not found"), "{err}");
    assert_eq!(sw.config(), cfg, "a refused policy set changed something");

    // A change of policies alone, through apply, is one table swap too.
    cfg.policies.clear();
    sw.apply(&cfg).unwrap();
    assert!(!sw.core.tables().has_policies());
    assert!(sw.stats().ports["a2"].connected);
    sw.set_policies(vec![mirror_policy("a9")]).unwrap();
    assert!(sw.core.tables().has_policies());
    sw.set_policies(vec![]).unwrap();
    assert!(!sw.core.tables().has_policies());
    sw.remove_port("a9").unwrap();
    sw.shutdown();
}
