//! Storm control and fairness over real rings: rate limits on a sender's TX, and the share of
//! a receiver's RX ring one sender may take per batch.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{PortLimits, RateLimit};
use crate::datapath::flow_tests::{Vm, ALL};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::packet::parse::tests::udp4;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, last])
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn unicast(from: u8, to: u8) -> Vec<u8> {
    udp4(mac(from), mac(to), ip(from), ip(to), &[0u8; 18])
}

fn broadcast(from: u8) -> Vec<u8> {
    udp4(mac(from), MacAddr::BROADCAST, ip(from), ip(255), &[0u8; 18])
}

fn pps(rate: u64, burst: u64) -> RateLimit {
    RateLimit {
        packets_per_sec: Some(rate),
        burst_packets: Some(burst),
        ..Default::default()
    }
}

/// Ports a2, a3, a4 on one network; a2 has `limits`.
fn three(limits: PortLimits) -> (Arc<Core>, Vm, Vm, Vm) {
    let vms = [Vm::new("a2", ALL), Vm::new("a3", ALL), Vm::new("a4", ALL)];
    let rts: HashMap<String, Arc<PortRuntime>> = vms
        .iter()
        .map(|v| (v.rt.id.clone(), v.rt.clone()))
        .collect();
    let mut a2 = port("a2", "a", 2);
    a2.limits = limits;
    let t = Tables::build(
        &[net("a", false)],
        &[a2, port("a3", "a", 3), port("a4", "a", 4)],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let [a, b, c] = vms;
    (core, a, b, c)
}

#[test]
fn a_rate_limited_port_passes_its_burst_and_rate_only() {
    let (rate, burst, sent) = (100u64, 10u64, 200u64);
    let (core, mut a, mut b, _c) = three(PortLimits {
        total: pps(rate, burst),
        ..Default::default()
    });
    b.post_rx(250, 2048);
    for _ in 0..sent {
        a.queue_tx(VnetHdr::default(), &unicast(2, 3), 1);
    }
    let start = Instant::now();
    a.run_tx(&core);
    let elapsed = start.elapsed().as_secs_f64();
    let passed = b.received().len() as u64;
    let allowed = burst + (rate as f64 * elapsed) as u64;
    assert!(
        (burst..=allowed).contains(&passed),
        "{passed} passed, {allowed} allowed"
    );
    let s = a.rt.stats.snapshot();
    assert_eq!(s.tx_packets, passed);
    assert_eq!(s.drop_count(DropReason::RateLimited), sent - passed);
    // The limit is on a2 alone: a3 answers at full speed.
    a.post_rx(200, 2048);
    for _ in 0..50 {
        b.queue_tx(VnetHdr::default(), &unicast(3, 2), 1);
    }
    b.run_tx(&core);
    assert_eq!(a.received().len(), 50);
}

#[test]
fn a_storm_limited_broadcaster_leaves_room_for_unicast() {
    let (core, mut a, mut b, mut c) = three(PortLimits {
        flood: pps(10, 4),
        ..Default::default()
    });
    b.post_rx(64, 2048);
    c.post_rx(64, 2048);
    for _ in 0..100 {
        a.queue_tx(VnetHdr::default(), &broadcast(2), 1);
    }
    a.run_tx(&core);
    // The broadcaster's own unicast is not a storm.
    for _ in 0..5 {
        a.queue_tx(VnetHdr::default(), &unicast(2, 4), 1);
    }
    a.run_tx(&core);
    for _ in 0..20 {
        c.queue_tx(VnetHdr::default(), &unicast(4, 3), 1);
    }
    c.run_tx(&core);
    let at_b = b.received();
    let floods = at_b.iter().filter(|(_, f)| f[0..6] == [0xff; 6]).count();
    assert!(floods <= 5, "{floods} broadcasts got through a burst of 4");
    assert_eq!(at_b.len() - floods, 20, "unicast to b was crowded out");
    assert_eq!(c.received().len(), floods + 5);
    let s = a.rt.stats.snapshot();
    assert_eq!(s.drop_count(DropReason::StormLimited), 100 - floods as u64);
    assert_eq!(c.rt.stats.snapshot().drops.values().sum::<u64>(), 0);
}

#[test]
fn one_sender_cannot_take_a_nearly_full_receivers_last_buffers() {
    let (core, mut a, mut b, mut c) = three(PortLimits::default());
    // b keeps up badly: 41 buffers posted out of a 256-entry ring. c talks to it now and
    // then, a all the time.
    b.post_rx(41, 2048);
    c.queue_tx(VnetHdr::default(), &unicast(4, 3), 1);
    c.run_tx(&core);
    assert_eq!(b.received().len(), 1);
    for _ in 0..64 {
        a.queue_tx(VnetHdr::default(), &unicast(2, 3), 1);
    }
    a.run_tx(&core);
    for _ in 0..8 {
        c.queue_tx(VnetHdr::default(), &unicast(4, 3), 1);
    }
    c.run_tx(&core);
    let got = b.received();
    let from_c = got.iter().filter(|(_, f)| f[6..12] == mac(4).0).count();
    assert_eq!(
        from_c, 8,
        "the heavy sender left no buffers for the light one"
    );
    let sa = a.rt.stats.snapshot();
    assert_eq!(sa.tx_packets, 20, "the heavy sender got more than half");
    assert_eq!(sa.drop_count(DropReason::RxFairShare), 44);
}

#[test]
fn a_receiver_that_keeps_up_is_not_rationed() {
    let (core, mut a, mut b, _c) = three(PortLimits::default());
    b.post_rx(200, 2048);
    for _ in 0..150 {
        a.queue_tx(VnetHdr::default(), &unicast(2, 3), 1);
    }
    a.run_tx(&core);
    assert_eq!(b.received().len(), 150);
    assert!(a.rt.stats.snapshot().drops.is_empty());
}

#[test]
fn a_lone_sender_is_not_rationed() {
    let (core, mut a, mut b, _c) = three(PortLimits::default());
    // A slow receiver, but nobody else sends to it: nothing to be fair to.
    b.post_rx(40, 2048);
    for _ in 0..64 {
        a.queue_tx(VnetHdr::default(), &unicast(2, 3), 1);
    }
    a.run_tx(&core);
    assert_eq!(b.received().len(), 40);
    let s = a.rt.stats.snapshot();
    assert_eq!(s.drop_count(DropReason::RxFairShare), 0);
    assert_eq!(s.drop_count(DropReason::NoRxBuffer), 24);
}
