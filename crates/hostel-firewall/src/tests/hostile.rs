//! Untrusted bytes: truncations, bad headers, extension chains, fragments, random garbage.

use super::build::*;
use super::rules::Rng;
use crate::nat::{FloatingIp, NatConfig, SnatNetwork};
use crate::rule::Action;
use crate::{Config, DropReason, Verdict};

#[test]
fn truncated_and_bad_headers_are_malformed() {
    let mut f = fw(vec![]);
    let good = tcp4("10.0.0.5", 1, "1.2.3.4", 2, 0x02);
    for n in 0..good.len() {
        let (v, _) = run(&mut f, OUT, good[..n].to_vec(), 0);
        assert_eq!(v, Verdict::Drop(DropReason::Malformed), "truncated to {n}");
    }
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(
        run(&mut f, OUT, bad_ihl, 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let mut huge_ihl = good.clone();
    huge_ihl[0] = 0x4f;
    assert_eq!(
        run(&mut f, OUT, huge_ihl, 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let mut long_total = good.clone();
    long_total[2] = 0xff;
    assert_eq!(
        run(&mut f, OUT, long_total, 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let mut bad_doff = good.clone();
    bad_doff[32] = 0xf0;
    assert_eq!(
        run(&mut f, OUT, bad_doff, 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
    // Trailing bytes past the IPv4 total length (link padding) are fine.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 10]);
    assert_eq!(run(&mut f, OUT, padded, 0).0, Verdict::Accept);
    assert_eq!(
        run(&mut f, OUT, vec![0x70; 60], 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
}

fn v6_with_ext(chain: &[u8], last: u8) -> Vec<u8> {
    // `chain`: extension header types, each 8 bytes; then a UDP header.
    let mut p = udp6("fd00::5", 1, "2001:db8::1", 53);
    let udp = p[40..].to_vec();
    p.truncate(40);
    p[6] = chain.first().copied().unwrap_or(last);
    for (i, _) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(last);
        p.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    p.extend_from_slice(&udp);
    let pl = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&pl.to_be_bytes());
    p
}

#[test]
fn ipv6_extension_chains_are_walked_and_bounded() {
    let mut f = fw(vec![]);
    // Hop-by-hop then destination options: UDP behind them is seen (and tracked).
    assert_eq!(
        run(&mut f, OUT, v6_with_ext(&[0, 60], 17), 0).0,
        Verdict::Accept
    );
    assert_eq!(f.conntrack().occupancy, 1);
    let long = [60u8; 9];
    assert_eq!(
        run(&mut f, OUT, v6_with_ext(&long, 17), 0).0,
        Verdict::Drop(DropReason::ExtensionChain)
    );
    // A chain that runs off the end.
    let mut cut = v6_with_ext(&[0, 60], 17);
    cut.truncate(50);
    let pl = (cut.len() - 40) as u16;
    cut[4..6].copy_from_slice(&pl.to_be_bytes());
    assert_eq!(
        run(&mut f, OUT, cut, 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
}

fn frag4(mut p: Vec<u8>, more: bool, offset8: u16, id: u16) -> Vec<u8> {
    let fo = (u16::from(more) << 13) | offset8;
    p[6..8].copy_from_slice(&fo.to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[10] = 0;
    p[11] = 0;
    let c = naive_sum(&[&p[..20]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn later_fragments_follow_their_first() {
    let nat = NatConfig {
        floating: vec![FloatingIp {
            public: "198.51.100.7".parse().expect("addr"),
            private: "10.0.0.5".parse().expect("addr"),
        }],
        snat: vec![SnatNetwork {
            network: "10.0.0.0/24".parse().expect("cidr"),
            outside: "203.0.113.1".parse().expect("addr"),
        }],
        ..NatConfig::default()
    };
    let mut r = rule(1, IN, Action::Allow, "udp");
    r.destination_ports = vec![port(53)];
    let mut f = fw_with(Config::default(), vec![r], &nat);
    // A later fragment alone: dropped.
    let later = frag4(udp4("1.2.3.4", 9, "198.51.100.7", 53), false, 100, 77);
    assert_eq!(
        run(&mut f, IN, later.clone(), 0).0,
        Verdict::Drop(DropReason::Fragment)
    );
    // The first fragment to an allowed port passes; then the later one, translated alike.
    let first = frag4(udp4("1.2.3.4", 9, "198.51.100.7", 53), true, 0, 77);
    let (v, p) = run(&mut f, IN, first, 1);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(&p[16..20], &a4("10.0.0.5"));
    let (v, p) = run(&mut f, IN, later.clone(), 2);
    assert_eq!(v, Verdict::Accept);
    assert_eq!(&p[16..20], &a4("10.0.0.5"));
    assert_eq!(naive_sum(&[&p[..20]]), 0);
    // A first fragment to a closed port does not open the door for its followers.
    let first = frag4(udp4("1.2.3.4", 9, "198.51.100.7", 54), true, 0, 78);
    assert_eq!(
        run(&mut f, IN, first, 3).0,
        Verdict::Drop(DropReason::Default)
    );
    let later = frag4(udp4("1.2.3.4", 9, "198.51.100.7", 54), false, 100, 78);
    assert_eq!(
        run(&mut f, IN, later, 3).0,
        Verdict::Drop(DropReason::Fragment)
    );
    // And the memory of a first fragment expires.
    let later = frag4(udp4("1.2.3.4", 9, "198.51.100.7", 53), false, 100, 77);
    assert_eq!(
        run(&mut f, IN, later, secs(60)).0,
        Verdict::Drop(DropReason::Fragment)
    );
}

#[test]
fn random_and_mutated_packets_never_panic() {
    let nat = NatConfig {
        floating: vec![FloatingIp {
            public: "198.51.100.7".parse().expect("addr"),
            private: "10.0.0.5".parse().expect("addr"),
        }],
        snat: vec![SnatNetwork {
            network: "10.0.0.0/24".parse().expect("cidr"),
            outside: "203.0.113.1".parse().expect("addr"),
        }],
        snat_ports: (1024, 1100),
    };
    let mut rej = rule(1, IN, Action::Reject, "any");
    rej.source = vec!["6.0.0.0/8".into()];
    let cfg = Config {
        conntrack_limit: 64,
        max_embryonic: 8,
        ..Config::default()
    };
    let mut f = fw_with(cfg, vec![rej, rule(2, IN, Action::Allow, "any")], &nat);
    let seeds = [
        tcp4("10.0.0.6", 1, "6.1.2.3", 2, 0x02),
        udp4("6.1.2.3", 1, "198.51.100.7", 53),
        echo4("10.0.0.6", "9.9.9.9", true, 5),
        icmp4(
            "9.9.9.9",
            "203.0.113.1",
            3,
            3,
            [0; 4],
            &udp4("203.0.113.1", 1024, "9.9.9.9", 53),
        ),
        tcp6("fd00::5", 1, "2001:db8::1", 2, 0x02),
        v6_with_ext(&[0, 44, 60], 17),
    ];
    let mut rng = Rng(42);
    let mut reply = [0u8; 1600];
    let mut reply_small = [0u8; 30];
    for i in 0..200_000u64 {
        let mut p = seeds[rng.below(seeds.len() as u64) as usize].clone();
        for _ in 0..rng.below(6) {
            let at = rng.below(p.len() as u64) as usize;
            p[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            p.truncate(rng.below(p.len() as u64 + 1) as usize);
        }
        if rng.below(50) == 0 {
            p = (0..rng.below(100)).map(|_| rng.next() as u8).collect();
        }
        let d = if rng.below(2) == 0 { IN } else { OUT };
        let out: &mut [u8] = if rng.below(3) == 0 {
            &mut reply_small
        } else {
            &mut reply
        };
        // The cache hints read the bytes too: no effect, no panic, whatever they are.
        f.prefetch(&p, crate::Stage::Slot);
        f.prefetch(&p, crate::Stage::Entry);
        let v = f.process(d, &mut p, i * 1_000_000, out);
        if let Verdict::Reject { len } = v {
            assert!(len <= out.len());
            assert_outer_checksums(&out[..len]);
        }
    }
    assert!(f.conntrack().occupancy <= 64);
    let st = f.stats();
    assert!(st.accepted > 0 && st.drops(DropReason::Malformed) > 0);
}
