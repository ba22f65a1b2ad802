//! `make bench-firewall`: the firewall in-process on one core — packets of established flows
//! through 0, 100 and 1,000 rules with 10k and 100k tracked flows at 64 B and 1514 B frames,
//! and new connections (full handshakes) per second. Configurations alternate round by round;
//! the medians of CPU time per packet (the thread's CPU clock) are printed as Markdown tables.

use std::hint::black_box;

use hostel_firewall::bench_policy::{policy, Rng};
use hostel_firewall::nat::NatConfig;
use hostel_firewall::{Config, Direction, Firewall, Stage, Verdict};

const ROUNDS_DEFAULT: usize = 5;
const PACKETS: usize = 2_000_000;
const BATCH: usize = 64;
const NEW_CONNS: usize = 200_000;

/// This thread's CPU time in nanoseconds: the machine is shared, and time spent preempted is
/// not the firewall's cost per packet on a core.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An IPv4 TCP segment of `len` bytes (IP header included) with a valid checksum.
fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(40)];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = hostel_firewall::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sp.to_be_bytes());
    p[22..24].copy_from_slice(&dp.to_be_bytes());
    p[32] = 0x50;
    p[33] = flags;
    // A full window: the flows' segments stay inside it (`tcpwin`) when the frame size
    // changes between measurements.
    p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
    p
}

fn client(i: usize) -> ([u8; 4], u16) {
    let a = (i / 50_000) as u8;
    (
        [198, 51, 100 + a, ((i / 200) % 250) as u8],
        10_000 + (i % 50_000) as u16,
    )
}

fn vm(i: usize) -> [u8; 4] {
    [10, 0, (i % 200) as u8, 2 + (i % 7) as u8]
}

/// A firewall with `flows` established connections and room for `extra` more.
fn firewall(rules: usize, flows: usize, extra: usize) -> Firewall {
    let cfg = Config {
        conntrack_limit: flows + extra,
        max_embryonic: 2_000_000,
        syn_rate: 1 << 40,
        syn_burst: 1 << 40,
        ..Config::default()
    };
    let mut f =
        Firewall::new(cfg, &policy(rules), &NatConfig::default()).expect("valid bench policy");
    let mut reply = [0u8; 128];
    for i in 0..flows {
        let (c, cp) = client(i);
        let v = vm(i);
        for (d, mut p) in [
            (Direction::Ingress, tcp(c, cp, v, 80, 0x02, 46)),
            (Direction::Egress, tcp(v, 80, c, cp, 0x12, 46)),
            (Direction::Ingress, tcp(c, cp, v, 80, 0x10, 46)),
        ] {
            assert_eq!(
                f.process(d, &mut p, 1, &mut reply),
                Verdict::Accept,
                "flow set-up"
            );
        }
    }
    f
}

/// Nanoseconds per packet for established-flow packets (both directions, random flows).
fn established(f: &mut Firewall, flows: usize, len: usize, seed: u64, prefetch: bool) -> f64 {
    let mut rng = Rng(seed | 1);
    let ring = 16_384.min(PACKETS);
    let mut pkts: Vec<(Direction, Vec<u8>)> = (0..ring)
        .map(|k| {
            let i = (rng.next() as usize) % flows;
            let (c, cp) = client(i);
            if k % 2 == 0 {
                (Direction::Ingress, tcp(c, cp, vm(i), 80, 0x10, len))
            } else {
                (Direction::Egress, tcp(vm(i), 80, c, cp, 0x10, len))
            }
        })
        .collect();
    let mut reply = [0u8; 128];
    let mut now = 2u64;
    let start = cpu_ns();
    let mut ok = 0usize;
    for b in 0..PACKETS / BATCH {
        now += 6_400;
        for k in 0..BATCH {
            let at = b * BATCH + k;
            if prefetch {
                f.prefetch(&pkts[(at + 8) % ring].1, Stage::Slot);
                f.prefetch(&pkts[(at + 4) % ring].1, Stage::Entry);
            }
            let (d, p) = &mut pkts[at % ring];
            ok += usize::from(f.process(*d, black_box(p), now, &mut reply) == Verdict::Accept);
        }
    }
    let ns = (cpu_ns() - start) as f64 / PACKETS as f64;
    assert_eq!(ok, PACKETS, "every packet of an established flow passes");
    ns
}

/// Nanoseconds per new connection (SYN in, SYN-ACK out, ACK in) on new tuples.
fn new_connections(f: &mut Firewall, base: usize, n: usize) -> f64 {
    let mut reply = [0u8; 128];
    let mut conns: Vec<[(Direction, Vec<u8>); 3]> = (0..n)
        .map(|k| {
            let i = base + k;
            let c = [203, 0, (i / 60_000 % 250) as u8, (i % 250) as u8];
            let cp = 1024 + (i / 250 % 60_000) as u16;
            let v = vm(i);
            [
                (Direction::Ingress, tcp(c, cp, v, 80, 0x02, 46)),
                (Direction::Egress, tcp(v, 80, c, cp, 0x12, 46)),
                (Direction::Ingress, tcp(c, cp, v, 80, 0x10, 46)),
            ]
        })
        .collect();
    let start = cpu_ns();
    let mut ok = 0;
    for c in conns.iter_mut() {
        for (d, p) in c.iter_mut() {
            ok += usize::from(f.process(*d, black_box(p), 3, &mut reply) == Verdict::Accept);
        }
    }
    let ns = (cpu_ns() - start) as f64 / n as f64;
    assert_eq!(ok, 3 * n, "every handshake passes");
    ns
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // BENCH_FIREWALL_ROUNDS: fewer rounds for a quick look (the default is what BENCHMARKS.md used).
    let rounds = std::env::var("BENCH_FIREWALL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let rule_counts = [0usize, 100, 1000];
    let flow_counts = [10_000usize, 100_000];
    let sizes = [(64usize, 46usize), (1514, 1500)];
    eprintln!(
        "setting up {} firewalls",
        rule_counts.len() * flow_counts.len()
    );
    let mut fws: Vec<(usize, usize, Firewall)> = Vec::new();
    for &r in &rule_counts {
        for &fl in &flow_counts {
            fws.push((r, fl, firewall(r, fl, fl)));
        }
    }
    // Per configuration: one by one, then with the prefetch hints.
    let mut est: Vec<Vec<f64>> = vec![Vec::new(); fws.len() * sizes.len() * 2];
    let mut newc: Vec<Vec<f64>> = vec![Vec::new(); rule_counts.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, (_, fl, f)) in fws.iter_mut().enumerate() {
            for (j, &(_, len)) in sizes.iter().enumerate() {
                let seed = (round * 31 + i) as u64;
                for m in 0..2 {
                    let ns = established(f, *fl, len, seed, m == 1);
                    est[(i * sizes.len() + j) * 2 + m].push(ns);
                }
            }
        }
        for (k, &r) in rule_counts.iter().enumerate() {
            // A fresh table each round (with 10k flows already in it), so every tuple is new.
            let mut f = firewall(r, 10_000, NEW_CONNS);
            newc[k].push(new_connections(&mut f, 0, NEW_CONNS));
        }
    }
    println!("| rules | established flows | frame | CPU ns/packet | Mpps per core | with prefetch hints: CPU ns/packet | Mpps per core | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (r, fl, _)) in fws.iter().enumerate() {
        for (j, &(frame, _)) in sizes.iter().enumerate() {
            let a = median(&mut est[(i * sizes.len() + j) * 2]);
            let b = median(&mut est[(i * sizes.len() + j) * 2 + 1]);
            println!(
                "| {r} | {fl} | {frame} B | {a:.1} | {:.2} | {b:.1} | {:.2} | {:.2} |",
                1000.0 / a,
                1000.0 / b,
                b / a
            );
        }
    }
    println!();
    println!("| rules | CPU ns per new connection (SYN, SYN-ACK, ACK; median) | new connections/s per core |");
    println!("|---:|---:|---:|");
    for (k, r) in rule_counts.iter().enumerate() {
        let ns = median(&mut newc[k]);
        println!("| {r} | {ns:.0} | {:.0}k |", 1e6 / ns);
    }
}
