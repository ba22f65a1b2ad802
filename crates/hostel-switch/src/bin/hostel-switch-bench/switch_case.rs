//! The switch case: an in-process [`Switch`] with one network and two ports, and a
//! synthetic frontend per port.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostel_switch::datapath::vnet::VNET_HDR_LEN;
use hostel_switch::{NetworkConfig, PortConfig, PortLimits, RateLimit, Switch};

use crate::frontend::Vm;
use crate::{frame, header, rusage, Measured, Size};

/// A rate no bench run reaches (the largest the switch accepts).
pub const NEVER_HIT: u64 = hostel_switch::config::MAX_LIMIT;

/// Limits in every class, packets and bytes, none of which the bench can reach.
fn never_hit() -> PortLimits {
    let r = RateLimit {
        packets_per_sec: Some(NEVER_HIT),
        bytes_per_sec: Some(NEVER_HIT),
        ..Default::default()
    };
    PortLimits {
        total: r,
        flood: r,
        unknown: r,
    }
}

/// `limits`: give the sending port (VM A) limits it never hits.
pub fn setup(dir: &Path, limits: bool) -> Arc<Switch> {
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
            limits: if limits && id == "vm-a" {
                never_hit()
            } else {
                PortLimits::default()
            },
        })
        .expect("port");
    }
    sw
}

fn cpu(who: libc::c_int) -> f64 {
    let (u, s) = rusage(who);
    u + s
}

fn drops(s: &hostel_switch::StatsSnapshot) -> u64 {
    s.drops.values().sum()
}

/// Streams `size` frames from VM A to VM B for `secs` seconds.
pub fn run(sw: &Switch, dir: &Path, size: Size, secs: f64) -> Measured {
    // Receive buffers as Linux's virtio-net posts them with mergeable buffers: about
    // 1536 bytes for MTU-sized traffic, a page each once large segments arrive. (A
    // power-of-two stride would also make every buffer's first lines share a few cache sets.)
    let rx_buf = if size.tso { 4096 } else { 1536 };
    let hdr = header(size.tso);
    let tx_frame = frame(size.len, 2, 3);
    let mut a = Vm::connect(&dir.join("a.sock"), 1536, hdr, &tx_frame).expect("connect A");
    let mut b = Vm::connect(&dir.join("b.sock"), rx_buf, hdr, &tx_frame).expect("connect B");
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
    let a0 = sw.port_stats("vm-a").unwrap_or_default();
    let b0 = sw.port_stats("vm-b").unwrap_or_default();
    let host0 = crate::host_busy();
    let cpu0 = cpu(libc::RUSAGE_SELF);
    let me0 = cpu(libc::RUSAGE_THREAD);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let per_frame = (size.len + VNET_HDR_LEN).div_ceil(rx_buf as usize);
    let mut polls = 0u32;
    while polls & 1023 != 0 || Instant::now() < deadline {
        polls = polls.wrapping_add(1);
        a.tx.reap();
        if b.rx.reap() > 0 {
            b.refill_rx();
        }
        // Offer no more frames than B has buffers for, as a TCP sender would be held back
        // by its window: frames dropped for want of buffers would be work for nothing.
        let room = b.rx.in_flight() / per_frame;
        let mut pushed = false;
        while a.tx.in_flight() < room && a.tx.repost().is_some() {
            pushed = true;
        }
        if pushed {
            a.tx.publish();
            if !a.tx.device_suppresses_kicks() {
                let _ = a.tx_kick.write(1);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let me = cpu(libc::RUSAGE_THREAD) - me0;
    let switch_cpu = cpu(libc::RUSAGE_SELF) - cpu0 - me;
    let host_cpu = crate::host_busy() - host0;
    let a1 = sw.port_stats("vm-a").unwrap_or_default();
    let b1 = sw.port_stats("vm-b").unwrap_or_default();
    drop(a);
    drop(b);
    let packets = b1.rx_packets - b0.rx_packets;
    Measured {
        packets,
        bytes: b1.rx_bytes - b0.rx_bytes,
        wall,
        switch_cpu,
        driver_cpu: me,
        lost: drops(&a1).saturating_sub(drops(&a0)),
        host_cpu,
    }
}
