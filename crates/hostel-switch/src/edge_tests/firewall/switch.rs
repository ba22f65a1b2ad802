//! The firewall through the switch's control protocol: rules in `apply` and `set_firewall`,
//! refused when invalid (naming the field), counters in `stats`, the log, and a restart.

use super::*;
use crate::control::{handle, Request};
use std::sync::atomic::AtomicBool;

fn firewalled_switch() -> Arc<crate::Switch> {
    crate::Switch::with_edge_filters(
        Pipeline::new(),
        crate::datapath::firewall::firewall_filters(),
    )
}

#[test]
fn rules_come_through_the_control_protocol_and_back_after_a_restart() {
    let net = match Internet::new() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let sw = firewalled_switch();
    let cfg = crate::SwitchConfig {
        networks: fw_networks(),
        ports: vec![],
        policies: vec![],
        external: Some(fw_external_cfg(&net.nic)),
    };
    sw.apply(&cfg).unwrap();
    let stop = AtomicBool::new(false);
    let fw = |sw: &crate::Switch| sw.stats().firewalls["t1"].clone();
    assert_eq!(fw(&sw).generation, 1);
    assert_eq!(fw(&sw).conntrack_limit, 65_536);

    // A bad rule (port 70000) is refused naming the field; nothing changes.
    let mut bad = policy1();
    bad.rules[0].destination_ports = vec![hostel_switch_proto::firewall::PortSpec::One(70_000)];
    let r = handle(
        &sw,
        Request::SetFirewall {
            tenant: "t1".into(),
            policy: bad.clone(),
        },
        &stop,
    );
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(e.contains("edges[0].policy.destination_ports"), "{e}");
    assert_eq!(sw.config(), cfg);
    assert_eq!(fw(&sw).generation, 1);
    // ... and so is the same rule in a whole configuration.
    let mut bad_cfg = cfg.clone();
    bad_cfg.external.as_mut().unwrap().edges[0].policy = bad;
    let e = sw.apply(&bad_cfg).unwrap_err().to_string();
    assert!(e.contains("edges[0].policy.destination_ports"), "{e}");
    assert_eq!(sw.config(), cfg);
    // An unknown tenant is refused.
    let r = handle(
        &sw,
        Request::SetFirewall {
            tenant: "nobody".into(),
            policy: policy2(),
        },
        &stop,
    );
    assert!(!r.ok);

    // A good rule set is swapped in (generation 2) and is what the config now says.
    let r = handle(
        &sw,
        Request::SetFirewall {
            tenant: "t1".into(),
            policy: policy2(),
        },
        &stop,
    );
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(fw(&sw).generation, 2);
    let rules: Vec<_> = fw(&sw).rules.iter().filter_map(|r| r.rule).collect();
    assert_eq!(rules, [1]);
    let now = sw.config();
    assert_eq!(now.external.as_ref().unwrap().edges[0].policy, policy2());
    // `apply` of the same configuration keeps the firewall (no new generation); a rule
    // change through `apply` swaps the rules in place (generation 3, same table).
    sw.apply(&now).unwrap();
    assert_eq!(fw(&sw).generation, 2);
    sw.apply(&cfg).unwrap();
    assert_eq!(fw(&sw).generation, 3);

    let r = handle(
        &sw,
        Request::FirewallLog {
            tenant: "t1".into(),
        },
        &stop,
    );
    assert_eq!(r.log.as_deref(), Some(&[][..]));
    let r = handle(
        &sw,
        Request::FirewallLog {
            tenant: "nobody".into(),
        },
        &stop,
    );
    assert!(!r.ok);

    // A restart: a new switch given the same configuration has the rules at once.
    let saved = sw.config();
    sw.shutdown();
    drop(sw);
    let sw2 = firewalled_switch();
    sw2.apply(&saved).unwrap();
    let f = fw(&sw2);
    let mut ids: Vec<_> = f.rules.iter().filter_map(|r| r.rule).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(f.generation, 1);
    sw2.shutdown();
}
