//! hostel-switch-bench: two VMs' worth of traffic through the switch, a Linux bridge and Open
//! vSwitch, measuring packets/s, Gbit/s and the CPU time of whoever does the switching.
//!
//! Usage: `hostel-switch-bench [--seconds S] [--rounds N] [--bridge] [--ovs]
//! [--sizes 64,1500,tso] [--limits] [--policies] [--json PATH]`.
//!
//! - switch: a synthetic vhost-user frontend ([`frontend`]) plays both guests from this
//!   process's main thread: it refills VM A's TX ring and recycles VM B's RX ring by polling,
//!   interrupts suppressed as a NAPI-polling guest would. The switch runs in this process;
//!   its CPU time is the process's minus the driver thread's own.
//! - `--bridge`: the same frames written into one TAP and read from another, both ports of a
//!   Linux bridge in a private network namespace ([`taps`]). The switching CPU is the
//!   driver thread's system time: the kernel bridges in the writer's context.
//! - `--ovs`: the same through Open vSwitch's userspace datapath (`datapath_type=netdev`,
//!   [`ovs`]); CPU is ovs-vswitchd's (from /proc/PID/stat) plus the driver's system time (the
//!   kernel's TAP and packet-socket work on the two ends).
//! - `--limits`: VM A's port gets rate limits in every class (packets and bytes) set far
//!   above what it can send ([`switch_case::NEVER_HIT`]), so the run measures what storm
//!   control costs a port whose limits are configured but not hit. Rows read
//!   `switch+limits`; JSON samples carry `"limits": true`.
//! - `--policies`: policy stages that every frame passes after all their rules
//!   ([`switch_case::add_policies`]), so the run measures what a configured policy costs.
//!   Rows read `switch+policies`; JSON samples carry `"policies": true`.
//!
//! Each round runs every size through every contender in turn (who goes first rotates from
//! round to round); `--json` writes every sample for `bench-net` to summarise.

mod bridge;
mod error;
mod frontend;
mod ovs;
mod switch_case;
mod taps;

use error::BenchError;
use std::time::{Duration, Instant};

use hostel_switch::datapath::vnet::{VnetHdr, GSO_TCPV4, HDR_F_NEEDS_CSUM};

/// User and system CPU seconds of `who` (RUSAGE_SELF / RUSAGE_THREAD).
pub(crate) fn rusage(who: libc::c_int) -> (f64, f64) {
    // SAFETY: rusage is plain integers, for which all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass.
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// One frame size of the comparison.
#[derive(Clone, Copy)]
pub(crate) struct Size {
    pub name: &'static str,
    pub len: usize,
    pub tso: bool,
}

const SIZES: [Size; 3] = [
    Size {
        name: "64B",
        len: 64,
        tso: false,
    },
    Size {
        name: "1500B",
        len: 1514,
        tso: false,
    },
    Size {
        name: "64KiB-TSO",
        len: 65_000,
        tso: true,
    },
];

/// Virtio-net header of the TSO case: one 64 KiB TCP segment with checksum pending.
pub(crate) fn header(tso: bool) -> VnetHdr {
    if !tso {
        return VnetHdr::default();
    }
    VnetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

/// An Ethernet/IPv4/TCP frame from 10.0.0.`src` to 10.0.0.`dst` (MACs 52:54:00:00:00:NN).
pub(crate) fn frame(len: usize, src: u8, dst: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14).min(65535) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6; // TCP
    f[26..30].copy_from_slice(&[10, 0, 0, src]);
    f[30..34].copy_from_slice(&[10, 0, 0, dst]);
    f[46] = 0x50; // TCP data offset: 5 words
    f[47] = 0x10; // ACK
                  // A valid IPv4 header checksum: a bridge with br_netfilter drops frames without one.
    let c = hostel_switch::packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// What one run of one case measured.
#[derive(Clone, Copy, Default)]
pub(crate) struct Measured {
    pub packets: u64,
    /// Frame bytes delivered (without virtio-net headers).
    pub bytes: u64,
    pub wall: f64,
    /// CPU seconds of whoever switches (see the module docs per contender).
    pub switch_cpu: f64,
    /// CPU seconds of the driver thread playing the two guests.
    pub driver_cpu: f64,
    /// Frames sent but not delivered.
    pub lost: u64,
    /// Busy CPU seconds of the whole host over the run (/proc/stat), a cross-check of the
    /// switching CPU that also catches work done outside the measured threads.
    pub host_cpu: f64,
}

/// Busy CPU seconds of the whole host so far (user, nice, system, irq, softirq, steal).
pub(crate) fn host_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn print_row(name: &str, r: &Measured) {
    let mpps = r.packets as f64 / r.wall / 1e6;
    let gbps = r.bytes as f64 * 8.0 / r.wall / 1e9;
    let cores = r.switch_cpu / r.wall;
    let per_gb = if r.bytes > 0 {
        r.switch_cpu / (r.bytes as f64 / 1e9)
    } else {
        f64::NAN
    };
    println!(
        "{:<22} {:>8.3} {:>8.2} {:>9.2}c {:>10.3} {:>9.3} {:>9} {:>7.2}c",
        name,
        mpps,
        gbps,
        cores,
        mpps / cores.max(1e-9),
        per_gb,
        r.lost,
        r.host_cpu / r.wall
    );
}

struct Args {
    secs: f64,
    rounds: usize,
    bridge: bool,
    ovs: bool,
    sizes: Vec<Size>,
    limits: bool,
    policies: bool,
    json: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, BenchError> {
    let mut a = Args {
        secs: 3.0,
        rounds: 1,
        bridge: false,
        ovs: false,
        sizes: SIZES.to_vec(),
        limits: false,
        policies: false,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| BenchError::MissingValue { flag: arg.clone() })
        };
        match arg.as_str() {
            "--seconds" => a.secs = number("--seconds", val()?)?,
            "--rounds" => a.rounds = number("--rounds", val()?)?,
            "--bridge" => a.bridge = true,
            "--ovs" => a.ovs = true,
            "--limits" => a.limits = true,
            "--policies" => a.policies = true,
            "--json" => a.json = Some(val()?.into()),
            "--sizes" => {
                let v = val()?;
                a.sizes = SIZES
                    .iter()
                    .filter(|s| {
                        v.split(',').any(|w| {
                            let w = w.to_lowercase();
                            w == s.name.to_lowercase()
                                || w == s.name.trim_end_matches('B')
                                || (w == "tso" && s.tso)
                        })
                    })
                    .copied()
                    .collect();
            }
            _ => return Err(BenchError::UnknownArgument(arg)),
        }
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(flag: &'static str, value: String) -> Result<T, BenchError> {
    value
        .parse()
        .map_err(|_| BenchError::BadNumber { flag, value })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostel-switch-bench: {e}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("hostel-switch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sw = switch_case::setup(&dir, args.limits);
    if args.policies {
        switch_case::add_policies(&sw);
    }
    let switch_name = match (args.limits, args.policies) {
        (true, true) => "switch+limits+policies",
        (true, false) => "switch+limits",
        (false, true) => "switch+policies",
        (false, false) => "switch",
    };
    let mut taps = if args.bridge || args.ovs {
        taps::Env::new(args.ovs, &dir)
            .map_err(|e| eprintln!("TAP comparisons skipped: {e}"))
            .ok()
    } else {
        None
    };
    let mut samples = Vec::new();
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "case", "Mpps", "Gbit/s", "CPU", "Mpps/core", "CPU s/GB", "lost", "host"
    );
    for round in 0..args.rounds {
        for size in &args.sizes {
            // Who goes first rotates every round, so none always runs right after another.
            for k in 0..3 {
                match (round + k) % 3 {
                    0 => {
                        let r = switch_case::run(&sw, &dir, *size, args.secs);
                        print_row(&format!("{switch_name} {}", size.name), &r);
                        samples.push((round, size.name, "switch", r));
                        // Let the switch see both disconnects before the next case
                        // reconnects.
                        let t0 = Instant::now();
                        while sw.stats().ports.values().any(|p| p.connected)
                            && t0.elapsed() < Duration::from_secs(5)
                        {
                            std::thread::yield_now();
                        }
                    }
                    1 => {
                        if let Some(env) = taps.as_mut().filter(|_| args.bridge) {
                            let r = env.run_bridge(*size, args.secs);
                            print_row(&format!("bridge {}", size.name), &r);
                            samples.push((round, size.name, "bridge", r));
                        }
                    }
                    _ => {
                        if let Some(env) = taps.as_mut().filter(|e| args.ovs && e.has_ovs()) {
                            let r = env.run_ovs(*size, args.secs);
                            print_row(&format!("ovs {}", size.name), &r);
                            samples.push((round, size.name, "ovs", r));
                        }
                    }
                }
            }
        }
    }
    drop(taps);
    sw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = args.json {
        let v: Vec<serde_json::Value> = samples
            .iter()
            .map(|(round, size, who, m)| {
                serde_json::json!({
                    "round": round, "size": size, "contender": who,
                    "packets": m.packets, "bytes": m.bytes, "wall_s": m.wall,
                    "switch_cpu_s": m.switch_cpu, "driver_cpu_s": m.driver_cpu,
                    "lost": m.lost, "host_cpu_s": m.host_cpu,
                    "limits": args.limits && *who == "switch",
                    "policies": args.policies && *who == "switch",
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&v).expect("json");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("hostel-switch-bench: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
