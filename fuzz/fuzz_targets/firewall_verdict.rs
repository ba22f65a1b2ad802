//! The firewall on random datagrams against random rule sets: the switch's verdict (the
//! tenant edge's `FirewallFilter`, as the datapath calls it) for stateless rules must equal a
//! plain reference evaluator written here (a loop over the rules in order, matching
//! protocol, source and destination CIDRs, source and destination port ranges, ICMP type
//! and code), and random stateful sequences with address translation must never panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostel_firewall::nat::{FloatingIp, NatConfig, SnatNetwork};
use hostel_switch::datapath::edge::{EdgeFilter, EdgeVerdict};
use hostel_switch::datapath::firewall::FirewallFilter;
use hostel_switch::hostel_switch_proto::EdgeConfig;
use hostel_firewall::rule::{PortSpec, ProtocolSpec};
use hostel_firewall::{
    Action, Config, DefaultAction, Direction, DropReason, Firewall, PolicySpec, RuleSpec, Stage,
    Verdict,
};

/// Echo, router advertisement/solicitation, timestamp (v4); echo, MLD query (v6).
const ICMP_TYPES: [u8; 6] = [0, 8, 9, 13, 128, 130];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// What the reference evaluator knows of a rule (kept apart from the crate's compiled form).
struct Ref {
    id: u32,
    priority: u32,
    dir: Direction,
    action: Action,
    proto: Option<u8>,
    src: Option<(bool, u128, u8)>,
    dst: Option<(bool, u128, u8)>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
}

/// A few addresses so rules and packets meet often.
fn addr(b: &mut Bytes, v6: bool) -> u128 {
    let pick = b.u8();
    if v6 {
        (0xfd00u128 << 112) | u128::from(pick % 4) << 64 | u128::from(pick % 8)
    } else {
        u128::from(u32::from_be_bytes([10, pick % 3, 0, pick % 8]))
    }
}

fn to_ip(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

fn contains(c: (bool, u128, u8), v6: bool, a: u128) -> bool {
    let (cv6, base, prefix) = c;
    if cv6 != v6 {
        return false;
    }
    let bits = if v6 { 128 } else { 32 };
    let host = bits - u32::from(prefix);
    if host == 0 {
        return base == a;
    }
    if host >= 128 {
        return true;
    }
    (base >> host) == (a >> host)
}

fn ports(r: Option<(u16, u16)>) -> Vec<PortSpec> {
    r.map(|(lo, hi)| {
        vec![PortSpec::Range {
            from: u32::from(lo),
            to: u32::from(hi),
        }]
    })
    .unwrap_or_default()
}

fn gen_rules(b: &mut Bytes) -> (Vec<RuleSpec>, Vec<Ref>) {
    let n = b.u8() % 12;
    let mut specs = Vec::new();
    let mut refs = Vec::new();
    for id in 0..u32::from(n) {
        let dir = if b.u8() & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let action = [Action::Allow, Action::Drop, Action::Reject][usize::from(b.u8() % 3)];
        let (proto, name) = [
            (Some(6u8), "tcp"),
            (Some(17), "udp"),
            (Some(1), "icmp"),
            (Some(58), "icmpv6"),
            (None, "any"),
        ][usize::from(b.u8() % 5)];
        let cidr = |b: &mut Bytes| -> Option<(bool, u128, u8)> {
            if b.u8() % 2 == 0 {
                return None;
            }
            let v6 = b.u8() % 3 == 0;
            let a = addr(b, v6);
            let prefix = if v6 { b.u8() % 129 } else { b.u8() % 33 };
            Some((v6, a, prefix))
        };
        let src = cidr(b);
        let dst = cidr(b);
        let ported = matches!(proto, Some(6 | 17));
        let range = |b: &mut Bytes| {
            if ported && b.u8() % 2 == 0 {
                let lo = u16::from(b.u8() % 32);
                Some((lo, lo + u16::from(b.u8() % 8)))
            } else {
                None
            }
        };
        let sport = range(b);
        let dport = range(b);
        let icmp_type = if matches!(proto, Some(1 | 58)) && b.u8() % 2 == 0 {
            Some(ICMP_TYPES[usize::from(b.u8()) % ICMP_TYPES.len()])
        } else {
            None
        };
        let icmp_code = icmp_type.and_then(|_| (b.u8() % 2 == 0).then(|| b.u8() % 2));
        let priority = u32::from(b.u8() % 4);
        let show = |c: Option<(bool, u128, u8)>| {
            c.map(|(v6, a, p)| vec![format!("{}/{}", to_ip(v6, a), p)])
                .unwrap_or_default()
        };
        specs.push(RuleSpec {
            id,
            priority,
            direction: dir,
            action,
            protocol: ProtocolSpec::Name(name.into()),
            source: show(src),
            destination: show(dst),
            source_ports: ports(sport),
            destination_ports: ports(dport),
            icmp_type: icmp_type.map(u32::from),
            icmp_code: icmp_code.map(u32::from),
            scope: Default::default(),
            stateless: true,
            log: b.u8() % 4 == 0,
        });
        refs.push(Ref {
            id,
            priority,
            dir,
            action,
            proto,
            src,
            dst,
            sport,
            dport,
            icmp_type,
            icmp_code,
        });
    }
    refs.sort_by_key(|r| (r.priority, r.id));
    (specs, refs)
}

fn sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A well-formed datagram and the fields the reference judges it by.
/// What the reference judges a packet by.
#[derive(Clone, Copy, Debug)]
struct Fields {
    v6: bool,
    proto: u8,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    icmp_type: u8,
    icmp_code: u8,
}

fn gen_packet(b: &mut Bytes) -> (Vec<u8>, Fields) {
    let v6 = b.u8() % 3 == 0;
    let proto = [6u8, 17, if v6 { 58 } else { 1 }, 47][usize::from(b.u8() % 4)];
    let src = addr(b, v6);
    let dst = addr(b, v6);
    let sport = u16::from(b.u8() % 48);
    let dport = u16::from(b.u8() % 40);
    let icode = b.u8() % 2;
    // Informational types only: an error type would need a quoted header to be well-formed.
    let ity = ICMP_TYPES[usize::from(b.u8()) % ICMP_TYPES.len()];
    let mut l4 = match proto {
        6 => {
            let mut t = vec![0u8; 20];
            t[12] = 0x50;
            t[13] = 0x02;
            t
        }
        17 => vec![0u8; 8],
        1 | 58 => vec![ity, icode, 0, 0, 0, 0, 0, 0],
        _ => vec![0u8; 4],
    };
    if matches!(proto, 6 | 17) {
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
    }
    l4.extend_from_slice(b.take(16));
    if proto == 17 {
        let n = l4.len() as u16;
        l4[4..6].copy_from_slice(&n.to_be_bytes());
    }
    let mut p;
    if v6 {
        p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        p[6] = proto;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.to_be_bytes());
        p[24..40].copy_from_slice(&dst.to_be_bytes());
    } else {
        p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&(src as u32).to_be_bytes());
        p[16..20].copy_from_slice(&(dst as u32).to_be_bytes());
        let c = fold(sum(&p));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(&l4);
    let f = Fields {
        v6,
        proto,
        src,
        dst,
        sport,
        dport,
        icmp_type: ity,
        icmp_code: icode,
    };
    (p, f)
}

fn reference(refs: &[Ref], dir: Direction, f: Fields) -> Option<Action> {
    let ported = matches!(f.proto, 6 | 17);
    let icmp = matches!((f.v6, f.proto), (false, 1) | (true, 58));
    let in_range = |r: Option<(u16, u16)>, p: u16| r.map_or(true, |(lo, hi)| ported && lo <= p && p <= hi);
    refs.iter()
        .filter(|r| r.dir == dir)
        .find(|r| {
            r.proto.map_or(true, |p| p == f.proto)
                && r.src.map_or(true, |c| contains(c, f.v6, f.src))
                && r.dst.map_or(true, |c| contains(c, f.v6, f.dst))
                && in_range(r.sport, f.sport)
                && in_range(r.dport, f.dport)
                && r.icmp_type.map_or(true, |t| icmp && t == f.icmp_type)
                && r.icmp_code.map_or(true, |c| icmp && c == f.icmp_code)
        })
        .map(|r| r.action)
}

/// The tenant edge the switch makes for `policy`.
fn edge(policy: PolicySpec) -> FirewallFilter {
    FirewallFilter::new(&EdgeConfig {
        tenant: "t".into(),
        networks: vec![],
        outside4: Ipv4Addr::new(10, 9, 0, 1),
        outside6: None,
        floating4: vec![],
        routed4: vec![],
        routed6: vec![],
        attached4: vec![],
        snat4: vec![],
        policy,
        conntrack_limit: 32,
        appliances: vec![],
    })
}

/// Which drop counter one packet moved (the switch's verdict carries no reason).
fn reason(before: &hostel_firewall::Stats, after: &hostel_firewall::Stats) -> Option<DropReason> {
    DropReason::ALL
        .into_iter()
        .find(|r| after.drops(*r) > before.drops(*r))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let (rules, refs) = gen_rules(&mut b);
    let default_egress = if b.u8() % 2 == 0 {
        DefaultAction::Allow
    } else {
        DefaultAction::Drop
    };
    let spec = PolicySpec {
        rules: rules.clone(),
        default_egress,
        ..PolicySpec::default()
    };
    let cfg = Config {
        conntrack_limit: 32,
        max_embryonic: 4,
        log_capacity: 8,
        ..Config::default()
    };
    let mut sw = edge(spec);
    let mut reply = [0u8; 1500];
    let mut now = 0u64;
    for _ in 0..8 {
        if b.0.is_empty() {
            break;
        }
        let dir = if b.u8() & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let (mut p, f) = gen_packet(&mut b);
        let tracked = sw.firewall().conntrack().occupancy;
        let before = *sw.firewall().stats();
        let v = match dir {
            Direction::Ingress => sw.inbound(&mut p, &mut reply, now),
            Direction::Egress => sw.outbound(&mut p, &mut reply, now),
        };
        let why = reason(&before, sw.firewall().stats());
        now += 1_000;
        if tracked != 0 {
            // A connection a stateful default created may now answer for this packet.
            continue;
        }
        let expect = reference(&refs, dir, f);
        let default = match dir {
            Direction::Ingress => DefaultAction::Drop,
            Direction::Egress => default_egress,
        };
        match (expect, v, why) {
            (Some(Action::Allow), EdgeVerdict::Pass, None) => {}
            (Some(Action::Drop), EdgeVerdict::Drop, Some(DropReason::Rule)) => {}
            (Some(Action::Reject), EdgeVerdict::Reply(_) | EdgeVerdict::Drop, Some(DropReason::Reject)) => {}
            (None, EdgeVerdict::Pass, None) if default == DefaultAction::Allow => {}
            // A stateful default allow may refuse to open a connection (table or SYN limits).
            (None, EdgeVerdict::Drop, Some(DropReason::ConntrackFull | DropReason::SynFlood))
                if default == DefaultAction::Allow => {}
            (None, EdgeVerdict::Drop, Some(DropReason::Default)) if default == DefaultAction::Drop => {}
            (e, v, why) => panic!("reference {e:?} but the switch {v:?} ({why:?}) for {f:?} {dir:?}"),
        }
    }

    // Stateful: the same rules made stateful, with translation, on raw bytes.
    let stateful: Vec<RuleSpec> = rules
        .into_iter()
        .map(|mut r| {
            r.stateless = false;
            r
        })
        .collect();
    let nat = NatConfig {
        floating: vec![FloatingIp {
            public: Ipv4Addr::new(10, 1, 0, 1),
            private: Ipv4Addr::new(10, 0, 0, 1),
        }],
        snat: vec![SnatNetwork {
            network: "10.0.0.0/24".parse().expect("literal"),
            outside: Ipv4Addr::new(10, 2, 0, 7),
        }],
        snat_ports: (1000, 1015),
    };
    let spec = PolicySpec {
        rules: stateful,
        default_egress,
        ..PolicySpec::default()
    };
    let Ok(mut fw) = Firewall::new(cfg, &spec, &nat) else {
        panic!("generated rules must validate");
    };
    while !b.0.is_empty() {
        let dir = if b.u8() & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        now += u64::from(b.u16()) * 10_000_000;
        let mut p = if b.u8() % 2 == 0 {
            gen_packet(&mut b).0
        } else {
            let n = usize::from(b.u8());
            b.take(n).to_vec()
        };
        fw.prefetch(&p, Stage::Slot);
        fw.prefetch(&p, Stage::Entry);
        let small = b.u8() % 4 == 0;
        let out: &mut [u8] = if small { &mut reply[..40] } else { &mut reply };
        if let Verdict::Reject { len } = fw.process(dir, &mut p, now, out) {
            assert!(len <= out.len());
        }
        assert!(fw.conntrack().occupancy <= fw.conntrack_limit());
    }
});
