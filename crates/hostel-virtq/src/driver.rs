//! The guest side of a split virtqueue, for tests and benchmarks: it plays a guest driver
//! against a device over plain guest memory, without a VM.
//!
//! The rings are resolved to host addresses once, and every access is a plain load or store,
//! so a benchmark's driver costs little next to the device it measures. The driver keeps a
//! clone of the memory (the regions are reference-counted), so its addresses stay mapped for
//! as long as it lives.

use std::sync::atomic::{fence, AtomicU16, Ordering};

use vm_memory::GuestMemoryMmap;

use crate::error::Error;
use crate::memory::MemMap;
use crate::ring::{F_NEXT, F_WRITE};

/// Longest chain [`SplitRing::push`] writes.
pub const MAX_PUSH: usize = 64;

/// Where a split ring of `size` entries laid out from `base` puts its parts (guest
/// addresses), as a driver lays it out: the avail ring right after the descriptor table, the
/// used ring at the next 4-byte boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The first byte after the used ring.
    pub end: u64,
}

impl Layout {
    /// `None` when the ring would run past the end of the 64-bit address space.
    pub fn new(base: u64, size: u16) -> Option<Layout> {
        let n = u64::from(size);
        let avail = base.checked_add(16 * n)?;
        let used = avail.checked_add(6 + 2 * n + 3)? & !3;
        Some(Layout {
            desc: base,
            avail,
            used,
            end: used.checked_add(6 + 8 * n)?,
        })
    }
}

/// Ring addresses plus the driver's private cursor state.
pub struct SplitRing {
    /// Keeps the regions the host addresses below point into mapped.
    _mem: GuestMemoryMmap<()>,
    desc_h: usize,
    avail_h: usize,
    used_h: usize,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
}

impl std::fmt::Debug for SplitRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitRing")
            .field("size", &self.size)
            .field("desc", &self.desc)
            .field("avail_idx", &self.avail_idx)
            .field("last_used", &self.last_used)
            .finish()
    }
}

impl SplitRing {
    /// Lays a ring of `size` (a power of two) out at `base` (16-byte aligned) in `mem`;
    /// returns it and the first byte after it.
    pub fn new(mem: &GuestMemoryMmap<()>, base: u64, size: u16) -> Result<(SplitRing, u64), Error> {
        if size == 0 || !size.is_power_of_two() || base % 16 != 0 {
            return Err(Error::BadRing);
        }
        let n = u64::from(size);
        let Layout {
            desc,
            avail,
            used,
            end,
        } = Layout::new(base, size).ok_or(Error::BadRing)?;
        let map = MemMap::new(mem);
        let resolve = |addr: u64, len: u64| map.range(addr, len).ok_or(Error::BadRing);
        let ring = SplitRing {
            desc_h: resolve(desc, 16 * n)?,
            avail_h: resolve(avail, 6 + 2 * n)?,
            used_h: resolve(used, 6 + 8 * n)?,
            _mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            free: (0..size).rev().collect(),
        };
        Ok((ring, end))
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest address of the descriptor table.
    pub fn desc(&self) -> u64 {
        self.desc
    }

    pub fn avail(&self) -> u64 {
        self.avail
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    fn desc_field<T>(&self, id: u16, off: usize) -> *mut T {
        (self.desc_h + 16 * usize::from(id % self.size) + off) as *mut T
    }

    fn avail_u16(&self, off: usize) -> &AtomicU16 {
        // SAFETY: callers pass offsets inside the avail ring (6 + 2 * size bytes, resolved
        // in `new` and kept mapped by `_mem`), which is 2-byte aligned (base is 16-aligned).
        unsafe { AtomicU16::from_ptr((self.avail_h + off) as *mut u16) }
    }

    fn used_u16(&self, off: usize) -> &AtomicU16 {
        // SAFETY: as `avail_u16`, for the (4-byte aligned) used ring.
        unsafe { AtomicU16::from_ptr((self.used_h + off) as *mut u16) }
    }

    fn used_u32(&self, off: usize) -> u32 {
        // SAFETY: callers pass a 4-aligned offset of an element field inside the used ring.
        u32::from_le(unsafe { std::ptr::read_volatile((self.used_h + off) as *const u32) })
    }

    /// Writes descriptor `id % size` as given, however hostile.
    pub fn write_desc(&mut self, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        // SAFETY: a field of descriptor id % size, inside the table resolved in `new`,
        // naturally aligned (the table is 16-byte aligned).
        unsafe { self.desc_field::<u64>(id, 0).write_volatile(addr.to_le()) };
        // SAFETY: as above.
        unsafe { self.desc_field::<u32>(id, 8).write_volatile(len.to_le()) };
        // SAFETY: as above.
        unsafe { self.desc_field::<u16>(id, 12).write_volatile(flags.to_le()) };
        // SAFETY: as above.
        unsafe { self.desc_field::<u16>(id, 14).write_volatile(next.to_le()) };
    }

    fn desc_link(&self, id: u16) -> (u16, u16) {
        // SAFETY: fields of descriptor id % size, inside the table, aligned.
        let flags = unsafe { self.desc_field::<u16>(id, 12).read_volatile() };
        // SAFETY: as above.
        let next = unsafe { self.desc_field::<u16>(id, 14).read_volatile() };
        (u16::from_le(flags), u16::from_le(next))
    }

    /// The descriptor the next single-buffer [`SplitRing::push`] will use.
    pub fn peek_free(&self) -> Option<u16> {
        self.free.last().copied()
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains offered and not yet used by the device.
    pub fn in_flight(&self) -> usize {
        usize::from(self.size) - self.free.len()
    }

    /// Offers `head` at the next avail slot.
    fn offer(&mut self, head: u16) {
        let slot = 4 + 2 * usize::from(self.avail_idx % self.size);
        self.avail_u16(slot).store(head.to_le(), Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Writes one chain (`(addr, len, device_writable)` buffers, at most [`MAX_PUSH`]) and
    /// its avail entry; the index becomes visible to the device only at
    /// [`SplitRing::publish`].
    pub fn push(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > MAX_PUSH || self.free.len() < bufs.len() {
            return None;
        }
        let mut ids = [0u16; MAX_PUSH];
        for id in ids.iter_mut().take(bufs.len()) {
            *id = self.free.pop()?;
        }
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let mut flags = if write { F_WRITE } else { 0 };
            let next = if i + 1 < bufs.len() {
                flags |= F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            self.write_desc(ids[i], addr, len, flags, next);
        }
        self.offer(ids[0]);
        Some(ids[0])
    }

    /// Offers the next free descriptor again as a one-descriptor chain, with whatever
    /// [`SplitRing::write_desc`] last put in it: a benchmark writes every descriptor once and
    /// then only recycles them.
    pub fn repost(&mut self) -> Option<u16> {
        let id = self.free.pop()?;
        self.offer(id);
        Some(id)
    }

    /// Offers `head` as it stands, without taking it from the free list: for hostile tests
    /// that offer chains they wrote by hand (or the same chain twice).
    pub fn offer_raw(&mut self, head: u16) {
        self.offer(head);
    }

    /// Makes all pushed chains visible to the device.
    pub fn publish(&self) {
        self.avail_u16(2)
            .store(self.avail_idx.to_le(), Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Takes the next used element, returning (head, written length) and recycling the
    /// chain's descriptors.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let idx = u16::from_le(self.used_u16(2).load(Ordering::Acquire));
        if idx == self.last_used {
            return None;
        }
        let e = 4 + 8 * usize::from(self.last_used % self.size);
        let (id, len) = (self.used_u32(e), self.used_u32(e + 4));
        self.last_used = self.last_used.wrapping_add(1);
        let mut d = (id as u16) % self.size;
        for _ in 0..self.size {
            if self.free.len() == usize::from(self.size) {
                break;
            }
            self.free.push(d);
            let (flags, next) = self.desc_link(d);
            if flags & F_NEXT == 0 {
                break;
            }
            d = next % self.size;
        }
        Some((id as u16, len))
    }

    /// Takes back every chain the device has used; returns how many.
    pub fn reap(&mut self) -> usize {
        let mut n = 0;
        while self.pop_used().is_some() {
            n += 1;
        }
        n
    }

    /// Whether the device asked not to be kicked (VRING_USED_F_NO_NOTIFY).
    pub fn device_suppresses_kicks(&self) -> bool {
        u16::from_le(self.used_u16(0).load(Ordering::Relaxed)) & 1 == 1
    }

    /// Tells the device not to interrupt (VRING_AVAIL_F_NO_INTERRUPT): for drivers that poll.
    pub fn suppress_interrupts(&self) {
        self.avail_u16(0).store(1u16.to_le(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    /// Defect: the layout added in unchecked u64s, so a ring near the top of the address
    /// space panicked (debug) or wrapped to low addresses (release) instead of being refused.
    #[test]
    fn a_ring_past_the_address_space_is_refused() {
        assert_eq!(Layout::new(!15u64, 256), None);
        assert!(Layout::new(0, u16::MAX).is_some());
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        assert_eq!(
            SplitRing::new(&mem, !15u64, 256).map(|_| ()),
            Err(Error::BadRing)
        );
    }
}
