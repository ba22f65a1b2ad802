//! Writing one frame into a receiver's RX ring: header, then the frame copied straight from
//! its source (the sender's guest memory or a switch buffer), spread over as many mergeable
//! buffers as needed. Used-ring entries are published only once the whole frame is written,
//! and popped buffers are given back if the frame does not fit.

use hostel_virtq::{Seg, SegList};

use crate::datapath::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::stats::DropReason;

/// A frame split in (at most) two parts: bytes the switch holds (the checked header window,
/// or a whole locally built/uplink frame), then the rest still in the sender's memory.
pub struct FrameSrc<'a> {
    pub head: &'a [u8],
    pub tail: &'a SegList<'a>,
    /// Offset into `tail` where the not-yet-copied part starts.
    pub tail_skip: usize,
    pub len: usize,
}

impl FrameSrc<'_> {
    /// Copies the frame's first `out.len()` bytes (or all of it) into `out`: the switch's
    /// own bytes first, then the sender's memory. Returns how many were copied.
    pub fn copy_prefix(&self, out: &mut [u8]) -> usize {
        let want = out.len().min(self.len);
        let h = self.head.len().min(want);
        out[..h].copy_from_slice(&self.head[..h]);
        if h == want {
            return h;
        }
        h + self.tail.read_at(self.tail_skip, &mut out[h..want])
    }
}

/// Descriptor visits one delivery may spend in the receiver's ring (chains refused on the
/// way included) before the frame is dropped for that receiver: room for the longest
/// legitimate frame (64 mergeable chains of a few descriptors) and then some.
pub const RX_DELIVERY_BUDGET: u32 = 4 * hostel_virtq::MAX_CHAIN_DESCS;

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
pub trait RxQueue<'m> {
    /// Pops the next chain into `out` (whose `visits` say what gathering it cost), returning
    /// its head index.
    fn pop(&mut self, out: &mut SegList<'m>) -> Option<(u16, Result<(), DropReason>)>;
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
struct HdrSpot<'m> {
    segs: [Option<Seg<'m>>; VNET_HDR_LEN],
    n: usize,
}

/// Copies `n` bytes of `src` to `d` from `doff` (the copy loop keeps both in bounds; the
/// segment methods check again and stop at the ends).
fn copy_piece(d: Seg<'_>, doff: usize, src: Piece<'_>, n: usize) {
    match src {
        Piece::Bytes(b) => d.write(doff, &b[..n.min(b.len())]),
        Piece::Guest(s, off) => d.copy_from(doff, &s, off, n),
    };
}

#[derive(Clone, Copy)]
enum Piece<'a> {
    Bytes(&'a [u8]),
    /// Bytes of the sender's guest memory, from an offset into one of its segments.
    Guest(Seg<'a>, usize),
}

/// Delivers `src` with header `hdr` into `q`. Returns the number of bytes written
/// (header included).
///
/// On failure the queue is left as if the frame had never been offered, except that broken
/// chains met before the first usable one stay returned to the driver (empty): going back
/// over them would only repeat the work. Broken chains met after a usable one are popped
/// again next time, since the ring can only rewind to a single position.
pub fn deliver<'m, Q: RxQueue<'m>>(
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
    for s in w.spot.segs[..w.spot.n].iter().flatten() {
        let n = s.len().min(VNET_HDR_LEN - written);
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
struct Writer<'m> {
    chains: [(u16, u32); MAX_RX_CHAINS],
    nchains: usize,
    spot: HdrSpot<'m>,
    /// The chain being filled (reused for every chain: no per-chain copies).
    list: SegList<'m>,
    seg: usize,
    off: usize,
    mergeable: bool,
    /// Where to rewind to if the frame does not fit: the queue as it was, past the broken
    /// chains already returned before the first usable one.
    base: RxMark,
    /// Descriptors read so far, charged against [`RX_DELIVERY_BUDGET`].
    visits: u32,
}

impl<'m> Writer<'m> {
    /// Moves to the receiver's next chain. Chains that fail validation are the receiver's
    /// own fault: they are returned to it empty and the next one is tried, within the
    /// delivery's work budget.
    fn next_chain<Q: RxQueue<'m>>(&mut self, q: &mut Q) -> Result<(), DropReason> {
        if (self.nchains > 0 && !self.mergeable) || self.nchains == MAX_RX_CHAINS {
            return Err(DropReason::NoRxBuffer);
        }
        loop {
            let (head, r) = q.pop(&mut self.list).ok_or(DropReason::NoRxBuffer)?;
            self.visits = self.visits.saturating_add(self.list.visits());
            let broken = r.is_err() || (self.nchains == 0 && self.list.total() < VNET_HDR_LEN);
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
                let segs = self.list.as_slice();
                let n = segs.len().min(VNET_HDR_LEN);
                for (spot, s) in self.spot.segs.iter_mut().zip(&segs[..n]) {
                    *spot = Some(*s);
                }
                self.spot.n = n;
            }
            return Ok(());
        }
    }

    /// Appends `len` bytes of `piece` (or skips them, for the header placeholder).
    fn emit<Q: RxQueue<'m>>(
        &mut self,
        q: &mut Q,
        piece: Option<Piece<'_>>,
        len: usize,
    ) -> Result<(), DropReason> {
        let mut poff = 0;
        while poff < len {
            let Some(&d) = self
                .list
                .as_slice()
                .get(self.seg)
                .filter(|_| self.nchains > 0)
            else {
                self.next_chain(q)?;
                continue;
            };
            let n = (d.len() - self.off).min(len - poff);
            match piece {
                Some(Piece::Bytes(b)) => copy_piece(d, self.off, Piece::Bytes(&b[poff..]), n),
                Some(Piece::Guest(s, off)) => {
                    copy_piece(d, self.off, Piece::Guest(s, off + poff), n)
                }
                None => {}
            }
            self.chains[self.nchains - 1].1 += n as u32;
            poff += n;
            self.off += n;
            if self.off == d.len() {
                self.seg += 1;
                self.off = 0;
            }
        }
        Ok(())
    }

    fn write_all<Q: RxQueue<'m>>(
        &mut self,
        q: &mut Q,
        src: &FrameSrc<'_>,
    ) -> Result<(), DropReason> {
        self.emit(q, None, VNET_HDR_LEN)?;
        let head_len = src.head.len().min(src.len);
        self.emit(q, Some(Piece::Bytes(src.head)), head_len)?;
        let mut left = src.len - head_len;
        if left == 0 {
            return Ok(());
        }
        let mut pos = 0usize;
        for s in src.tail.as_slice() {
            let slen = s.len();
            if src.tail_skip >= pos + slen {
                pos += slen;
                continue;
            }
            let off = src.tail_skip.saturating_sub(pos);
            let n = (slen - off).min(left);
            self.emit(q, Some(Piece::Guest(*s, off)), n)?;
            left -= n;
            pos += slen;
            if left == 0 {
                return Ok(());
            }
        }
        Err(DropReason::BadDescriptor)
    }
}
