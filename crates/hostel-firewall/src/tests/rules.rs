//! Rule validation, evaluation order, the compiled classifier against the naive loop.

use super::build::*;
use crate::classify::{naive_first_match, Compiled, Key};
use crate::rule::{Action, PolicySpec, PortSpec, Problem, ProtocolSpec, Scope, Validate};
use crate::{DropReason, Verdict};

fn field_of(mut spec: PolicySpec) -> (Option<u32>, String, Problem) {
    spec.sets
        .insert("office".into(), vec!["198.51.100.0/24".into()]);
    let e = spec.validate().expect_err("must be refused");
    let msg = e.to_string();
    assert!(msg.contains(&e.field), "{msg}");
    (e.rule, e.field, e.problem)
}

#[test]
fn validation_names_the_field() {
    let mut r = rule(7, IN, Action::Allow, "tcp");
    r.destination_ports = vec![port(70000)];
    let (id, f, p) = field_of(policy(vec![r]));
    assert_eq!(
        (id, f.as_str(), p),
        (Some(7), "destination_ports", Problem::PortOutOfRange(70000))
    );

    let mut r = rule(1, IN, Action::Allow, "tcp");
    r.source = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()];
    let (_, f, p) = field_of(policy(vec![r]));
    assert_eq!((f.as_str(), p), ("source[1]", Problem::PrefixTooLong(33)));

    let r = RuleSpecExt::proto(
        rule(1, IN, Action::Allow, "any"),
        ProtocolSpec::Name("sctpx".into()),
    );
    let (_, f, p) = field_of(policy(vec![r]));
    assert_eq!(
        (f.as_str(), p),
        ("protocol", Problem::UnknownProtocol("sctpx".into()))
    );

    let r = RuleSpecExt::proto(rule(1, IN, Action::Allow, "any"), ProtocolSpec::Number(256));
    assert_eq!(field_of(policy(vec![r])).1, "protocol");

    let mut r = rule(1, IN, Action::Allow, "tcp");
    r.icmp_type = Some(8);
    assert_eq!(field_of(policy(vec![r])).2, Problem::IcmpOnNonIcmp);

    let mut r = rule(1, IN, Action::Allow, "icmp");
    r.destination_ports = vec![port(80)];
    let (_, f, p) = field_of(policy(vec![r]));
    assert_eq!(
        (f.as_str(), p),
        ("destination_ports", Problem::PortsOnPortless)
    );

    let mut r = rule(1, IN, Action::Allow, "udp");
    r.source_ports = vec![PortSpec::Range { from: 200, to: 100 }];
    let (_, f, p) = field_of(policy(vec![r]));
    assert_eq!(
        (f.as_str(), p),
        ("source_ports", Problem::EmptyRange { from: 200, to: 100 })
    );

    let mut r = rule(1, IN, Action::Allow, "any");
    r.destination = vec!["set:nope".into()];
    let (_, f, p) = field_of(policy(vec![r]));
    assert_eq!(
        (f.as_str(), p),
        ("destination[0]", Problem::UnknownSet("nope".into()))
    );

    let mut r = rule(1, IN, Action::Allow, "any");
    r.source = vec!["group:web".into()];
    assert_eq!(
        field_of(policy(vec![r])).2,
        Problem::UnknownGroup("web".into())
    );

    let mut r = rule(1, IN, Action::Allow, "any");
    r.scope = Scope::Nic("eth9".into());
    assert_eq!(field_of(policy(vec![r])).1, "scope");

    let mut r = rule(1, IN, Action::Allow, "icmp");
    r.icmp_code = Some(3);
    assert_eq!(field_of(policy(vec![r])).2, Problem::CodeWithoutType);

    let (id, f, _) = field_of(policy(vec![
        rule(4, IN, Action::Allow, "any"),
        rule(4, OUT, Action::Allow, "any"),
    ]));
    assert_eq!((id, f.as_str()), (Some(4), "id"));

    let mut spec = policy(vec![]);
    spec.sets.insert("bad".into(), vec!["1.2.3.4/40".into()]);
    assert_eq!(spec.validate().expect_err("bad set").field, "sets.bad[0]");
}

/// Builder helper: a rule with a protocol given as a spec.
trait RuleSpecExt {
    fn proto(self, p: ProtocolSpec) -> Self;
}
impl RuleSpecExt for crate::rule::RuleSpec {
    fn proto(mut self, p: ProtocolSpec) -> Self {
        self.protocol = p;
        self
    }
}

#[test]
fn model_roundtrips_through_json_with_defaults() {
    let json = r#"{"rules":[{"id":1,"direction":"ingress","action":"reject","protocol":"tcp",
        "destination_ports":[22,{"from":8000,"to":8080}],"source":["set:office","2001:db8::/32"],
        "log":true},{"id":2,"direction":"egress","action":"drop","protocol":47}],
        "sets":{"office":["198.51.100.0/24"]}}"#;
    let spec: PolicySpec = serde_json::from_str(json).expect("parses");
    assert_eq!(spec.default_ingress, crate::DefaultAction::Drop);
    assert_eq!(spec.default_egress, crate::DefaultAction::Allow);
    assert_eq!(spec.rules[0].priority, 1000);
    assert!(!spec.rules[0].stateless);
    let back: PolicySpec =
        serde_json::from_str(&serde_json::to_string(&spec).expect("serializes")).expect("parses");
    assert_eq!(back, spec);
    let p = spec.validate().expect("valid");
    assert_eq!(p.rules[1].protocol, Some(47));
    assert!(serde_json::from_str::<PolicySpec>(r#"{"rules":[],"bogus":1}"#).is_err());
}

#[test]
fn lowest_priority_then_id_first_match_wins() {
    let mut deny = rule(5, IN, Action::Drop, "tcp");
    deny.destination_ports = vec![port(22)];
    deny.priority = 10;
    let mut allow = rule(1, IN, Action::Allow, "tcp");
    allow.priority = 20;
    let mut allow_same_prio_higher_id = rule(9, IN, Action::Allow, "tcp");
    allow_same_prio_higher_id.priority = 10;
    let mut f = fw(vec![allow, deny, allow_same_prio_higher_id]);
    let (v, _) = run(&mut f, IN, tcp4("1.2.3.4", 999, "10.0.0.5", 22, 0x02), 0);
    assert_eq!(v, Verdict::Drop(DropReason::Rule));
    let (v, _) = run(&mut f, IN, tcp4("1.2.3.4", 999, "10.0.0.5", 80, 0x02), 0);
    assert_eq!(v, Verdict::Accept);
    let stats = f.rule_stats(IN);
    assert_eq!(stats[0].0, Some(5));
    assert_eq!(stats[0].1.packets, 1);
    assert_eq!(stats[1].0, Some(9), "same priority: lower id first");
    assert_eq!(stats[1].1.packets, 1);
    assert!(stats[0].1.bytes > 40);
    // No rule matches UDP: the ingress default (deny) decides.
    let (v, _) = run(&mut f, IN, udp4("1.2.3.4", 1, "10.0.0.5", 53), 0);
    assert_eq!(v, Verdict::Drop(DropReason::Default));
}

#[test]
fn sets_groups_icmp_type_and_nic_scope() {
    let mut spec = policy(vec![]);
    spec.sets.insert(
        "office".into(),
        vec!["198.51.100.0/24".into(), "2001:db8::/32".into()],
    );
    spec.groups.insert("web".into(), vec![rule_ip("10.0.0.5")]);
    spec.nics.insert("db0".into(), vec![rule_ip("10.0.0.9")]);
    let mut r1 = rule(1, IN, Action::Allow, "tcp");
    r1.source = vec!["set:office".into()];
    r1.destination = vec!["group:web".into()];
    let mut r2 = rule(2, IN, Action::Allow, "icmp");
    r2.icmp_type = Some(8);
    let mut r3 = rule(3, IN, Action::Drop, "any");
    r3.scope = Scope::Nic("db0".into());
    let mut r4 = rule(4, IN, Action::Allow, "any");
    r4.source = vec!["203.0.113.0/24".into()];
    spec.rules = vec![r1, r2, r3, r4];
    let mut f =
        crate::Firewall::new(crate::Config::default(), &spec, &Default::default()).expect("valid");
    let syn = 0x02;
    assert_eq!(
        run(&mut f, IN, tcp4("198.51.100.7", 1, "10.0.0.5", 443, syn), 0).0,
        Verdict::Accept
    );
    assert_eq!(
        run(&mut f, IN, tcp4("198.51.100.7", 1, "10.0.0.6", 443, syn), 0).0,
        Verdict::Drop(DropReason::Default),
        "not in the group"
    );
    assert_eq!(
        run(&mut f, IN, tcp6("2001:db8::1", 1, "fd00::5", 443, syn), 0).0,
        Verdict::Drop(DropReason::Default),
        "the group has no IPv6 address"
    );
    assert_eq!(
        run(&mut f, IN, echo4("192.0.2.1", "10.0.0.6", true, 1), 0).0,
        Verdict::Accept
    );
    assert_eq!(
        run(
            &mut f,
            IN,
            icmp4("192.0.2.1", "10.0.0.6", 13, 0, [0; 4], b""),
            0
        )
        .0,
        Verdict::Drop(DropReason::Default),
        "timestamp is not type 8"
    );
    // The NIC-scoped drop hits traffic to db0 only.
    assert_eq!(
        run(&mut f, IN, udp4("203.0.113.1", 1, "10.0.0.9", 5432), 0).0,
        Verdict::Drop(DropReason::Rule)
    );
    assert_eq!(
        run(&mut f, IN, udp4("203.0.113.1", 1, "10.0.0.8", 5432), 0).0,
        Verdict::Accept
    );
}

fn rule_ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("test address")
}

/// A tiny deterministic generator (no dependency needed for a property loop).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn compiled_classifier_equals_the_naive_loop() {
    let mut rng = Rng(0x5eed_1234_abcd);
    let addrs = [
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3",
        "192.0.2.0/24",
        "0.0.0.0/0",
        "fd00::/8",
        "fd00::5",
    ];
    for round in 0..60 {
        let n = 1 + rng.below(150) as u32;
        let mut rules = Vec::new();
        for id in 0..n {
            let d = if rng.below(2) == 0 { IN } else { OUT };
            let proto = ["tcp", "udp", "icmp", "any", "icmpv6"][rng.below(5) as usize];
            let mut r = rule(id, d, Action::Allow, proto);
            r.action = [Action::Allow, Action::Drop, Action::Reject][rng.below(3) as usize];
            r.priority = rng.below(5) as u32;
            if rng.below(2) == 0 {
                r.source = vec![addrs[rng.below(7) as usize].into()];
            }
            if rng.below(3) == 0 {
                r.destination = vec![
                    addrs[rng.below(7) as usize].into(),
                    addrs[rng.below(7) as usize].into(),
                ];
            }
            if matches!(proto, "tcp" | "udp") && rng.below(2) == 0 {
                let lo = rng.below(100) as u32;
                r.destination_ports = vec![
                    PortSpec::Range {
                        from: lo,
                        to: lo + rng.below(20) as u32,
                    },
                    port(7),
                ];
            }
            if matches!(proto, "icmp" | "icmpv6") && rng.below(2) == 0 {
                r.icmp_type = Some(rng.below(10) as u32);
            }
            rules.push(r);
        }
        let p = policy(rules).validate().expect("generated rules are valid");
        let c = Compiled::new(&p);
        for _ in 0..400 {
            let v6 = rng.below(4) == 0;
            let pick = |rng: &mut Rng| -> u128 {
                if v6 {
                    if rng.below(2) == 0 {
                        0xfd00u128 << 112 | u128::from(rng.below(8) as u8)
                    } else {
                        u128::from(rng.next())
                    }
                } else {
                    [
                        0x0a01_0203u128,
                        0x0a00_0001,
                        0xc000_0205,
                        0x0b00_0000,
                        u128::from(rng.next() as u32),
                    ][rng.below(5) as usize]
                }
            };
            let k = Key {
                v6,
                proto: [6u8, 17, 1, 58, 47][rng.below(5) as usize],
                src: pick(&mut rng),
                dst: pick(&mut rng),
                local: 0,
                sport: rng.below(120) as u16,
                dport: rng.below(120) as u16,
            };
            for d in [IN, OUT] {
                let fast = c.dir(d).first_match(&k).map(|i| c.dir(d).rules[i].id);
                assert_eq!(
                    fast,
                    naive_first_match(&p, d, &k),
                    "round {round} key {k:?}"
                );
            }
        }
    }
}
