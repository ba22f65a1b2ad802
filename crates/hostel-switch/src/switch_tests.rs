//! Control-plane behaviour that needs the switch's private state: which changes keep a
//! guest connected.

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
