//! `bench-edge` (run by `make bench-firewall`): the switch's inbound edge path
//! ([`hostel_switch::edge_bench`]) with the tenant firewall against the same path without a
//! filter, at 64 B and 1514 B, with 0, 100 and 1,000 rules and 10k and 100k established
//! flows. Configurations alternate within each round; medians of the thread's CPU time per
//! packet are printed as a Markdown table. Frames go 64 at a time through the wire reader's
//! block handler (with its look-ahead cache hints) into the VM's guest RX ring. Then new
//! connections per second through the switch: each a SYN from the wire, the VM's SYN-ACK
//! through the outbound edge path, the client's ACK from the wire, with 0, 100 and 1,000
//! rules, against the same frames without a filter.
//! Usage: `bench-edge [ROUNDS] [--only RULES,FLOWS,LEN] [--no-conns]`.

use std::net::Ipv4Addr;

use hostel_firewall::bench_policy::{policy, Rng};
use hostel_switch::edge_bench::{ip_tcp, vm_frame, wire_frame, EdgeBench, VM};
use hostel_switch::DropReason;

const PACKETS: usize = 1_000_000;
const BATCH: usize = 64;
const RING: usize = 16_384;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// This thread's CPU time in nanoseconds (the host is shared with other builds).
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

/// Flow `i`'s client on the internet.
fn client(i: usize) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0xc612_0000u32 + i as u32), 40_000)
}

struct Case {
    bench: EdgeBench,
    frames: Vec<Vec<u8>>,
    now: u64,
}

impl Case {
    /// `rules: None`: no filter. The firewall case gets every flow established first
    /// (SYN in, SYN-ACK out, ACK in), its table sized at twice the flow count.
    fn new(rules: Option<usize>, flows: usize, len: usize) -> Case {
        let mut bench = EdgeBench::new(rules.map(policy), (2 * flows) as u32);
        let mut now = 1_000_000_000u64;
        if rules.is_some() {
            let mut synack = vec![0u8; 40];
            for i in 0..flows {
                let (c, cp) = client(i);
                bench.wire(&wire_frame(54, c, cp, 80, SYN), now);
                ip_tcp(&mut synack, VM, c, 80, cp, SYN | ACK);
                bench.vm_packet(&mut synack, now);
                bench.wire(&wire_frame(54, c, cp, 80, ACK), now);
                // Under the firewall's SYN-rate limit (100k new connections/s).
                now += 20_000;
            }
            let fw = bench.firewall().expect("a firewall");
            assert_eq!(fw.conntrack, flows, "every flow established: {fw:?}");
        }
        let mut rng = Rng(0x5eed ^ flows as u64 ^ len as u64);
        let frames = (0..RING)
            .map(|_| {
                let (c, cp) = client((rng.next() as usize) % flows);
                wire_frame(len, c, cp, 80, ACK)
            })
            .collect();
        Case { bench, frames, now }
    }

    /// CPU nanoseconds per packet over `PACKETS` frames.
    fn run(&mut self) -> f64 {
        let before = self.bench.passed();
        let delivered = self.bench.delivered();
        let refs: Vec<Result<&[u8], DropReason>> = self.frames.iter().map(|f| Ok(&f[..])).collect();
        let start = cpu_ns();
        // As the wire reader hands frames over: a block at a time, with its look-ahead.
        for b in 0..PACKETS / BATCH {
            self.now += 6_400;
            let at = (b * BATCH) % RING;
            self.bench.wire_block(&refs[at..at + BATCH], self.now);
        }
        let ns = (cpu_ns() - start) as f64 / PACKETS as f64;
        assert_eq!(
            self.bench.passed() - before,
            PACKETS as u64,
            "every frame of an established flow crosses the edge"
        );
        assert_eq!(
            self.bench.delivered() - delivered,
            PACKETS as u64,
            "every frame reaches the VM's ring"
        );
        ns
    }
}

/// New connections through the switch: `CONNS` handshakes per measurement into a table that
/// already holds 10,000 established flows.
const CONNS: usize = 100_000;

struct ConnCase {
    bench: EdgeBench,
    firewall: bool,
    next: usize,
    now: u64,
}

impl ConnCase {
    fn new(rules: Option<usize>, rounds: usize) -> ConnCase {
        let limit = 10_000 + CONNS * (rounds + 1);
        let mut c = ConnCase {
            bench: EdgeBench::new(rules.map(policy), limit as u32),
            firewall: rules.is_some(),
            next: 0,
            now: 1_000_000_000,
        };
        c.run_n(10_000);
        c
    }

    /// Handshakes of fresh tuples; CPU ns per connection.
    fn run_n(&mut self, n: usize) -> f64 {
        let first = self.next;
        let frames: Vec<[Vec<u8>; 3]> = (first..first + n)
            .map(|i| {
                let (c, cp) = conn_client(i);
                [
                    wire_frame(64, c, cp, 80, SYN),
                    vm_frame(64, c, 80, cp, SYN | ACK),
                    wire_frame(64, c, cp, 80, ACK),
                ]
            })
            .collect();
        self.next += n;
        let (passed, sent) = (self.bench.passed(), self.bench.sent());
        let start = cpu_ns();
        for (i, [syn, synack, ack]) in frames.iter().enumerate() {
            // The synthetic clock stays under the firewall's per-tenant SYN rate limit
            // (100k/s): the CPU time measured is what counts.
            self.now += 20_000;
            self.bench.wire(syn, self.now);
            let _ = self.bench.vm_frame(synack);
            self.bench.wire(ack, self.now);
            if i % 32 == 31 {
                self.bench.refill();
            }
        }
        let ns = (cpu_ns() - start) as f64 / n as f64;
        assert_eq!(self.bench.passed() - passed, 2 * n as u64, "SYN and ACK in");
        assert_eq!(self.bench.sent() - sent, n as u64, "SYN-ACK out");
        if self.firewall {
            let fw = self.bench.firewall().expect("a firewall");
            assert_eq!(fw.conntrack, self.next, "every handshake tracked: {fw:?}");
        }
        ns
    }
}

/// Connection `i`'s client: a fresh (address, port) per connection.
fn conn_client(i: usize) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0xc613_0000u32 + (i / 16_000) as u32),
        1024 + (i % 16_000) as u16,
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let only: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    let conns = !args.iter().any(|a| a == "--no-conns");
    let mut configs = Vec::new();
    for rules in [0usize, 100, 1000] {
        for flows in [10_000usize, 100_000] {
            for len in [64usize, 1514] {
                if only.as_ref().map_or(true, |o| o[..] == [rules, flows, len]) {
                    configs.push((rules, flows, len));
                }
            }
        }
    }
    let mut cases: Vec<(Case, Case)> = configs
        .iter()
        .map(|&(r, f, l)| (Case::new(None, f, l), Case::new(Some(r), f, l)))
        .collect();
    let mut plain = vec![Vec::new(); configs.len()];
    let mut fw = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (i, (p, f)) in cases.iter_mut().enumerate() {
            // Which goes first alternates from round to round.
            if (round + i) % 2 == 0 {
                plain[i].push(p.run());
                fw[i].push(f.run());
            } else {
                fw[i].push(f.run());
                plain[i].push(p.run());
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!("| rules | established flows | frame | no filter: CPU ns/packet | Mpps per core | firewall: CPU ns/packet | Mpps per core | firewall pps / no-filter pps |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &(r, f, l)) in configs.iter().enumerate() {
        let (p, w) = (median(&mut plain[i]), median(&mut fw[i]));
        println!(
            "| {r} | {f} | {l} B | {p:.1} | {:.2} | {w:.1} | {:.2} | {:.2} |",
            1e3 / p,
            1e3 / w,
            p / w
        );
    }
    if !conns {
        return;
    }
    let rule_counts = [0usize, 100, 1000];
    let mut cc: Vec<(ConnCase, ConnCase)> = rule_counts
        .iter()
        .map(|&r| (ConnCase::new(None, rounds), ConnCase::new(Some(r), rounds)))
        .collect();
    let mut plain = vec![Vec::new(); rule_counts.len()];
    let mut fw = vec![Vec::new(); rule_counts.len()];
    for round in 0..rounds {
        for (i, (p, f)) in cc.iter_mut().enumerate() {
            if (round + i) % 2 == 0 {
                plain[i].push(p.run_n(CONNS));
                fw[i].push(f.run_n(CONNS));
            } else {
                fw[i].push(f.run_n(CONNS));
                plain[i].push(p.run_n(CONNS));
            }
        }
        eprintln!("connections: round {} of {rounds} done", round + 1);
    }
    println!();
    println!("| rules | no filter: CPU ns per handshake (SYN in, SYN-ACK out, ACK in) | firewall: CPU ns per new connection | new connections/s per core | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for (i, r) in rule_counts.iter().enumerate() {
        let (p, w) = (median(&mut plain[i]), median(&mut fw[i]));
        println!("| {r} | {p:.0} | {w:.0} | {:.0}k | {:.2} |", 1e6 / w, p / w);
    }
}
