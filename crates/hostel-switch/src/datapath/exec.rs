//! The one delivery path into any port ([`with_rx`]): for a vhost-user NIC, one lock of its
//! RX ring per group of frames, one used-index update and at most one notification per
//! group; for a TAP, one `writev` per frame. Counters are added once per group.

use std::sync::atomic::Ordering;

use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use hostel_virtq::{MemMap, Ring, SegList};

use crate::afpacket::PacketDev;
use crate::datapath::port::{PortIo, PortRuntime};
use crate::datapath::rx::{deliver, FrameSrc, RxMark, RxQueue};
use crate::datapath::vnet::{VnetHdr, F_MRG_RXBUF};
use crate::stats::DropReason;
use crate::uplink::TapDev;

/// A locked RX ring seen through [`Ring`], with the queue's cursors copied out; they go back
/// into the queue when the group ends.
pub struct QueueRx<'a> {
    ring: Ring<'a>,
    next_avail: u16,
    /// Entries the driver has offered, as last read (re-read only when they run out).
    avail_idx: u16,
    next_used: u16,
    /// Descriptors read in this group (the receiver's `desc_visits`).
    visits: u64,
}

impl QueueRx<'_> {
    /// Chains the driver offers beyond `next_avail`, re-reading its avail index (0 for a
    /// driver whose index claims more than the ring holds).
    fn offered(&mut self) -> u16 {
        if let Some(n) = self.ring.pending(self.next_avail) {
            self.avail_idx = self.next_avail.wrapping_add(n);
        }
        self.avail_idx.wrapping_sub(self.next_avail)
    }
}

impl<'a> RxQueue<'a> for QueueRx<'a> {
    fn pop(&mut self, out: &mut SegList<'a>) -> Option<(u16, Result<(), DropReason>)> {
        if self.next_avail == self.avail_idx {
            self.avail_idx = self
                .next_avail
                .wrapping_add(self.ring.pending(self.next_avail)?);
            if self.next_avail == self.avail_idx {
                return None;
            }
        }
        let head = self.ring.avail_head(self.next_avail);
        self.next_avail = self.next_avail.wrapping_add(1);
        let r = self
            .ring
            .gather(head, true, usize::MAX, out)
            .map_err(crate::stats::drop_reason_of);
        self.visits += u64::from(out.visits());
        Some((head, r))
    }
    fn mark(&self) -> RxMark {
        RxMark {
            next_avail: self.next_avail,
            next_used: self.next_used,
        }
    }
    fn rewind(&mut self, to: RxMark) {
        self.next_avail = to.next_avail;
        self.next_used = to.next_used;
    }
    fn add_used(&mut self, head: u16, len: u32) {
        if head < self.ring.size() {
            self.ring.put_used(self.next_used, head, len);
            self.next_used = self.next_used.wrapping_add(1);
        }
    }
}

/// An open RX ring of one destination, valid for the duration of [`with_rx`]'s closure.
pub struct RxSink<'a> {
    q: QueueRx<'a>,
    features: u64,
    /// `next_avail` when the ring was opened.
    start: u16,
    packets: u64,
    bytes: u64,
    /// Set once a delivery ran out of work budget: the rest of the group is refused without
    /// looking at the ring again, so one group costs at most one budget.
    over_budget: bool,
}

impl RxSink<'_> {
    /// How many RX chains a sender may take in this group when the receiver is contended
    /// (see [`crate::datapath::fairness`]): unlimited while it offers at least half its
    /// ring, otherwise half of what it offers (at least one).
    pub fn fair_share(&mut self) -> u16 {
        let offered = self.q.offered();
        if u32::from(offered) * 2 >= u32::from(self.q.ring.size()) {
            u16::MAX
        } else {
            offered.div_ceil(2).max(1)
        }
    }

    /// RX chains taken (filled, or returned as unusable) since the ring was opened.
    pub fn taken(&self) -> u16 {
        self.q.next_avail.wrapping_sub(self.start)
    }

    pub fn send(&mut self, hdr: VnetHdr, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        if self.over_budget {
            return Err(DropReason::RxWorkBudget);
        }
        if !hdr.receivable_with(self.features) {
            return Err(DropReason::OffloadUnsupported);
        }
        let mergeable = self.features & F_MRG_RXBUF != 0;
        if let Err(r) = deliver(&mut self.q, mergeable, hdr, src) {
            self.over_budget = r == DropReason::RxWorkBudget;
            return Err(r);
        }
        self.packets += 1;
        // Frame bytes, as the guest sees them (the virtio-net header is not traffic).
        self.bytes += src.len as u64;
        Ok(())
    }
}

/// A device written frame by frame: a TAP, or the external interface.
#[derive(Clone, Copy)]
enum Dev<'a> {
    Tap(&'a TapDev),
    Packet(&'a PacketDev),
}

/// A TAP (or the external interface) opened for a group of frames.
pub struct TapSink<'a> {
    dev: Dev<'a>,
    packets: u64,
    bytes: u64,
    failed: u64,
}

/// Any port, opened for delivering a group of frames.
pub enum Sink<'a> {
    Ring(RxSink<'a>),
    Tap(TapSink<'a>),
}

impl Sink<'_> {
    /// See [`RxSink::fair_share`]; a TAP has no buffers to share out.
    pub fn fair_share(&mut self) -> u16 {
        match self {
            Sink::Ring(r) => r.fair_share(),
            Sink::Tap(_) => u16::MAX,
        }
    }

    pub fn taken(&self) -> u16 {
        match self {
            Sink::Ring(r) => r.taken(),
            Sink::Tap(_) => 0,
        }
    }

    pub fn send(&mut self, hdr: VnetHdr, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        match self {
            Sink::Ring(r) => r.send(hdr, src),
            Sink::Tap(t) => match match t.dev {
                Dev::Tap(d) => d.send(hdr, src),
                Dev::Packet(d) => d.send(hdr, src),
            } {
                Ok(()) => {
                    t.packets += 1;
                    t.bytes += src.len as u64;
                    Ok(())
                }
                Err(r) => {
                    t.failed += 1;
                    Err(r)
                }
            },
        }
    }
}

/// Opens `port` whatever its kind, runs `f` to deliver any number of frames, then
/// completes the group (for a ring: publishes the used entries and signals the guest if it
/// asked to be notified) and updates the port's RX counters. A TAP write that fails is
/// also counted on the TAP's port, as `uplink_error`.
pub fn with_rx<R>(port: &PortRuntime, f: impl FnOnce(&mut Sink<'_>) -> R) -> Result<R, DropReason> {
    let dev = match port.io() {
        PortIo::Vhost(_) => return with_ring(port, f),
        PortIo::Tap(dev) => Dev::Tap(dev),
        PortIo::Packet(dev) => Dev::Packet(dev),
    };
    let mut sink = Sink::Tap(TapSink {
        dev,
        packets: 0,
        bytes: 0,
        failed: 0,
    });
    let r = f(&mut sink);
    if let Sink::Tap(t) = sink {
        if t.packets > 0 {
            port.stats.add_rx(t.packets, t.bytes);
        }
        for _ in 0..t.failed {
            port.stats.count_drop(DropReason::UplinkError);
        }
    }
    Ok(r)
}

fn with_ring<R>(port: &PortRuntime, f: impl FnOnce(&mut Sink<'_>) -> R) -> Result<R, DropReason> {
    let target = port.rx().ok_or(DropReason::DestinationDown)?;
    let guard = target.mem.memory();
    let mem: &GuestMemoryMmap<()> = &guard;
    let map = MemMap::new(mem);
    let mut st = target.vring.get_mut();
    if !st.is_enabled() {
        return Err(DropReason::DestinationDown);
    }
    let q = st.get_queue_mut();
    let ring = Ring::new(q, &map).map_err(|_| DropReason::DestinationDown)?;
    let (next_avail, old_used) = (q.next_avail(), q.next_used());
    let mut sink = Sink::Ring(RxSink {
        start: next_avail,
        q: QueueRx {
            ring,
            next_avail,
            avail_idx: next_avail,
            next_used: old_used,
            visits: 0,
        },
        features: target.features,
        packets: 0,
        bytes: 0,
        over_budget: false,
    });
    let r = f(&mut sink);
    let Sink::Ring(RxSink {
        q: rx,
        packets,
        bytes,
        over_budget,
        ..
    }) = sink
    else {
        return Ok(r); // `f` cannot change the sink's kind
    };
    q.set_next_avail(rx.next_avail);
    q.set_next_used(rx.next_used);
    if rx.next_used != old_used {
        rx.ring.publish_used(rx.next_used);
        if rx.ring.needs_interrupt(old_used, rx.next_used) {
            if let Err(e) = st.signal_used_queue() {
                tracing::debug!(port = %port.id, error = %e, "signalling RX failed");
            }
        }
    }
    if packets > 0 {
        port.stats.add_rx(packets, bytes);
    }
    if rx.visits > 0 {
        port.stats
            .desc_visits
            .fetch_add(rx.visits, Ordering::Relaxed);
    }
    if over_budget {
        port.stats.rx_over_budget.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(port = %port.id, "RX ring over its work budget; frames dropped");
    }
    Ok(r)
}
