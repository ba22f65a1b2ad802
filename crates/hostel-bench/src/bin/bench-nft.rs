//! `bench-nft` (run by `make bench-firewall`): nftables forwarding between veths in a network
//! namespace as the kernel reference for the tenant firewall — the benchmark policy of
//! `hostel_firewall::bench_policy` (0, 100, 1,000 rules) as a linear chain and as sets/maps,
//! conntrack on, 10k and 100k established flows, 64 B and 1514 B frames from an AF_PACKET
//! generator. CPU per packet is the forwarding CPU's softirq time over the packets counted on
//! the far veth. With `--edge PATH`, runs `bench-edge 1` between rounds, so the switch's
//! figures come from the same run. Needs root (network namespaces, nftables).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::nft_net::{self, PacketSock, Topology, FW_CPU, GEN_CPU, STOP};
use hostel_bench::nft_policy::{ruleset, Layout};
use hostel_firewall::bench_policy::{policy, Rng};

#[derive(Parser)]
struct Args {
    /// Rounds; every configuration is measured once per round, in alternating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of sending per measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// The switch's `bench-edge` binary, run (one round) after each round.
    #[arg(long)]
    edge: Option<PathBuf>,
}

const FLOWS_MAX: usize = 100_000;
const RING: usize = 16_384;
const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// Flow `i`'s client on the internet (as `bench-edge` has it).
fn client(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000u32 + i as u32)
}

fn inbound(i: usize, len: usize) -> Vec<u8> {
    nft_net::tcp_frame(
        len,
        nft_net::MAC_A1,
        nft_net::MAC_A0,
        client(i),
        40_000,
        VM,
        80,
        1000,
        2000,
    )
}

fn reply(i: usize) -> Vec<u8> {
    nft_net::tcp_frame(
        60,
        nft_net::MAC_B1,
        nft_net::MAC_B0,
        VM,
        80,
        client(i),
        40_000,
        2000,
        1000,
    )
}

/// Sends `frames` through `dev`, 64 at a time, and after each page of 1,024 waits (bounded)
/// until `count_dev` has received them, so the forwarding CPU's backlog never overflows.
fn paced(frames: &[Vec<u8>], dev: &str, count_dev: &str) -> Result<()> {
    let sock = PacketSock::open(dev)?;
    for page in frames.chunks(1024) {
        let before = nft_net::dev_packets(count_dev)?.0;
        for b in page.chunks(64) {
            sock.send(b);
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while nft_net::dev_packets(count_dev)?.0 < before + page.len() as u64
            && Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }
    Ok(())
}

struct Sample {
    forwarded: u64,
    softirq_ns: u64,
    wall_ns: u64,
}

fn measure(topo: &Topology, ring: &[Vec<u8>], seconds: f64) -> Result<Sample> {
    nft_net::in_ns(&topo.gen, GEN_CPU, || {
        let sock = PacketSock::open("a0")?;
        let (rx0, _) = nft_net::dev_packets("b0")?;
        let s0 = nft_net::softirq_ns(FW_CPU)?;
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(seconds);
        let mut i = 0;
        while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
            sock.send(&ring[i..i + 64]);
            i = (i + 64) % ring.len();
        }
        // Let the forwarding CPU finish its backlog before reading the counters.
        let mut last = u64::MAX;
        loop {
            let rx = nft_net::dev_packets("b0")?.0;
            if rx == last {
                break;
            }
            last = rx;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Sample {
            forwarded: last - rx0,
            softirq_ns: nft_net::softirq_ns(FW_CPU)? - s0,
            wall_ns: t0.elapsed().as_nanos() as u64,
        })
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `bench-edge`'s table: (rules, flows, frame) -> firewall CPU ns/packet.
fn parse_edge(out: &str) -> Vec<((usize, usize, usize), f64)> {
    out.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            let rules = c.get(1)?.parse().ok()?;
            let flows = c.get(2)?.parse().ok()?;
            let frame = c.get(3)?.trim_end_matches(" B").parse().ok()?;
            Some(((rules, flows, frame), c.get(6)?.parse().ok()?))
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-nft needs root (network namespaces, veths, nftables): not run");
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("bench-nft needs `nft` (scripts/install-deps.sh installs nftables): not run");
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("bench-nft needs 2 CPUs (sender and forwarding apart): not run");
    }
    nft_net::catch_signals();
    let topo = Topology::create().context("creating the namespaces")?;

    // Establish every flow once: inbound ACK (a new entry, allowed by the policy's last
    // rule), then the VM's reply (the entry is established). The 10k case uses the first 10k.
    topo.load(Some(&ruleset(&policy(0), Layout::Linear)?))?;
    let fwd: Vec<Vec<u8>> = (0..FLOWS_MAX).map(|i| inbound(i, 60)).collect();
    let back: Vec<Vec<u8>> = (0..FLOWS_MAX).map(reply).collect();
    nft_net::in_ns(&topo.gen, GEN_CPU, || {
        paced(&fwd, "a0", "b0")?;
        paced(&back, "b0", "a0")
    })?;
    let ct = topo.conntrack_count()?;
    eprintln!("conntrack entries after establishing: {ct}");
    if ct < FLOWS_MAX as u64 * 99 / 100 {
        bail!("only {ct} of {FLOWS_MAX} flows were established");
    }

    let mut rng = Rng(0x5eed);
    let mut rings = std::collections::BTreeMap::new();
    for flows in [10_000usize, FLOWS_MAX] {
        let pick: Vec<usize> = (0..RING)
            .map(|_| (rng.next() % flows as u64) as usize)
            .collect();
        for len in [60usize, 1514] {
            rings.insert(
                (flows, len),
                pick.iter().map(|&i| inbound(i, len)).collect::<Vec<_>>(),
            );
        }
    }
    // (layout or plain forwarding, rules, flows, frame length)
    let mut configs = Vec::new();
    for len in [60usize, 1514] {
        configs.push((None, 0usize, 10_000usize, len));
        for layout in [Layout::Linear, Layout::Maps] {
            for rules in [0usize, 100, 1000] {
                for flows in [10_000usize, FLOWS_MAX] {
                    configs.push((Some(layout), rules, flows, len));
                }
            }
        }
    }
    let mut ns_per_packet = vec![Vec::new(); configs.len()];
    let mut wall_pps = vec![Vec::new(); configs.len()];
    let mut edge: std::collections::BTreeMap<(usize, usize, usize), Vec<f64>> = Default::default();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &c in &order {
            if STOP.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let (layout, rules, flows, len) = configs[c];
            let text = layout.map(|l| ruleset(&policy(rules), l)).transpose()?;
            topo.load(text.as_deref())?;
            let ingress0 = if layout.is_some() {
                topo.ingress_packets()?
            } else {
                0
            };
            let s = measure(&topo, &rings[&(flows, len)], args.seconds)?;
            if layout.is_some() {
                let missed = topo.ingress_packets()? - ingress0;
                if missed > s.forwarded / 100 {
                    bail!("{missed} of {} packets were not established", s.forwarded);
                }
            }
            if s.forwarded == 0 || s.softirq_ns == 0 {
                bail!("nothing forwarded (or no softirq time) in {:?}", configs[c]);
            }
            ns_per_packet[c].push(s.softirq_ns as f64 / s.forwarded as f64);
            wall_pps[c].push(s.forwarded as f64 * 1e9 / s.wall_ns as f64);
        }
        if let Some(bin) = &args.edge {
            let out = std::process::Command::new(bin).arg("1").output()?;
            if !out.status.success() {
                bail!(
                    "bench-edge failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            for (k, v) in parse_edge(&String::from_utf8_lossy(&out.stdout)) {
                edge.entry(k).or_default().push(v);
            }
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    topo.load(None)?;

    let frame = |len: usize| if len == 60 { 64 } else { len };
    let mut med = std::collections::BTreeMap::new();
    println!("| reference | rules | established flows | frame | CPU ns/packet (forwarding CPU softirq) | Mpps per core | forwarded Mpps (wall) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (c, &(layout, rules, flows, len)) in configs.iter().enumerate() {
        let ns = median(&mut ns_per_packet[c]);
        let pps = median(&mut wall_pps[c]);
        let name = layout.map_or("kernel forwarding, no nftables", Layout::name);
        println!(
            "| {name} | {rules} | {flows} | {} B | {ns:.1} | {:.2} | {:.2} |",
            frame(len),
            1e3 / ns,
            pps / 1e6
        );
        if let Some(l) = layout {
            med.insert((l == Layout::Maps, rules, flows, frame(len)), ns);
        }
    }
    if !edge.is_empty() {
        println!();
        println!("| rules | established flows | frame | switch edge + firewall: CPU ns/packet | Mpps per core | nft sets/maps: Mpps per core | nft linear: Mpps per core | switch / nft sets/maps | switch / nft linear |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (&(rules, flows, f), v) in edge.iter_mut() {
            let sw = median(v);
            let (Some(m), Some(l)) = (
                med.get(&(true, rules, flows, f)),
                med.get(&(false, rules, flows, f)),
            ) else {
                continue;
            };
            println!(
                "| {rules} | {flows} | {f} B | {sw:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                1e3 / sw,
                1e3 / m,
                1e3 / l,
                m / sw,
                l / sw
            );
        }
    }
    Ok(())
}
