//! A hostile receiver against the real datapath: RX rings whose chains are broken, empty or
//! enormous. Whatever a receiver offers, it may cost the sender only a bounded amount of
//! work, and the ring's accounting must stay exact (every head the switch took comes back
//! once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use crate::datapath::flow_tests::{ip, mac, setup, Vm, ALL};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::rx::RX_DELIVERY_BUDGET;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::packet::parse::tests::udp4;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;
use hostel_virtq::MAX_CHAIN_DESCS;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

fn write_desc(vm: &Vm, table: u64, i: u64, d: (u64, u32, u16, u16)) {
    let m = vm.mem.memory();
    let at = GuestAddress(table + 16 * i);
    m.write_obj(d.0, at).unwrap();
    m.write_obj(d.1, GuestAddress(at.0 + 8)).unwrap();
    m.write_obj(d.2, GuestAddress(at.0 + 12)).unwrap();
    m.write_obj(d.3, GuestAddress(at.0 + 14)).unwrap();
}

/// Every used entry the driver can see, in order.
fn used_heads(vm: &mut Vm) -> Vec<u16> {
    let mut heads = Vec::new();
    while let Some((h, _)) = vm.rxr.pop_used() {
        heads.push(h);
    }
    heads
}

/// Defect: a delivery that popped a good chain, returned a bad one, then ran out of buffers
/// rewound the ring by the number of good chains, so the bad head came back twice and the
/// good one never.
#[test]
fn a_refused_frame_returns_every_head_exactly_once() {
    let (core, mut a, mut b) = setup(ALL);
    let (small, bad, big) = (b.alloc(64), b.alloc(64), b.alloc(4096));
    let head_small = b.rxr.push(&[(small, 64, true)]).unwrap();
    // Device-readable: not a receive buffer, returned to the guest empty.
    let head_bad = b.rxr.push(&[(bad, 64, false)]).unwrap();
    b.rxr.publish();
    let frame = udp4(mac(2), mac(3), ip(2), ip(3), &[5u8; 200]);
    a.queue_tx(VnetHdr::default(), &frame, 1);
    a.run_tx(&core);
    assert_eq!(a.rt.stats.drops(DropReason::NoRxBuffer), 1);

    let head_big = b.rxr.push(&[(big, 4096, true)]).unwrap();
    b.rxr.publish();
    a.queue_tx(VnetHdr::default(), &frame, 1);
    a.run_tx(&core);
    assert_eq!(b.rt.stats.snapshot().rx_packets, 1);
    let mut heads = used_heads(&mut b);
    heads.sort_unstable();
    let mut want = vec![head_small, head_bad, head_big];
    want.sort_unstable();
    assert_eq!(
        heads, want,
        "each head the switch took must come back exactly once"
    );
}

/// Three ports of one network: `a2` sends, `a3` is honest, `a4` offers hostile RX chains.
fn three() -> (Arc<Core>, Vm, Vm, Vm) {
    let (a2, a3, a4) = (Vm::new("a2", ALL), Vm::new("a3", ALL), Vm::new("a4", ALL));
    let rts: HashMap<String, Arc<PortRuntime>> = [
        ("a2".to_string(), a2.rt.clone()),
        ("a3".to_string(), a3.rt.clone()),
        ("a4".to_string(), a4.rt.clone()),
    ]
    .into();
    let t = Tables::build(
        &[net("a", false)],
        &[port("a2", "a", 2), port("a3", "a", 3), port("a4", "a", 4)],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    (core, a2, a3, a4)
}

/// Fills `vm`'s whole RX avail ring with one head whose chain is an indirect table of
/// 65,535 zero-length writable descriptors: valid, empty, and as slow to walk as a chain
/// can be.
pub fn offer_enormous_empty_chains(vm: &mut Vm) {
    const N: u64 = 65_535;
    let table = vm.alloc((16 * N) as usize);
    let buf = vm.alloc(64);
    for i in 0..N {
        let last = i + 1 == N;
        let flags = if last { F_WRITE } else { F_WRITE | F_NEXT };
        let next = if last { 0 } else { (i + 1) as u16 };
        write_desc(vm, table, i, (buf, 0, flags, next));
    }
    write_desc(
        vm,
        vm.rxr.desc(),
        0,
        (table, (16 * N) as u32, F_INDIRECT, 0),
    );
    let m = vm.mem.memory();
    for slot in 0..u64::from(vm.rxr.size()) {
        m.write_obj(0u16, GuestAddress(vm.rxr.avail() + 4 + 2 * slot))
            .unwrap();
    }
    m.write_obj(vm.rxr.size(), GuestAddress(vm.rxr.avail() + 2))
        .unwrap();
}

/// Defect: delivering to a receiver walked its RX ring without limit in the sender's
/// thread. A broadcast must cost a bounded number of descriptor visits however the
/// receiver's ring looks, the other receivers still get the frame, and the loss is counted
/// on the sender and marked on the receiver.
#[test]
fn a_hostile_receiver_costs_the_sender_bounded_work() {
    let (core, mut a2, mut a3, mut a4) = three();
    a3.post_rx(32, 2048);
    offer_enormous_empty_chains(&mut a4);
    let bcast = udp4(mac(2), MacAddr::BROADCAST, ip(2), ip(255), b"hello");
    let mut total = Duration::ZERO;
    for _ in 0..8 {
        a2.queue_tx(VnetHdr::default(), &bcast, 1);
        let t0 = Instant::now();
        a2.run_tx(&core);
        total += t0.elapsed();
        // The hostile guest re-offers everything it got back.
        let m = a4.mem.memory();
        let used: u16 = m.read_obj(GuestAddress(a4.rxr.used() + 2)).unwrap();
        m.write_obj(
            used.wrapping_add(a4.rxr.size()),
            GuestAddress(a4.rxr.avail() + 2),
        )
        .unwrap();
    }
    assert_eq!(a3.received().len(), 8, "the honest receiver lost frames");
    let visits = a4.rt.stats.snapshot().desc_visits;
    assert!(
        visits <= 8 * u64::from(RX_DELIVERY_BUDGET + MAX_CHAIN_DESCS),
        "{visits} descriptor visits for 8 broadcasts"
    );
    // Bounded work takes microseconds; the margin absorbs a loaded machine. Before the
    // budget, each broadcast took 1.5-1.8 s here.
    assert!(
        total < Duration::from_millis(500),
        "8 broadcasts took {total:?}"
    );
    assert_eq!(a2.rt.stats.drops(DropReason::RxWorkBudget), 8);
    assert_eq!(a4.rt.stats.snapshot().rx_over_budget, 8);
}

/// Defect: flood copies that found no RX buffer were lost without a counter.
#[test]
fn flood_copies_without_buffers_are_counted() {
    let (core, mut a2, mut a3, _a4) = three();
    a3.post_rx(1, 2048);
    let bcast = udp4(mac(2), MacAddr::BROADCAST, ip(2), ip(255), b"hello");
    for _ in 0..3 {
        a2.queue_tx(VnetHdr::default(), &bcast, 1);
    }
    a2.run_tx(&core);
    assert_eq!(a3.received().len(), 1);
    // a3 ran out after one copy; a4 never posted any.
    assert_eq!(a2.rt.stats.drops(DropReason::NoRxBuffer), 2 + 3);
}
