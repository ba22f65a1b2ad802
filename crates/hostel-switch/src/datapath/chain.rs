//! Turning guest descriptor chains into bounded segment lists.
//!
//! Chains come from the guest and are hostile: every descriptor is checked against guest
//! memory once, split at memory-region boundaries, and stored as (guest address, host
//! address, length) in a fixed-size array, so a chain can neither make the switch allocate
//! nor walk outside the guest's memory. Any violation drops just that frame.
//!
//! Host addresses are resolved once here so the copy loops are plain `memcpy`s. They stay
//! valid only while the guest-memory guard the list was gathered under is alive; every user
//! holds that guard for the whole batch.

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::stats::DropReason;

/// Enough for Linux's TSO frames (MAX_SKB_FRAGS + 2) plus region splits.
pub const MAX_SEGS: usize = 32;

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
}

impl Default for SegList {
    fn default() -> Self {
        SegList {
            segs: [Seg::default(); MAX_SEGS],
            n: 0,
            total: 0,
        }
    }
}

/// A descriptor as the switch needs it; implemented for virtio-queue's split descriptor and
/// for plain tuples (tests, fuzzing).
pub trait DescLike {
    fn addr(&self) -> u64;
    fn byte_len(&self) -> u32;
    fn is_write_only(&self) -> bool;
}

impl DescLike for virtio_queue::desc::split::Descriptor {
    fn addr(&self) -> u64 {
        self.addr().0
    }
    fn byte_len(&self) -> u32 {
        self.len()
    }
    fn is_write_only(&self) -> bool {
        self.is_write_only()
    }
}

impl DescLike for (u64, u32, bool) {
    fn addr(&self) -> u64 {
        self.0
    }
    fn byte_len(&self) -> u32 {
        self.1
    }
    fn is_write_only(&self) -> bool {
        self.2
    }
}

impl SegList {
    pub fn as_slice(&self) -> &[Seg] {
        &self.segs[..self.n]
    }

    /// Collects the descriptors of one direction. `writable` selects RX (device-writable)
    /// buffers; a descriptor of the other direction is an error, as is a total above `max`.
    pub fn gather<M, D, I>(
        mem: &M,
        descs: I,
        writable: bool,
        max: usize,
    ) -> Result<SegList, DropReason>
    where
        M: GuestMemoryBackend + ?Sized,
        D: DescLike,
        I: IntoIterator<Item = D>,
    {
        let mut out = SegList::default();
        out.gather_into(mem, descs, writable, max)?;
        Ok(out)
    }

    /// [`SegList::gather`] into an existing list, so hot paths reuse one buffer instead of
    /// moving a 768-byte value per frame.
    pub fn gather_into<M, D, I>(
        &mut self,
        mem: &M,
        descs: I,
        writable: bool,
        max: usize,
    ) -> Result<(), DropReason>
    where
        M: GuestMemoryBackend + ?Sized,
        D: DescLike,
        I: IntoIterator<Item = D>,
    {
        self.n = 0;
        self.total = 0;
        for d in descs {
            if d.is_write_only() != writable {
                return Err(DropReason::BadDescriptor);
            }
            let len = d.byte_len() as usize;
            if len == 0 {
                continue;
            }
            self.total = self.total.saturating_add(len);
            if self.total > max {
                return Err(DropReason::TooLong);
            }
            self.push_range(mem, d.addr(), len)?;
        }
        Ok(())
    }

    fn push_range<M: GuestMemoryBackend + ?Sized>(
        &mut self,
        mem: &M,
        addr: u64,
        len: usize,
    ) -> Result<(), DropReason> {
        let mut cur = addr;
        let mut left = len as u64;
        while left > 0 {
            let (region, raddr) = mem
                .to_region_addr(GuestAddress(cur))
                .ok_or(DropReason::BadDescriptor)?;
            let room = region.len().saturating_sub(raddr.raw_value());
            let n = room.min(left);
            if n == 0 || self.n == MAX_SEGS {
                return Err(DropReason::BadDescriptor);
            }
            let host = region
                .get_host_address(raddr)
                .map_err(|_| DropReason::BadDescriptor)? as usize;
            self.segs[self.n] = Seg {
                addr: cur,
                host,
                len: n as u32,
            };
            self.n += 1;
            cur = cur.checked_add(n).ok_or(DropReason::BadDescriptor)?;
            left -= n;
        }
        Ok(())
    }

    /// Copies bytes `[skip, skip + out.len())` of the chain into `out`; returns how many
    /// bytes were available. Must be called while the memory guard of [`SegList::gather`]
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
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)])
            .unwrap()
    }

    #[test]
    fn gather_splits_regions_and_rejects_bad() {
        let m = mem();
        let l = SegList::gather(&m, [(0xf00u64, 0x200u32, false)], false, 1 << 20).unwrap();
        assert_eq!(l.n, 2);
        assert_eq!(l.total, 0x200);
        assert_eq!(
            SegList::gather(&m, [(0x1f00u64, 0x200u32, false)], false, 1 << 20).unwrap_err(),
            DropReason::BadDescriptor
        );
        assert_eq!(
            SegList::gather(&m, [(0u64, 16u32, true)], false, 1 << 20).unwrap_err(),
            DropReason::BadDescriptor
        );
        assert_eq!(
            SegList::gather(&m, [(0u64, 64u32, false)], false, 32).unwrap_err(),
            DropReason::TooLong
        );
        let many = (0..40).map(|i| (i * 16u64, 16u32, false));
        assert_eq!(
            SegList::gather(&m, many, false, 1 << 20).unwrap_err(),
            DropReason::BadDescriptor
        );
        assert_eq!(
            SegList::gather(&m, [(u64::MAX - 4, 16u32, false)], false, 1 << 20).unwrap_err(),
            DropReason::BadDescriptor
        );
    }

    #[test]
    fn read_at_spans_segments() {
        let m = mem();
        let data: Vec<u8> = (0..=255u8).collect();
        m.write_slice(&data[..100], GuestAddress(0x100)).unwrap();
        m.write_slice(&data[100..], GuestAddress(0x800)).unwrap();
        let l = SegList::gather(
            &m,
            [(0x100u64, 100u32, false), (0x800, 156, false)],
            false,
            1 << 20,
        )
        .unwrap();
        let mut out = [0u8; 50];
        assert_eq!(l.read_at(80, &mut out), 50);
        assert_eq!(&out[..], &data[80..130]);
        assert_eq!(l.read_at(250, &mut out), 6);
    }
}
