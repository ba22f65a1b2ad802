//! A guest descriptor chain as a bounded segment list.
//!
//! Chains come from the guest and are hostile: [`crate::datapath::ring::Ring::gather`]
//! checks every descriptor against guest memory once, splits it at memory-region
//! boundaries, and stores it as (guest address, host address, length) in a fixed-size
//! array, so a chain can neither make the switch allocate nor walk outside the guest's
//! memory. Any violation drops just that frame.
//!
//! Host addresses are resolved once so the copy loops are plain `memcpy`s. They stay valid
//! only while the guest-memory guard the list was gathered under is alive; every user holds
//! that guard for the whole batch.

/// Enough for Linux's TSO frames (MAX_SKB_FRAGS + 2) plus region splits.
pub const MAX_SEGS: usize = 32;

/// Most descriptors one chain may use, counting the indirect descriptor and zero-length
/// ones: what a guest can make the switch read per chain. Linux uses at most
/// MAX_SKB_FRAGS + 2 (19, or 47 with the largest MAX_SKB_FRAGS).
pub const MAX_CHAIN_DESCS: u32 = 128;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    pub addr: u64,
    /// Host virtual address of `addr` (see the module docs for its lifetime).
    pub host: usize,
    pub len: u32,
}

/// A chain's buffers, each segment inside one guest memory region.
#[derive(Clone, Copy, Debug)]
pub struct SegList {
    pub segs: [Seg; MAX_SEGS],
    pub n: usize,
    pub total: usize,
    /// Descriptors read to gather the chain (at most [`MAX_CHAIN_DESCS`]), even if it was
    /// refused: the work it cost.
    pub visits: u32,
}

impl Default for SegList {
    fn default() -> Self {
        SegList {
            segs: [Seg::default(); MAX_SEGS],
            n: 0,
            total: 0,
            visits: 0,
        }
    }
}

impl SegList {
    pub fn as_slice(&self) -> &[Seg] {
        &self.segs[..self.n]
    }

    /// Copies bytes `[skip, skip + out.len())` of the chain into `out`; returns how many
    /// bytes were available. Must be called while the memory guard the list was gathered under
    /// is alive.
    pub fn read_at(&self, skip: usize, out: &mut [u8]) -> usize {
        let mut pos = 0usize; // chain offset of current segment start
        let mut done = 0usize;
        for s in self.as_slice() {
            let slen = s.len as usize;
            let want_from = skip + done;
            if want_from >= pos + slen {
                pos += slen;
                continue;
            }
            if done == out.len() {
                break;
            }
            let off = want_from - pos;
            let n = (slen - off).min(out.len() - done);
            // SAFETY: [host, host + len) was checked to lie inside one mapped guest region
            // at gather time, and the caller still holds the guard keeping it mapped; `out`
            // is ours. Guest memory may change concurrently, which only affects the bytes.
            unsafe {
                std::ptr::copy((s.host + off) as *const u8, out[done..].as_mut_ptr(), n);
            }
            done += n;
            pos += slen;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_at_spans_segments() {
        let data: Vec<u8> = (0..=255u8).collect();
        let (a, b) = (data[..100].to_vec(), data[100..].to_vec());
        let mut l = SegList::default();
        for (i, part) in [&a, &b].into_iter().enumerate() {
            l.segs[i] = Seg {
                addr: 0,
                host: part.as_ptr() as usize,
                len: part.len() as u32,
            };
        }
        (l.n, l.total) = (2, 256);
        let mut out = [0u8; 50];
        assert_eq!(l.read_at(80, &mut out), 50);
        assert_eq!(&out[..], &data[80..130]);
        assert_eq!(l.read_at(250, &mut out), 6);
    }
}
