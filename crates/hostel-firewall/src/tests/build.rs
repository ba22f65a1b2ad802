//! Datagram builders and an independent checksum verifier for the tests.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::conntrack::SEC;
use crate::nat::NatConfig;
use crate::rule::{Action, Direction, PolicySpec, PortSpec, ProtocolSpec, RuleSpec};
use crate::{Config, Firewall, Verdict};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// The naive Internet checksum: sum every 16-bit word in a u64, fold at the end.
pub fn naive_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u64 = 0;
    for w in bytes.chunks(2) {
        s += u64::from(w[0]) * 256 + u64::from(w[1]);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn pseudo4(p: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut v = p[12..20].to_vec();
    v.extend_from_slice(&[0, proto]);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v
}

fn pseudo6(p: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut v = p[8..40].to_vec();
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, proto]);
    v
}

/// Asserts every checksum of an IPv4 or IPv6 datagram (and, for an ICMPv4 error, its quoted
/// IPv4 header's) is right.
pub fn assert_checksums(p: &[u8]) {
    checksums(p, true)
}

/// The same without the quoted header (a reject quotes whatever arrived, bad checksum or not).
pub fn assert_outer_checksums(p: &[u8]) {
    checksums(p, false)
}

fn checksums(p: &[u8], quoted: bool) {
    if p[0] >> 4 == 4 {
        let ihl = usize::from(p[0] & 15) * 4;
        assert_eq!(naive_sum(&[&p[..ihl]]), 0, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let l4 = &p[ihl..total];
        match p[9] {
            TCP => assert_eq!(
                naive_sum(&[&pseudo4(p, TCP, l4.len()), l4]),
                0,
                "TCP checksum"
            ),
            UDP if l4[6..8] != [0, 0] => {
                assert_eq!(
                    naive_sum(&[&pseudo4(p, UDP, l4.len()), l4]),
                    0,
                    "UDP checksum"
                );
            }
            1 => {
                assert_eq!(naive_sum(&[l4]), 0, "ICMP checksum");
                if quoted && matches!(l4[0], 3 | 11) {
                    let q = &l4[8..];
                    let qihl = usize::from(q[0] & 15) * 4;
                    assert_eq!(naive_sum(&[&q[..qihl]]), 0, "quoted IPv4 header checksum");
                }
            }
            _ => {}
        }
    } else {
        let l4 = &p[40..];
        let proto = p[6];
        assert_eq!(
            naive_sum(&[&pseudo6(p, proto, l4.len()), l4]),
            0,
            "IPv6 transport checksum"
        );
    }
}

pub fn a4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().expect("test address").octets()
}

pub fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().expect("test address").octets()
}

fn ip4(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&a4(src));
    p[16..20].copy_from_slice(&a4(dst));
    let c = naive_sum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// Fills a transport checksum at `off` (relative to the transport header).
pub fn fill(p: &mut [u8], l3: usize, proto: u8, off: usize) {
    let l4 = p[l3..].to_vec();
    let ps = if l3 == 20 {
        pseudo4(p, proto, l4.len())
    } else {
        pseudo6(p, proto, l4.len())
    };
    let c = naive_sum(&[&ps, &l4]);
    p[l3 + off..l3 + off + 2].copy_from_slice(&c.to_be_bytes());
}

pub fn tcp4(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    // Sequence numbers of one conversation whatever the segment: each side (told apart by
    // which port is higher) sends from its base again, and acknowledges the other's SYN and
    // 4 bytes of data, so the firewall's window check sees in-window retransmissions.
    let base = |a: u16, b: u16| if a >= b { 1000u32 } else { 2_000_000 };
    t[4..8].copy_from_slice(&base(sp, dp).to_be_bytes());
    t[8..12].copy_from_slice(&(base(dp, sp) + 5).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14] = 0xff;
    t.extend_from_slice(b"data");
    let mut p = ip4(src, dst, TCP, &t);
    fill(&mut p, 20, TCP, 16);
    p
}

pub fn udp4(src: &str, sp: u16, dst: &str, dp: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sp.to_be_bytes());
    u[2..4].copy_from_slice(&dp.to_be_bytes());
    u[4..6].copy_from_slice(&13u16.to_be_bytes());
    u.extend_from_slice(b"hello");
    let mut p = ip4(src, dst, UDP, &u);
    fill(&mut p, 20, UDP, 6);
    p
}

pub fn icmp4(src: &str, dst: &str, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = naive_sum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip4(src, dst, 1, &m)
}

pub fn echo4(src: &str, dst: &str, request: bool, id: u16) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[0..2].copy_from_slice(&id.to_be_bytes());
    rest[3] = 1;
    icmp4(src, dst, if request { 8 } else { 0 }, 0, rest, b"ping")
}

pub fn tcp6(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&24u16.to_be_bytes());
    p[6] = TCP;
    p[7] = 64;
    p[8..24].copy_from_slice(&a6(src));
    p[24..40].copy_from_slice(&a6(dst));
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    t[4..8].copy_from_slice(&7u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t.extend_from_slice(b"six!");
    p.extend_from_slice(&t);
    fill(&mut p, 40, TCP, 16);
    p
}

pub fn udp6(src: &str, sp: u16, dst: &str, dp: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&12u16.to_be_bytes());
    p[6] = UDP;
    p[7] = 64;
    p[8..24].copy_from_slice(&a6(src));
    p[24..40].copy_from_slice(&a6(dst));
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sp.to_be_bytes());
    u[2..4].copy_from_slice(&dp.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u.extend_from_slice(b"v6!!");
    p.extend_from_slice(&u);
    fill(&mut p, 40, UDP, 6);
    p
}

pub fn rule(id: u32, direction: Direction, action: Action, proto: &str) -> RuleSpec {
    RuleSpec {
        id,
        priority: 1000,
        direction,
        action,
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

pub fn port(p: u32) -> PortSpec {
    PortSpec::One(p)
}

pub fn policy(rules: Vec<RuleSpec>) -> PolicySpec {
    PolicySpec {
        rules,
        ..PolicySpec::default()
    }
}

pub fn fw(rules: Vec<RuleSpec>) -> Firewall {
    fw_with(Config::default(), rules, &NatConfig::default())
}

pub fn fw_with(c: Config, rules: Vec<RuleSpec>, nat: &NatConfig) -> Firewall {
    Firewall::new(c, &policy(rules), nat).expect("valid test policy")
}

/// Runs one packet; returns its verdict and the (possibly rewritten) bytes.
pub fn run(f: &mut Firewall, d: Direction, mut p: Vec<u8>, t: u64) -> (Verdict, Vec<u8>) {
    let mut reply = [0u8; 1600];
    let v = f.process(d, &mut p, t, &mut reply);
    (v, p)
}

pub fn secs(s: u64) -> u64 {
    s * SEC
}

pub const IN: Direction = Direction::Ingress;
pub const OUT: Direction = Direction::Egress;
