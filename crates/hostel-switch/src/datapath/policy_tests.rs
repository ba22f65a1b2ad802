//! Policy stages over real rings: they judge VM-to-VM traffic (which the old uplink hooks
//! never saw), a mirror port gets copies while delivery is unchanged, and policies come and
//! go with the tables they were compiled into.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::SwitchConfig;
use crate::datapath::flow_tests::{ip, mac, Vm, ALL};
use crate::datapath::pipeline::{Ctx, Decision, Ingress, LocalReply, Pipeline};
use crate::datapath::port::PortRuntime;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::error::ConfigError;
use crate::packet::parse::tests::udp4;
use crate::policy::{Action, PolicyConfig, PolicyScope, RuleConfig};
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;

fn rule(action: Action) -> RuleConfig {
    RuleConfig {
        ethertype: None,
        protocol: None,
        src: None,
        dst: None,
        src_ports: None,
        dst_ports: None,
        action,
    }
}

fn on_network(id: &str, rules: Vec<RuleConfig>) -> PolicyConfig {
    PolicyConfig {
        id: id.into(),
        scope: PolicyScope {
            network: Some("a".into()),
            port: None,
        },
        rules,
    }
}

fn on_port(id: &str, port: &str, rules: Vec<RuleConfig>) -> PolicyConfig {
    PolicyConfig {
        id: id.into(),
        scope: PolicyScope {
            network: None,
            port: Some(port.into()),
        },
        rules,
    }
}

/// Ports a2, a3 and the IDS port a9 in network "a", tables compiled with `policies`.
fn tables(vms: &[&Vm], policies: &[PolicyConfig]) -> Result<Tables, ConfigError> {
    let rts: HashMap<String, Arc<PortRuntime>> = vms
        .iter()
        .map(|v| (v.rt.id.clone(), v.rt.clone()))
        .collect();
    let ports: Vec<_> = vms
        .iter()
        .map(|v| {
            let last = v.rt.id[1..].parse().unwrap();
            port(&v.rt.id, "a", last)
        })
        .collect();
    Tables::build(&[net("a", false)], &ports, |p| rts[&p.id].clone(), |_| None)?
        .with_policies(policies, false)
}

fn udp(from: u8, to: u8, dport: u16) -> Vec<u8> {
    let mut f = udp4(mac(from), mac(to), ip(from), ip(to), b"payload");
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

#[test]
fn a_mirror_port_gets_copies_of_vm_to_vm_frames_while_delivery_is_unchanged() {
    let (mut a, mut b, mut ids) = (Vm::new("a2", ALL), Vm::new("a3", ALL), Vm::new("a9", ALL));
    b.post_rx(16, 2048);
    ids.post_rx(16, 2048);
    let mirror = on_network(
        "ids",
        vec![RuleConfig {
            protocol: Some(17),
            ..rule(Action::Mirror("a9".into()))
        }],
    );
    let core = Core::new(Pipeline::new());
    core.publish(tables(&[&a, &b, &ids], &[mirror]).unwrap());
    let f = udp(2, 3, 80);
    for _ in 0..3 {
        a.queue_tx(VnetHdr::default(), &f, 2);
    }
    a.run_tx(&core);
    let got: Vec<_> = b.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, vec![f.clone(); 3], "delivery changed by the mirror");
    let copies: Vec<_> = ids.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(
        copies,
        vec![f.clone(); 3],
        "the mirror missed VM-to-VM frames"
    );
    let sa = a.rt.stats.snapshot();
    assert_eq!((sa.tx_packets, sa.drops.len()), (3, 0), "{sa:?}");

    // A broadcast reaches the mirror port once, not twice.
    let bcast = udp4(mac(2), MacAddr::BROADCAST, ip(2), ip(255), b"all");
    a.queue_tx(VnetHdr::default(), &bcast, 1);
    a.run_tx(&core);
    assert_eq!(b.received().len(), 1);
    assert_eq!(ids.received().len(), 1, "the mirror got a flood twice");

    // Policies go with the tables: a swap without them stops the copies at once.
    core.publish(tables(&[&a, &b, &ids], &[]).unwrap());
    a.queue_tx(VnetHdr::default(), &f, 1);
    a.run_tx(&core);
    assert_eq!(b.received().len(), 1);
    assert!(
        ids.received().is_empty(),
        "copy after the policy was removed"
    );
}

#[test]
fn a_mirror_without_room_costs_the_mirror_not_the_sender() {
    let (mut a, mut b, ids) = (Vm::new("a2", ALL), Vm::new("a3", ALL), Vm::new("a9", ALL));
    b.post_rx(4, 2048);
    let mirror = on_network("ids", vec![rule(Action::Mirror("a9".into()))]);
    let core = Core::new(Pipeline::new());
    core.publish(tables(&[&a, &b, &ids], &[mirror]).unwrap());
    a.queue_tx(VnetHdr::default(), &udp(2, 3, 80), 1);
    a.run_tx(&core);
    assert_eq!(b.received().len(), 1);
    assert!(a.rt.stats.snapshot().drops.is_empty());
    assert_eq!(ids.rt.stats.drops(DropReason::NoRxBuffer), 1);
}

#[test]
fn drop_rules_judge_vm_to_vm_traffic_and_count_their_drops() {
    let (mut a, mut b, mut c) = (Vm::new("a2", ALL), Vm::new("a3", ALL), Vm::new("a4", ALL));
    b.post_rx(16, 2048);
    c.post_rx(16, 2048);
    // On a3 (the receiver): no UDP to ports 50..=60. Then a pass rule that ends the policy
    // before its catch-all drop, for port 80 only.
    let guard = on_port(
        "a3-in",
        "a3",
        vec![
            RuleConfig {
                protocol: Some(17),
                dst_ports: Some((50, 60)),
                ..rule(Action::Drop)
            },
            RuleConfig {
                dst_ports: Some((80, 80)),
                ..rule(Action::Pass)
            },
            RuleConfig {
                dst: Some(crate::policy::IpCidr::V4("10.0.0.3/32".parse().unwrap())),
                ..rule(Action::Drop)
            },
        ],
    );
    let core = Core::new(Pipeline::new());
    core.publish(tables(&[&a, &b, &c], &[guard]).unwrap());
    for (to, port) in [(3, 53), (3, 80), (3, 443), (4, 53)] {
        a.queue_tx(VnetHdr::default(), &udp(2, to, port), 1);
    }
    a.run_tx(&core);
    let to_b: Vec<_> = b.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(to_b, vec![udp(2, 3, 80)]);
    assert_eq!(c.received().len(), 1, "a policy of a3 judged traffic to a4");
    assert_eq!(a.rt.stats.drops(DropReason::Filtered), 2);
}

#[test]
fn the_stage_sees_uplink_and_flood_traffic_but_not_what_the_switch_answers() {
    let vms = [Vm::new("a2", ALL), Vm::new("a3", ALL)];
    let deny = on_network("deny", vec![rule(Action::Drop)]);
    let rts: HashMap<String, Arc<PortRuntime>> = vms
        .iter()
        .map(|v| (v.rt.id.clone(), v.rt.clone()))
        .collect();
    let t = Tables::build(
        &[net("a", true)],
        &[port("a2", "a", 2), port("a3", "a", 3)],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap()
    .with_policies(&[deny], false)
    .unwrap();
    let pl = Pipeline::new();
    let run = |ingress, f: &[u8]| pl.classify(&mut Ctx::new(&t, ingress, f, f.len()));
    let a2 = Ingress::Port(t.port_by_id("a2").unwrap());
    let filtered = Decision::Drop(DropReason::Filtered);
    let gw = MacAddr([2, 0, 0, 0, 0, 1]);
    let out = udp4(mac(2), gw, ip(2), std::net::Ipv4Addr::new(8, 8, 8, 8), b"x");
    assert_eq!(run(a2, &out), filtered);
    let bcast = udp4(mac(2), MacAddr::BROADCAST, ip(2), ip(255), b"x");
    assert_eq!(run(a2, &bcast), filtered);
    let inbound = udp4(gw, mac(3), std::net::Ipv4Addr::new(8, 8, 8, 8), ip(3), b"x");
    assert_eq!(run(Ingress::Uplink(0), &inbound), filtered);
    // The switch's own ARP service is not forwarding: the policy does not see it.
    let mut arp = vec![0u8; 42];
    arp[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    arp[6..12].copy_from_slice(&mac(2).0);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&mac(2).0);
    arp[28..32].copy_from_slice(&ip(2).octets());
    arp[38..42].copy_from_slice(&ip(3).octets());
    assert_eq!(
        run(a2, &arp),
        Decision::Local(LocalReply::Arp { answer: mac(3) })
    );
}

#[test]
fn bad_policies_are_refused_with_the_field_named() {
    let vms = [Vm::new("a2", ALL), Vm::new("a3", ALL)];
    let refs: Vec<&Vm> = vms.iter().collect();
    let err = |p: PolicyConfig| tables(&refs, &[p]).err().map(|e| e.to_string());
    let e = err(on_network("m", vec![rule(Action::Mirror("nope".into()))]));
    assert!(e.unwrap().contains("mirror port \"nope\" not found"));
    let e = err(on_port("p", "a7", vec![rule(Action::Pass)]));
    assert!(e.unwrap().contains("port \"a7\" not found"));
    let backwards = RuleConfig {
        dst_ports: Some((90, 80)),
        ..rule(Action::Drop)
    };
    assert!(err(on_network("r", vec![backwards]))
        .unwrap()
        .contains("dst_ports"));
    let mut both = on_network("s", vec![]);
    both.scope.port = Some("a2".into());
    assert!(err(both).unwrap().contains("exactly one"));
    let many = on_network("n", vec![rule(Action::Pass); crate::policy::MAX_RULES + 1]);
    assert!(err(many).unwrap().contains("more than"));

    let typo = r#"{"id":"x","scope":{"network":"a"},"rules":[{"dst_port":[1,2],"action":"drop"}]}"#;
    assert!(serde_json::from_str::<PolicyConfig>(typo).is_err());
}

#[test]
fn configs_without_kinds_or_policies_still_parse_and_new_ones_round_trip() {
    let old = r#"{"networks":[],"ports":[{"id":"p","network":"a","mac":"52:54:00:00:00:02",
        "ipv4":"10.0.0.2","socket":"/run/p.sock"}]}"#;
    let c: SwitchConfig = serde_json::from_str(old).unwrap();
    assert!(c.ports[0].kind.is_vhost_user() && c.policies.is_empty());
    let new = r#"{"ports":[{"id":"c","network":"a","mac":"52:54:00:00:00:05","ipv4":null,
        "kind":{"tap":{"device":"ctr0"}}}],
        "policies":[{"id":"x","scope":{"port":"c"},"rules":[
          {"protocol":6,"dst":"10.0.0.0/24","dst_ports":[22,22],"action":"drop"},
          {"action":{"mirror":"ids"}}]}]}"#;
    let c: SwitchConfig = serde_json::from_str(new).unwrap();
    assert_eq!(
        c.ports[0].kind,
        crate::config::PortKind::Tap {
            device: "ctr0".into()
        }
    );
    assert_eq!(c.policies[0].rules[1].action, Action::Mirror("ids".into()));
    let again: SwitchConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}
