//! Writing one frame into a receiver's RX ring: header, then the frame copied straight from
//! its source (the sender's guest memory or a switch buffer), spread over as many mergeable
//! buffers as needed. Used-ring entries are published only once the whole frame is written,
//! and popped buffers are given back if the frame does not fit.

use vm_memory::GuestMemoryMmap;

use crate::datapath::chain::{Seg, SegList};
use crate::datapath::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::stats::DropReason;

/// A frame split in (at most) two parts: bytes the switch holds (the checked header window,
/// or a whole locally built/uplink frame), then the rest still in the sender's memory.
pub struct FrameSrc<'a> {
    pub head: &'a [u8],
    pub tail_mem: Option<&'a GuestMemoryMmap<()>>,
    pub tail: &'a SegList,
    /// Offset into `tail` where the not-yet-copied part starts.
    pub tail_skip: usize,
    pub len: usize,
}

/// Descriptor visits one delivery may spend in the receiver's ring (chains refused on the
/// way included) before the frame is dropped for that receiver: room for the longest
/// legitimate frame (64 mergeable chains of a few descriptors) and then some.
pub const RX_DELIVERY_BUDGET: u32 = 4 * crate::datapath::chain::MAX_CHAIN_DESCS;

/// Longest chain count a single frame may use (64 KiB in 1.5 KiB mergeable buffers fits).
const MAX_RX_CHAINS: usize = 64;

/// Where a queue's cursors stood; [`RxQueue::rewind`] goes back there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxMark {
    pub next_avail: u16,
    pub next_used: u16,
}

/// The RX side of a queue: just the calls the delivery loop needs, so it can be driven by the
/// vhost-user vring state or, in tests, by a bare queue.
pub trait RxQueue {
    /// Pops the next chain into `out` (whose `visits` say what gathering it cost), returning
    /// its head index.
    fn pop(&mut self, out: &mut SegList) -> Option<(u16, Result<(), DropReason>)>;
    fn mark(&self) -> RxMark;
    /// Forgets every chain popped and every used entry written since `to` was taken (used
    /// entries are not visible to the driver before the group ends).
    fn rewind(&mut self, to: RxMark);
    /// Returns chain `head` to the driver with `len` bytes written. A head outside the ring
    /// names no chain the driver could get back and is skipped.
    fn add_used(&mut self, head: u16, len: u32);
}

/// Where the header goes: the first buffer's leading segments (12 bytes span at most 12).
#[derive(Clone, Copy, Default)]
struct HdrSpot {
    segs: [Seg; VNET_HDR_LEN],
    n: usize,
}

fn copy_piece(d: Seg, doff: usize, src: Piece<'_>, n: usize) {
    let dst = (d.host + doff) as *mut u8;
    let src = match src {
        Piece::Bytes(b) => b.as_ptr(),
        Piece::Host(h) => h as *const u8,
    };
    // SAFETY: `d` (and a `Host` source) were resolved by `SegList::gather` under memory
    // guards the caller still holds, and `doff + n <= d.len` (resp. the source segment
    // length, or the byte slice's) by construction of the copy loop. `copy` tolerates
    // overlap, which a guest could arrange between its own buffers.
    unsafe { std::ptr::copy(src, dst, n) };
}

#[derive(Clone, Copy)]
enum Piece<'a> {
    Bytes(&'a [u8]),
    /// Host address inside the sender's guest memory.
    Host(usize),
}

/// Delivers `src` with header `hdr` into `q`. Returns the number of bytes written
/// (header included).
///
/// On failure the queue is left as if the frame had never been offered, except that broken
/// chains met before the first usable one stay returned to the driver (empty): going back
/// over them would only repeat the work. Broken chains met after a usable one are popped
/// again next time, since the ring can only rewind to a single position.
pub fn deliver<Q: RxQueue>(
    q: &mut Q,
    mergeable: bool,
    hdr: VnetHdr,
    src: &FrameSrc<'_>,
) -> Result<usize, DropReason> {
    let mut w = Writer {
        chains: [(0u16, 0u32); MAX_RX_CHAINS],
        nchains: 0,
        spot: HdrSpot::default(),
        list: SegList::default(),
        seg: 0,
        off: 0,
        mergeable,
        base: q.mark(),
        visits: 0,
    };
    if let Err(e) = w.write_all(q, src) {
        q.rewind(w.base);
        return Err(e);
    }
    let mut h = hdr;
    h.num_buffers = if mergeable { w.nchains as u16 } else { 0 };
    // Write the real header over the bytes skipped at the start of the first buffer.
    let bytes = h.to_bytes();
    let mut written = 0;
    for s in &w.spot.segs[..w.spot.n] {
        let n = (s.len as usize).min(VNET_HDR_LEN - written);
        copy_piece(*s, 0, Piece::Bytes(&bytes[written..]), n);
        written += n;
        if written == VNET_HDR_LEN {
            break;
        }
    }
    let mut total = 0usize;
    for &(head, len) in &w.chains[..w.nchains] {
        q.add_used(head, len);
        total += len as usize;
    }
    Ok(total)
}

/// Copy state across the receiver's chains.
struct Writer {
    chains: [(u16, u32); MAX_RX_CHAINS],
    nchains: usize,
    spot: HdrSpot,
    /// The chain being filled (reused for every chain: no per-chain copies).
    list: SegList,
    seg: usize,
    off: usize,
    mergeable: bool,
    /// Where to rewind to if the frame does not fit: the queue as it was, past the broken
    /// chains already returned before the first usable one.
    base: RxMark,
    /// Descriptors read so far, charged against [`RX_DELIVERY_BUDGET`].
    visits: u32,
}

impl Writer {
    /// Moves to the receiver's next chain. Chains that fail validation are the receiver's
    /// own fault: they are returned to it empty and the next one is tried, within the
    /// delivery's work budget.
    fn next_chain<Q: RxQueue>(&mut self, q: &mut Q) -> Result<(), DropReason> {
        if (self.nchains > 0 && !self.mergeable) || self.nchains == MAX_RX_CHAINS {
            return Err(DropReason::NoRxBuffer);
        }
        loop {
            let (head, r) = q.pop(&mut self.list).ok_or(DropReason::NoRxBuffer)?;
            self.visits = self.visits.saturating_add(self.list.visits);
            let broken = r.is_err() || (self.nchains == 0 && self.list.total < VNET_HDR_LEN);
            if broken {
                q.add_used(head, 0);
                if self.nchains == 0 {
                    self.base = q.mark();
                }
            }
            if self.visits > RX_DELIVERY_BUDGET {
                return Err(DropReason::RxWorkBudget);
            }
            if broken {
                continue;
            }
            self.chains[self.nchains] = (head, 0);
            self.nchains += 1;
            self.seg = 0;
            self.off = 0;
            if self.nchains == 1 {
                let n = self.list.n.min(VNET_HDR_LEN);
                self.spot.segs[..n].copy_from_slice(&self.list.segs[..n]);
                self.spot.n = n;
            }
            return Ok(());
        }
    }

    /// Appends `len` bytes of `piece` (or skips them, for the header placeholder).
    fn emit<Q: RxQueue>(
        &mut self,
        q: &mut Q,
        piece: Option<Piece<'_>>,
        len: usize,
    ) -> Result<(), DropReason> {
        let mut poff = 0;
        while poff < len {
            if self.nchains == 0 || self.seg >= self.list.n {
                self.next_chain(q)?;
                continue;
            }
            let d = self.list.segs[self.seg];
            let n = (d.len as usize - self.off).min(len - poff);
            match piece {
                Some(Piece::Bytes(b)) => copy_piece(d, self.off, Piece::Bytes(&b[poff..]), n),
                Some(Piece::Host(h)) => copy_piece(d, self.off, Piece::Host(h + poff), n),
                None => {}
            }
            self.chains[self.nchains - 1].1 += n as u32;
            poff += n;
            self.off += n;
            if self.off == d.len as usize {
                self.seg += 1;
                self.off = 0;
            }
        }
        Ok(())
    }

    fn write_all<Q: RxQueue>(&mut self, q: &mut Q, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        self.emit(q, None, VNET_HDR_LEN)?;
        let head_len = src.head.len().min(src.len);
        self.emit(q, Some(Piece::Bytes(src.head)), head_len)?;
        let mut left = src.len - head_len;
        if left == 0 {
            return Ok(());
        }
        // The sender's memory guard must be held; its segments are host addresses.
        src.tail_mem.ok_or(DropReason::BadDescriptor)?;
        let mut pos = 0usize;
        for s in src.tail.as_slice() {
            let slen = s.len as usize;
            if src.tail_skip >= pos + slen {
                pos += slen;
                continue;
            }
            let off = src.tail_skip.saturating_sub(pos);
            let n = (slen - off).min(left);
            self.emit(q, Some(Piece::Host(s.host + off)), n)?;
            left -= n;
            pos += slen;
            if left == 0 {
                return Ok(());
            }
        }
        Err(DropReason::BadDescriptor)
    }
}
