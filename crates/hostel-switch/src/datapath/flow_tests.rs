//! End-to-end datapath tests over real split rings in plain guest memory: a "guest" driver
//! fills TX and RX rings, `process_tx` switches, and the test reads what arrived.

use std::collections::HashMap;
use std::sync::Arc;

use vhost_user_backend::VringT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::{Mem, PortRuntime, RxTarget, Vring};
use crate::datapath::tests::{net, port};
use crate::datapath::tx::{process_tx, TxScratch};
use crate::datapath::vnet::*;
use crate::datapath::Core;
use crate::packet::parse::tests::udp4;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;
use hostel_virtq::driver::SplitRing;

const QSIZE: u16 = 256;
const DATA: u64 = 0x10_0000;

pub struct Vm {
    pub mem: Mem,
    pub rt: Arc<PortRuntime>,
    pub tx: Vring,
    pub txr: SplitRing,
    pub rxr: SplitRing,
    rx_bufs: HashMap<u16, (u64, u32)>,
    next: u64,
    scratch: TxScratch,
}

fn ring(mem: &Mem, r: &SplitRing) -> Vring {
    let v = Vring::new(mem.clone(), QSIZE).unwrap();
    v.set_queue_info(r.desc(), r.avail(), r.used()).unwrap();
    v.set_queue_size(QSIZE);
    v.set_queue_ready(true);
    v.set_enabled(true);
    v
}

impl Vm {
    pub fn new(id: &str, features: u64) -> Vm {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let (txr, end) = SplitRing::new(&gm, 0x1000, QSIZE).unwrap();
        let (rxr, _) = SplitRing::new(&gm, (end + 0xfff) & !0xfff, QSIZE).unwrap();
        let mem = GuestMemoryAtomic::new(gm);
        let tx = ring(&mem, &txr);
        let rx = ring(&mem, &rxr);
        let rt = PortRuntime::new(id);
        rt.set_rx(Some(RxTarget {
            vring: rx,
            mem: mem.clone(),
            features,
        }));
        Vm {
            mem,
            rt,
            tx,
            txr,
            rxr,
            rx_bufs: HashMap::new(),
            next: DATA,
            scratch: TxScratch::default(),
        }
    }

    pub fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next;
        self.next += (len as u64 + 0xff) & !0xff;
        a
    }

    /// Queues one frame on TX, split into `pieces` descriptors.
    pub fn queue_tx(&mut self, hdr: VnetHdr, frame: &[u8], pieces: usize) {
        let mut data = hdr.to_bytes().to_vec();
        data.extend_from_slice(frame);
        let addr = self.alloc(data.len());
        let m = self.mem.memory();
        m.write_slice(&data, GuestAddress(addr)).unwrap();
        let step = data.len().div_ceil(pieces.max(1));
        let bufs: Vec<(u64, u32, bool)> = data
            .chunks(step)
            .enumerate()
            .map(|(i, c)| (addr + (i * step) as u64, c.len() as u32, false))
            .collect();
        self.txr.push(&bufs).unwrap();
        self.txr.publish();
    }

    pub fn run_tx(&mut self, core: &Core) {
        process_tx(core, &self.rt, &self.mem, &self.tx, &mut self.scratch);
        while self.txr.pop_used().is_some() {}
    }

    pub fn post_rx(&mut self, n: usize, size: u32) {
        for _ in 0..n {
            let addr = self.alloc(size as usize);
            let head = self.rxr.push(&[(addr, size, true)]).unwrap();
            self.rx_bufs.insert(head, (addr, size));
        }
        self.rxr.publish();
    }

    /// Reassembles received frames (mergeable buffers joined by `num_buffers`).
    pub fn received(&mut self) -> Vec<(VnetHdr, Vec<u8>)> {
        let m = self.mem.memory();
        let mut out = Vec::new();
        while let Some((head, len)) = self.rxr.pop_used() {
            let (addr, _) = self.rx_bufs[&head];
            let mut first = vec![0u8; len as usize];
            m.read_slice(&mut first, GuestAddress(addr)).unwrap();
            let hdr = VnetHdr::from_bytes(first[..VNET_HDR_LEN].try_into().unwrap());
            let mut frame = first[VNET_HDR_LEN..].to_vec();
            for _ in 1..hdr.num_buffers.max(1) {
                let (h, l) = self.rxr.pop_used().unwrap();
                let (a, _) = self.rx_bufs[&h];
                let mut more = vec![0u8; l as usize];
                m.read_slice(&mut more, GuestAddress(a)).unwrap();
                frame.extend_from_slice(&more);
            }
            out.push((hdr, frame));
        }
        out
    }
}

pub const ALL: u64 = F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6;

pub fn setup(features_b: u64) -> (Arc<Core>, Vm, Vm) {
    let a = Vm::new("a2", ALL);
    let b = Vm::new("a3", features_b);
    let rts: HashMap<String, Arc<PortRuntime>> = [
        ("a2".to_string(), a.rt.clone()),
        ("a3".to_string(), b.rt.clone()),
    ]
    .into();
    let t = Tables::build(
        &[net("a", false)],
        &[port("a2", "a", 2), port("a3", "a", 3)],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    (core, a, b)
}

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, last])
}

pub fn ip(last: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 0, 0, last)
}

#[test]
fn small_frames_cross_and_are_counted() {
    let (core, mut a, mut b) = setup(ALL);
    b.post_rx(8, 2048);
    let f = udp4(mac(2), mac(3), ip(2), ip(3), &[7u8; 22]);
    for _ in 0..3 {
        a.queue_tx(VnetHdr::default(), &f, 2);
    }
    a.run_tx(&core);
    let got = b.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(h, fr)| fr == &f && h.num_buffers == 1));
    let sa = a.rt.stats.snapshot();
    let sb = b.rt.stats.snapshot();
    assert_eq!((sa.tx_packets, sb.rx_packets), (3, 3));
}

#[test]
fn drops_have_reasons_and_counters() {
    let (core, mut a, mut b) = setup(ALL);
    // Spoofed source IP, then a frame to a port with no RX buffers posted.
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(9), ip(3), b"x"),
        1,
    );
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), b"x"),
        1,
    );
    a.queue_tx(VnetHdr::default(), &[1, 2, 3], 1);
    a.run_tx(&core);
    let s = a.rt.stats.snapshot();
    assert_eq!(s.drop_count(DropReason::SpoofedSrcIp), 1);
    assert_eq!(s.drop_count(DropReason::NoRxBuffer), 1);
    assert_eq!(s.drop_count(DropReason::Malformed), 1);
    assert!(b.received().is_empty());
    // After the receiver disconnects, frames are dropped as destination_down.
    b.rt.set_rx(None);
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), b"x"),
        1,
    );
    a.run_tx(&core);
    assert_eq!(a.rt.stats.drops(DropReason::DestinationDown), 1);
}

#[test]
fn tso_segment_crosses_as_one_frame_in_mergeable_buffers() {
    let (core, mut a, mut b) = setup(ALL);
    b.post_rx(64, 1536);
    let payload: Vec<u8> = (0..65_000u32).map(|i| (i % 251) as u8).collect();
    let f = udp4(mac(2), mac(3), ip(2), ip(3), &payload);
    let hdr = VnetHdr {
        flags: HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 6,
        num_buffers: 0,
    };
    a.queue_tx(hdr, &f, 17);
    a.run_tx(&core);
    let got = b.received();
    assert_eq!(got.len(), 1);
    let (h, fr) = &got[0];
    assert_eq!(fr, &f);
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(
        usize::from(h.num_buffers),
        (f.len() + VNET_HDR_LEN).div_ceil(1536)
    );
}

#[test]
fn offloads_the_receiver_lacks_are_refused() {
    let (core, mut a, mut b) = setup(F_MRG_RXBUF);
    b.post_rx(64, 1536);
    let hdr = VnetHdr {
        flags: HDR_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    a.queue_tx(hdr, &udp4(mac(2), mac(3), ip(2), ip(3), b"x"), 1);
    a.run_tx(&core);
    assert_eq!(a.rt.stats.drops(DropReason::OffloadUnsupported), 1);
    assert!(b.received().is_empty());
}

#[test]
fn non_mergeable_receiver_needs_one_big_buffer() {
    let (core, mut a, mut b) = setup(F_GUEST_CSUM);
    b.post_rx(4, 256);
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), &[1u8; 600]),
        1,
    );
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), &[1u8; 100]),
        1,
    );
    a.run_tx(&core);
    assert_eq!(a.rt.stats.drops(DropReason::NoRxBuffer), 1);
    // The refused frame gave its buffers back: the second frame used the first buffer.
    let got = b.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 100 + 42);
}

#[test]
fn arp_for_peer_is_answered_into_senders_rx() {
    let (core, mut a, _b) = setup(ALL);
    a.post_rx(4, 2048);
    let mut req = vec![0u8; 42];
    req[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    req[6..12].copy_from_slice(&mac(2).0);
    req[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&mac(2).0);
    req[28..32].copy_from_slice(&ip(2).octets());
    req[38..42].copy_from_slice(&ip(3).octets());
    a.queue_tx(VnetHdr::default(), &req, 1);
    a.run_tx(&core);
    let got = a.received();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1[6..12], &mac(3).0);
    assert_eq!(a.rt.stats.snapshot().replies, 1);
}

#[test]
fn broadcast_stays_inside_its_network() {
    let mut a2 = Vm::new("a2", ALL);
    let mut a3 = Vm::new("a3", ALL);
    let mut b2 = Vm::new("b2", ALL);
    for vm in [&mut a2, &mut a3, &mut b2] {
        vm.post_rx(4, 2048);
    }
    let rts: HashMap<String, Arc<PortRuntime>> = [
        ("a2".to_string(), a2.rt.clone()),
        ("a3".to_string(), a3.rt.clone()),
        ("b2".to_string(), b2.rt.clone()),
    ]
    .into();
    let t = Tables::build(
        &[net("a", false), net("b", false)],
        &[port("a2", "a", 2), port("a3", "a", 3), port("b2", "b", 2)],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let bcast = udp4(mac(2), MacAddr::BROADCAST, ip(2), ip(255), b"hello");
    a2.queue_tx(VnetHdr::default(), &bcast, 1);
    a2.run_tx(&core);
    assert_eq!(a3.received().len(), 1);
    assert!(
        b2.received().is_empty(),
        "broadcast leaked into another tenant"
    );
    assert!(a2.received().is_empty(), "broadcast echoed to its sender");
    // Unicast to "10.0.0.3" from tenant b has no owner there, even though tenant a has one.
    b2.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), b"x"),
        1,
    );
    b2.run_tx(&core);
    assert!(a3.received().is_empty());
    assert_eq!(b2.rt.stats.drops(DropReason::NoRoute), 1);
}

#[test]
fn a_broken_avail_index_is_left_alone() {
    let (core, mut a, mut b) = setup(ALL);
    b.post_rx(8, 2048);
    a.queue_tx(
        VnetHdr::default(),
        &udp4(mac(2), mac(3), ip(2), ip(3), b"x"),
        1,
    );
    // The driver claims a full ring and then some: nothing is taken from it.
    let m = a.mem.memory();
    m.write_obj(QSIZE + 1, GuestAddress(a.txr.avail() + 2))
        .unwrap();
    drop(m);
    a.run_tx(&core);
    assert!(b.received().is_empty());
    assert_eq!(a.rt.stats.snapshot().tx_packets, 0);
}
