//! A port's TX queue: pop a batch of chains, classify each frame, execute the decisions
//! grouped by destination, then complete the chains and notify once.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use hostel_virtq::{MemMap, Ring, SegList};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use crate::datapath::exec::with_rx;
use crate::datapath::forward::{self, Forward};
use crate::datapath::ids_intra;
use crate::datapath::pipeline::{Ctx, Decision, Ingress};
use crate::datapath::port::{Mem, PortRuntime, Vring};
use crate::datapath::ratelimit::{self, Class};
use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::datapath::Core;
use crate::stats::DropReason;
use crate::tables::{PortIdx, Tables};

/// Frames handled per lock/notify round.
pub const BATCH: usize = 64;
/// Bytes of each frame copied out of guest memory for parsing and checking.
pub const WINDOW: usize = 128;
/// A 64 KiB TSO segment plus L2-L4 headers.
pub const MAX_FRAME: usize = 65_536 + 256;
/// Batches per queue event before yielding back to the event loop.
const MAX_ROUNDS: usize = 1024;

/// What the switch learns about one TX chain of a batch. Holds no borrow of guest memory, so
/// the scratch keeps a batch's worth for the whole connection and a call rebuilds nothing
/// but the chains' segment lists (which cost a few words each to make: their segments are
/// left uninitialised).
#[derive(Clone, Copy)]
struct TxMeta {
    head: u16,
    hdr: VnetHdr,
    window: [u8; WINDOW],
    wlen: usize,
    frame_len: usize,
    decision: Decision,
    /// Where a policy stage wants a copy sent.
    mirror: Option<PortIdx>,
}

impl Default for TxMeta {
    fn default() -> Self {
        TxMeta {
            head: 0,
            hdr: VnetHdr::default(),
            window: [0; WINDOW],
            wlen: 0,
            frame_len: 0,
            decision: Decision::Drop(DropReason::Malformed),
            mirror: None,
        }
    }
}

impl TxMeta {
    /// The frame: the checked window, then the rest still in the sender's `segs`.
    fn src<'a>(&'a self, segs: &'a SegList<'a>) -> FrameSrc<'a> {
        FrameSrc {
            head: &self.window[..self.wlen],
            tail: segs,
            tail_skip: VNET_HDR_LEN + self.wlen,
            len: self.frame_len,
        }
    }
}

/// Per-port buffers allocated once per connection, so the TX path never allocates.
pub struct TxScratch {
    items: Box<[TxMeta; BATCH]>,
    fwd: forward::Scratch,
}

impl Default for TxScratch {
    fn default() -> Self {
        TxScratch {
            items: Box::new([TxMeta::default(); BATCH]),
            fwd: forward::Scratch::default(),
        }
    }
}

/// A batch's segment lists, made in place only as slots are first used: an array of
/// `SegList::new()` made up front costs a 50 KB memset per call (LLVM zeroes the lists'
/// uninitialised segments); `SegList::init_in` writes three words per slot.
struct SegSlots<'m> {
    slots: [MaybeUninit<SegList<'m>>; BATCH],
    /// Slots `..ready` hold a list.
    ready: usize,
}

impl<'m> SegSlots<'m> {
    fn new() -> Self {
        SegSlots {
            slots: [const { MaybeUninit::uninit() }; BATCH],
            ready: 0,
        }
    }

    /// The first `n` lists (`n` at most [`BATCH`]), making any not made yet.
    fn first_mut(&mut self, n: usize) -> &mut [SegList<'m>] {
        let n = n.min(BATCH);
        while self.ready < n {
            SegList::init_in(&mut self.slots[self.ready]);
            self.ready += 1;
        }
        // SAFETY: slots `..n` are initialised (the loop above), `MaybeUninit<T>` has `T`'s
        // layout, and the slice borrows `self` mutably for its lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast(), n) }
    }
}

/// Reads the header and window of one TX chain and runs the pipeline on it.
fn classify(
    core: &Core,
    tables: &Tables,
    me: Option<PortIdx>,
    item: &mut TxMeta,
    segs: &SegList<'_>,
) -> Decision {
    item.mirror = None;
    if segs.total() < VNET_HDR_LEN {
        return Decision::Drop(DropReason::ShortChain);
    }
    let mut h = [0u8; VNET_HDR_LEN];
    if segs.read_at(0, &mut h) != VNET_HDR_LEN {
        return Decision::Drop(DropReason::BadDescriptor);
    }
    item.hdr = VnetHdr::from_bytes(&h);
    item.hdr.num_buffers = 0;
    item.frame_len = segs.total() - VNET_HDR_LEN;
    let want = item.frame_len.min(WINDOW);
    item.wlen = segs.read_at(VNET_HDR_LEN, &mut item.window[..want]);
    if item.wlen != want {
        return Decision::Drop(DropReason::BadDescriptor);
    }
    if let Err(r) = item.hdr.validate(item.frame_len) {
        return Decision::Drop(r);
    }
    let Some(pi) = me else {
        return Decision::Drop(DropReason::UnknownPort);
    };
    let mut ctx = Ctx::new(
        tables,
        Ingress::Port(pi),
        &item.window[..item.wlen],
        item.frame_len,
    );
    let d = core.pipeline.classify(&mut ctx);
    item.mirror = ctx.mirror;
    d
}

/// Handles everything queued on `port`'s TX ring. Returns when the ring is empty and
/// notifications are re-enabled (the standard race-free virtio loop), with the number of
/// chains taken from the ring (refused ones included): the work this queue event found.
pub fn process_tx(
    core: &Core,
    port: &PortRuntime,
    mem: &Mem,
    vring: &Vring,
    scratch: &mut TxScratch,
) -> u64 {
    let tables = core.tables();
    let me = tables.port_by_key(port.key);
    let guard = mem.memory();
    let m: &GuestMemoryMmap<()> = &guard;
    let map = MemMap::new(m);
    let items = &mut *scratch.items;
    // One segment list per slot of a batch, reused by every batch of the call; they borrow
    // this call's memory map, so they cannot live in the scratch.
    let mut segs = SegSlots::new();
    let mut limiter = me.and_then(|pi| port.policer.engage(&tables.port(pi).cfg.limits));
    let mut taken = 0u64;
    // Bounded so a guest that keeps its avail index moving cannot pin the worker: after
    // MAX_ROUNDS full batches the worker serves its other events and comes back.
    for _ in 0..MAX_ROUNDS {
        let mut st = vring.get_mut();
        let q = st.get_queue_mut();
        let Ok(ring) = Ring::new(q, &map) else {
            return taken;
        };
        let (mut next, old_used) = (q.next_avail(), q.next_used());
        ring.disable_kicks();
        let Some(avail) = ring.pending(next) else {
            // A driver claiming more entries than the ring holds is broken: leave the ring
            // alone until it kicks again.
            let _ = ring.enable_kicks(next);
            return taken;
        };
        let n = usize::from(avail).min(BATCH);
        taken += n as u64;
        let mut visits = 0u64;
        let segs = segs.first_mut(n);
        for (item, sl) in items[..n].iter_mut().zip(segs.iter_mut()) {
            item.head = ring.avail_head(next);
            next = next.wrapping_add(1);
            item.decision = match ring.gather(item.head, false, MAX_FRAME + VNET_HDR_LEN, sl) {
                Ok(()) => classify(core, &tables, me, item, sl),
                Err(e) => Decision::Drop(crate::stats::drop_reason_of(e)),
            };
            visits += u64::from(sl.visits());
        }
        if visits > 0 {
            port.stats
                .desc_visits
                .fetch_add(visits, std::sync::atomic::Ordering::Relaxed);
        }
        q.set_next_avail(next);
        if let Some(l) = limiter.as_deref_mut() {
            ratelimit::police(
                l,
                &mut items[..n],
                // A decision other than Drop means the window holds an Ethernet header.
                |it| Class::of(&it.decision, it.window[0] & 1 == 1).map(|c| (c, it.frame_len)),
                |it, r| it.decision = Decision::Drop(r),
            );
        }
        // A tenant's VM-to-VM traffic through its detection, when it asked for that.
        if let Some((ids, net)) = me.and_then(|pi| ids_intra::for_port(&tables, pi)) {
            let buf = scratch.fwd.frame_buf();
            for (item, sl) in items[..n].iter_mut().zip(segs.iter()) {
                if matches!(item.decision, Decision::Unicast(_)) {
                    if let Some(r) = ids_intra::inspect(ids, net, &item.src(sl), buf) {
                        item.decision = Decision::Drop(r);
                    }
                }
            }
        }
        if n > 0 {
            execute(&tables, me, port, &items[..n], segs, &mut scratch.fwd);
            let mut used = old_used;
            for item in &items[..n] {
                // An out-of-range head names no chain the driver could get back.
                if item.head < ring.size() {
                    ring.put_used(used, item.head, 0);
                    used = used.wrapping_add(1);
                }
            }
            q.set_next_used(used);
            ring.publish_used(used);
            if ring.needs_interrupt(old_used, used) {
                let _ = st.signal_used_queue();
            }
        }
        if n == BATCH {
            continue;
        }
        if !ring.enable_kicks(next) {
            return taken;
        }
    }
    // The driver does not kick again for entries it has already offered, so kick ourselves:
    // the event loop comes back here after the other ready events.
    let _ = vring.enable_notification();
    if let Some(kick) = vring.get_ref().get_kick() {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to the queue's kick eventfd, which the
        // vring keeps open while its state is borrowed.
        unsafe { libc::write(kick.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
    taken
}

fn execute(
    tables: &Tables,
    me: Option<PortIdx>,
    port: &PortRuntime,
    items: &[TxMeta],
    segs: &[SegList<'_>],
    scratch: &mut forward::Scratch,
) {
    let n = items.len();
    let mut done = [false; BATCH];
    let (mut packets, mut bytes) = (0u64, 0u64);
    // Read at most once per batch, and only for a receiver that has had other senders.
    let mut now = None;
    for i in 0..n {
        if done[i] {
            continue;
        }
        let Decision::Unicast(q) = items[i].decision else {
            continue;
        };
        // Deliver every frame of the batch bound for q under one lock of q's ring, but no
        // more than this sender's share of it when others send to q and it falls behind.
        let rt = &tables.port(q).rt;
        let contended = rt
            .rx_contention
            .note(port.key, || *now.get_or_insert_with(ratelimit::now_ns));
        let res = with_rx(rt, |sink| {
            let share = if contended {
                sink.fair_share()
            } else {
                u16::MAX
            };
            for j in i..n {
                if done[j] || items[j].decision != Decision::Unicast(q) {
                    continue;
                }
                done[j] = true;
                if sink.taken() >= share {
                    port.stats.count_drop(DropReason::RxFairShare);
                    continue;
                }
                match sink.send(items[j].hdr, &items[j].src(&segs[j])) {
                    Ok(()) => {
                        packets += 1;
                        bytes += items[j].frame_len as u64;
                    }
                    Err(r) => port.stats.count_drop(r),
                }
            }
        });
        if let Err(r) = res {
            for j in i..n {
                if !done[j] && items[j].decision == Decision::Unicast(q) {
                    done[j] = true;
                    port.stats.count_drop(r);
                }
            }
        }
    }
    let Some(pi) = me else {
        for item in items {
            if let Decision::Drop(r) = item.decision {
                port.stats.count_drop(r);
            }
        }
        port.stats.add_tx(packets, bytes);
        return;
    };
    let fwd = Forward {
        tables,
        ingress: Ingress::Port(pi),
        sender: port,
    };
    for (i, (item, sl)) in items.iter().zip(segs).enumerate() {
        if done[i] || matches!(item.decision, Decision::Unicast(_)) {
            continue;
        }
        match fwd.forward(item.decision, item.hdr, &item.src(sl), scratch) {
            Ok(()) => {
                packets += 1;
                bytes += item.frame_len as u64;
            }
            Err(r) => port.stats.count_drop(r),
        }
    }
    for (item, sl) in items.iter().zip(segs).filter(|_| tables.has_policies()) {
        if let Some(mi) = item.mirror {
            fwd.mirror(mi, item.decision, item.hdr, &item.src(sl));
        }
    }
    // What went through an edge to the wire leaves now, in one system call.
    if let Some(x) = &tables.ext {
        x.rt.flush();
    }
    port.stats.add_tx(packets, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seg_slots_grow_to_what_is_asked_and_no_further() {
        let mut s = SegSlots::new();
        assert!(s.first_mut(0).is_empty());
        assert_eq!(s.first_mut(3).len(), 3);
        assert_eq!(s.ready, 3);
        assert!(s.first_mut(2).iter().all(|l| l.is_empty()));
        assert_eq!(s.ready, 3);
        assert_eq!(s.first_mut(BATCH + 5).len(), BATCH);
        assert_eq!(s.ready, BATCH);
    }
}
