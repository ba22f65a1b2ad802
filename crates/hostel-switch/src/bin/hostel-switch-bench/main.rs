//! hostel-switch-bench: two VMs' worth of vhost-user frontends pushing frames through the
//! switch, measuring packets/s, Gbit/s and the switch's CPU cost.
//!
//! Usage: `hostel-switch-bench [--seconds N] [--bridge]`. `--bridge` adds the same cases
//! through two TAPs on a Linux bridge (needs root; runs in a private network namespace).
//!
//! The switch runs in this process; its CPU time is the process's minus the driver thread's
//! own. The driver thread plays both guests:
//! it refills VM A's TX ring and recycles VM B's RX ring by polling, with interrupts
//! suppressed as a NAPI-polling guest would.

mod bridge;
mod frontend;

use std::time::{Duration, Instant};

use frontend::Vm;
use hostel_switch::datapath::vnet::{VnetHdr, GSO_TCPV4, HDR_F_NEEDS_CSUM};
use hostel_switch::{NetworkConfig, PortConfig, Switch};

pub(crate) fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Virtio-net header of the TSO case: one 64 KiB TCP segment with checksum pending.
fn header(tso: bool) -> VnetHdr {
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

/// An Ethernet/IPv4/TCP frame from VM A (10.0.0.2) to VM B (10.0.0.3).
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 3]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14).min(65535) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6; // TCP
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[30..34].copy_from_slice(&[10, 0, 0, 3]);
    f[46] = 0x50; // TCP data offset: 5 words
    f[47] = 0x10; // ACK
                  // A valid IPv4 header checksum: a bridge with br_netfilter drops frames without one.
    let c = hostel_switch::packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// What one case measured.
pub(crate) struct Measured {
    pub packets: u64,
    pub bytes: u64,
    pub wall: f64,
    pub switch_cpu: f64,
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
        "{:<22} {:>8.3} {:>8.2} {:>9.2}c {:>10.3} {:>9.3}",
        name,
        mpps,
        gbps,
        cores,
        mpps / cores.max(1e-9),
        per_gb
    );
}

fn run_case(sw: &Switch, dir: &std::path::Path, len: usize, tso: bool, secs: f64) -> Measured {
    let rx_buf = if tso { 4096 } else { 2048 };
    let mut a = Vm::connect(&dir.join("a.sock"), 2048).expect("connect A");
    let mut b = Vm::connect(&dir.join("b.sock"), rx_buf).expect("connect B");
    a.set_tx_frame(header(tso), &frame(len)).expect("tx frame");
    a.fill_rx();
    b.fill_rx();
    // Both connections must have published their RX rings before traffic starts.
    let t0 = Instant::now();
    while sw.stats().ports.values().filter(|p| p.connected).count() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "ports never connected"
        );
        std::thread::yield_now();
    }
    let before = sw.port_stats("vm-b").unwrap_or_default();
    let cpu0 = rusage(libc::RUSAGE_SELF);
    let me0 = rusage(libc::RUSAGE_THREAD);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let chain = [(a.tx_buf, a.tx_len, false)];
    let mut polls = 0u32;
    while polls & 1023 != 0 || Instant::now() < deadline {
        polls = polls.wrapping_add(1);
        while a.tx.pop_used(&a.mem).is_some() {}
        let mut pushed = false;
        while a.tx.free_descriptors() > 0 {
            a.tx.push(&a.mem, &chain);
            pushed = true;
        }
        if pushed {
            a.tx.publish(&a.mem);
            if !a.tx.device_suppresses_kicks(&a.mem) {
                let _ = a.tx_kick.write(1);
            }
        }
        let mut recycled = false;
        while b.rx.pop_used(&b.mem).is_some() {
            recycled = true;
        }
        if recycled {
            b.refill_in_place();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let me = rusage(libc::RUSAGE_THREAD) - me0;
    let switch_cpu = rusage(libc::RUSAGE_SELF) - cpu0 - me;
    let after = sw.port_stats("vm-b").unwrap_or_default();
    drop(a);
    drop(b);
    Measured {
        packets: after.rx_packets - before.rx_packets,
        bytes: after.rx_bytes - before.rx_bytes,
        wall,
        switch_cpu,
    }
}

fn setup(dir: &std::path::Path) -> std::sync::Arc<Switch> {
    let sw = Switch::new();
    sw.add_network(NetworkConfig {
        id: "bench".into(),
        subnet4: Some("10.0.0.0/24".parse().expect("cidr")),
        gateway4: Some("10.0.0.1".parse().expect("ip")),
        subnet6: None,
        gateway6: None,
        gateway_mac: "52:54:00:00:00:01".parse().expect("mac"),
        uplink: None,
        dns: vec![],
        mtu: 0,
    })
    .expect("network");
    for (id, last, sock) in [("vm-a", 2u8, "a.sock"), ("vm-b", 3, "b.sock")] {
        sw.add_port(PortConfig {
            id: id.into(),
            network: "bench".into(),
            mac: format!("52:54:00:00:00:{last:02x}").parse().expect("mac"),
            ipv4: Some(format!("10.0.0.{last}").parse().expect("ip")),
            ipv6: vec![],
            socket: dir.join(sock),
        })
        .expect("port");
    }
    sw
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let bridge = std::env::args().any(|a| a == "--bridge");
    let dir = std::env::temp_dir().join(format!("hostel-switch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let sw = setup(&dir);
    println!(
        "{:<22} {:>8} {:>8} {:>10} {:>10} {:>9}",
        "case", "Mpps", "Gbit/s", "CPU", "Mpps/core", "CPU s/GB"
    );
    for (name, len, tso) in [
        ("64B", 64usize, false),
        ("1500B", 1514, false),
        ("64KiB TSO", 65_000, true),
    ] {
        let r = run_case(&sw, &dir, len, tso, secs);
        print_row(&format!("switch {name}"), &r);
        // Let the switch see both disconnects before the next case reconnects.
        let t0 = Instant::now();
        while sw.stats().ports.values().any(|p| p.connected)
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::yield_now();
        }
        if bridge {
            if let Some(r) = bridge::run(&frame(len), header(tso), secs) {
                print_row(&format!("tap+bridge {name}"), &r);
            }
        }
    }
    sw.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
