//! Writing one frame into a receiver's RX ring: header, then the frame copied straight from
//! its source (the sender's guest memory or a switch buffer), spread over as many mergeable
//! buffers as needed. Used-ring entries are published only once the whole frame is written,
//! and popped buffers are given back if the frame does not fit.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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

/// Longest chain count a single frame may use (64 KiB in 1.5 KiB mergeable buffers fits).
const MAX_RX_CHAINS: usize = 64;

/// The RX side of a queue: just the calls the delivery loop needs, so it can be driven by the
/// vhost-user vring state or, in tests, by a bare queue.
pub trait RxQueue {
    fn pop(&mut self, mem: &GuestMemoryMmap<()>) -> Option<Result<(u16, SegList), DropReason>>;
    fn unpop(&mut self);
    fn add_used(&mut self, head: u16, len: u32) -> Result<(), DropReason>;
}

struct Cursor {
    list: SegList,
    seg: usize,
    off: usize,
}

fn copy_piece(
    dst_mem: &GuestMemoryMmap<()>,
    d: Seg,
    doff: usize,
    src: Piece<'_>,
    n: usize,
) -> Result<(), DropReason> {
    let daddr = GuestAddress(d.addr + doff as u64);
    match src {
        Piece::Bytes(b) => dst_mem
            .write_slice(&b[..n], daddr)
            .map_err(|_| DropReason::NoRxBuffer),
        Piece::Guest(m, addr) => {
            let s = m
                .get_slice(GuestAddress(addr), n)
                .map_err(|_| DropReason::BadDescriptor)?;
            let dv = dst_mem
                .get_slice(daddr, n)
                .map_err(|_| DropReason::NoRxBuffer)?;
            s.copy_to_volatile_slice(dv);
            Ok(())
        }
    }
}

#[derive(Clone, Copy)]
enum Piece<'a> {
    Bytes(&'a [u8]),
    Guest(&'a GuestMemoryMmap<()>, u64),
}

/// Delivers `src` with header `hdr` into `q`. Returns the number of bytes written
/// (header included).
pub fn deliver<Q: RxQueue>(
    q: &mut Q,
    mem: &GuestMemoryMmap<()>,
    mergeable: bool,
    hdr: VnetHdr,
    src: &FrameSrc<'_>,
) -> Result<usize, DropReason> {
    let mut chains = [(0u16, 0u32); MAX_RX_CHAINS];
    let mut nchains = 0usize;
    let mut first = SegList::default();
    let mut cur: Option<Cursor> = None;
    let placeholder = [0u8; VNET_HDR_LEN];

    let result = (|| {
        let mut emit = |piece: Piece<'_>, len: usize| -> Result<(), DropReason> {
            let mut poff = 0;
            while poff < len {
                let need_chain = match &cur {
                    Some(c) => c.seg >= c.list.n,
                    None => true,
                };
                if need_chain {
                    if nchains > 0 && !mergeable {
                        return Err(DropReason::NoRxBuffer);
                    }
                    if nchains == MAX_RX_CHAINS {
                        return Err(DropReason::NoRxBuffer);
                    }
                    let (head, list) = q.pop(mem).ok_or(DropReason::NoRxBuffer)??;
                    chains[nchains] = (head, 0);
                    nchains += 1;
                    if nchains == 1 {
                        first = list;
                        // The header must fit the first buffer's leading bytes.
                        if list.total < VNET_HDR_LEN {
                            return Err(DropReason::NoRxBuffer);
                        }
                    }
                    cur = Some(Cursor { list, seg: 0, off: 0 });
                    continue;
                }
                let Some(c) = cur.as_mut() else {
                    return Err(DropReason::NoRxBuffer);
                };
                let d = c.list.segs[c.seg];
                let n = (d.len as usize - c.off).min(len - poff);
                let p = match piece {
                    Piece::Bytes(b) => Piece::Bytes(&b[poff..]),
                    Piece::Guest(m, a) => Piece::Guest(m, a + poff as u64),
                };
                copy_piece(mem, d, c.off, p, n)?;
                chains[nchains - 1].1 += n as u32;
                poff += n;
                c.off += n;
                if c.off == d.len as usize {
                    c.seg += 1;
                    c.off = 0;
                }
            }
            Ok(())
        };
        emit(Piece::Bytes(&placeholder), VNET_HDR_LEN)?;
        let head_len = src.head.len().min(src.len);
        emit(Piece::Bytes(src.head), head_len)?;
        let mut left = src.len - head_len;
        if left > 0 {
            let tm = src.tail_mem.ok_or(DropReason::BadDescriptor)?;
            let mut pos = 0usize;
            for s in src.tail.as_slice() {
                let slen = s.len as usize;
                if src.tail_skip >= pos + slen {
                    pos += slen;
                    continue;
                }
                let off = src.tail_skip.saturating_sub(pos);
                let n = (slen - off).min(left);
                emit(Piece::Guest(tm, s.addr + off as u64), n)?;
                left -= n;
                pos += slen;
                if left == 0 {
                    break;
                }
            }
            if left != 0 {
                return Err(DropReason::BadDescriptor);
            }
        }
        Ok(())
    })();

    if let Err(e) = result {
        for _ in 0..nchains {
            q.unpop();
        }
        return Err(e);
    }
    let mut h = hdr;
    h.num_buffers = if mergeable { nchains as u16 } else { 0 };
    // Write the real header over the placeholder at the start of the first buffer.
    let bytes = h.to_bytes();
    let mut written = 0;
    for s in first.as_slice() {
        let n = (s.len as usize).min(VNET_HDR_LEN - written);
        mem.write_slice(&bytes[written..written + n], GuestAddress(s.addr))
            .map_err(|_| DropReason::NoRxBuffer)?;
        written += n;
        if written == VNET_HDR_LEN {
            break;
        }
    }
    let mut total = 0usize;
    for &(head, len) in &chains[..nchains] {
        q.add_used(head, len)?;
        total += len as usize;
    }
    Ok(total)
}
