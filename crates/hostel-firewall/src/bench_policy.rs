//! Rule sets for the benchmarks (`bench-firewall`, and the switch's `bench-edge`): `n` rules
//! of mixed shapes that the benchmark traffic does not match, then one that allows it.

use crate::rule::{PortSpec, ProtocolSpec};
use crate::{Action, Direction, PolicySpec, RuleSpec};

/// A small deterministic generator (xorshift), so every run builds the same rules.
pub struct Rng(pub u64);
impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spec(id: u32, proto: &str) -> RuleSpec {
    RuleSpec {
        id,
        priority: 100,
        direction: Direction::Ingress,
        action: Action::Allow,
        protocol: ProtocolSpec::Name(proto.into()),
        source: vec![],
        destination: vec![],
        source_ports: vec![],
        destination_ports: vec![],
        icmp_type: None,
        icmp_code: None,
        scope: Default::default(),
        stateless: false,
        log: false,
    }
}

/// `n` rules of mixed shapes (CIDRs of both families, port ranges and lists, named sets, ICMP
/// types) that the benchmark traffic does not match, then the one rule it does, last.
pub fn policy(n: usize) -> PolicySpec {
    let mut rng = Rng(0x00c0_ffee);
    let mut p = PolicySpec::default();
    for s in 0..16 {
        let list = (0..8)
            .map(|k| format!("{}.{}.{}.0/24", 100 + s, k, rng.next() % 250))
            .collect();
        p.sets.insert(format!("set{s}"), list);
    }
    for i in 0..n as u32 {
        let mut r = match i % 4 {
            0 => {
                let mut r = spec(i, "tcp");
                let lo = (rng.next() % 60000) as u32;
                r.destination_ports = vec![
                    PortSpec::Range {
                        from: lo,
                        to: lo + 100,
                    },
                    PortSpec::One(lo + 500),
                ];
                r.source = vec![format!(
                    "172.{}.{}.0/24",
                    16 + rng.next() % 16,
                    rng.next() % 256
                )];
                r
            }
            1 => {
                let mut r = spec(i, "udp");
                r.source = vec![format!("set:set{}", rng.next() % 16)];
                r.destination_ports = vec![PortSpec::One((rng.next() % 65535) as u32)];
                r.action = Action::Drop;
                r
            }
            2 => {
                let mut r = spec(i, "tcp");
                r.source = vec![format!("2001:db8:{:x}::/48", rng.next() % 65536)];
                r.destination_ports = vec![PortSpec::Range {
                    from: 1000,
                    to: 2000,
                }];
                r
            }
            _ => {
                let mut r = spec(i, "icmp");
                r.icmp_type = Some((rng.next() % 16) as u32);
                r.source = vec![format!("198.18.{}.0/24", rng.next() % 256)];
                r
            }
        };
        r.priority = 10 + (i % 7);
        p.rules.push(r);
    }
    let mut last = spec(1_000_000, "tcp");
    last.priority = 1000;
    last.destination = vec!["10.0.0.0/16".into()];
    last.destination_ports = vec![PortSpec::Range { from: 80, to: 80 }];
    p.rules.push(last);
    p
}
