//! Split-virtqueue access through host pointers: the hot path's replacement for
//! virtio-queue's per-access guest-memory lookups.
//!
//! [`Ring`] resolves a queue's descriptor table, avail and used rings once per batch and then
//! reads and writes them with plain loads and stores. The queue's cursors (`next_avail`,
//! `next_used`) stay in virtio-queue's `Queue`, which the vhost-user library owns and
//! saves/restores; callers copy them out under the vring lock and store them back.
//!
//! Everything the guest wrote is untrusted: indexes are reduced modulo the ring size or
//! checked, chains are bounded (no loops, at most [`MAX_CHAIN_DESCS`] descriptors read), and
//! every buffer is checked to lie inside guest memory.

use std::sync::atomic::{fence, AtomicU16, Ordering};

use virtio_queue::{Queue, QueueT};

use crate::chain::{Seg, SegList, MAX_CHAIN_DESCS};
use crate::error::Error;
use crate::memory::MemMap;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// A descriptor as the guest wrote it.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// One queue's rings at host addresses, for one batch.
pub struct Ring<'a> {
    desc: usize,
    avail: usize,
    used: usize,
    /// Guest address of the used ring, for the dirty log.
    used_gpa: u64,
    size: u16,
    event_idx: bool,
    mem: &'a MemMap<'a>,
}

impl<'a> Ring<'a> {
    /// Fails if the queue is not ready or a ring is not inside (aligned) guest memory.
    pub fn new(q: &Queue, mem: &'a MemMap<'a>) -> Result<Ring<'a>, Error> {
        if !q.ready() {
            return Err(Error::BadRing);
        }
        let size = q.size();
        if size == 0 || !size.is_power_of_two() {
            return Err(Error::BadRing);
        }
        let n = u64::from(size);
        let desc = mem.range(q.desc_table(), 16 * n).ok_or(Error::BadRing)?;
        let avail = mem.range(q.avail_ring(), 6 + 2 * n).ok_or(Error::BadRing)?;
        let used = mem.range(q.used_ring(), 6 + 8 * n).ok_or(Error::BadRing)?;
        if desc % 16 != 0 || avail % 2 != 0 || used % 4 != 0 {
            return Err(Error::BadRing);
        }
        Ok(Ring {
            desc,
            avail,
            used,
            used_gpa: q.used_ring(),
            size,
            event_idx: q.event_idx_enabled(),
            mem,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    fn u16_at(&self, host: usize) -> &AtomicU16 {
        // SAFETY: only called with addresses inside the avail/used rings, which `new`
        // checked to be mapped (for the map's lifetime) and 2-byte aligned.
        unsafe { AtomicU16::from_ptr(host as *mut u16) }
    }

    /// The driver's avail index (acquire: entries before it are visible).
    pub fn avail_idx(&self) -> u16 {
        u16::from_le(self.u16_at(self.avail + 2).load(Ordering::Acquire))
    }

    /// The head index the driver put at position `pos` of the avail ring.
    pub fn avail_head(&self, pos: u16) -> u16 {
        let slot = self.avail + 4 + 2 * usize::from(pos % self.size);
        u16::from_le(self.u16_at(slot).load(Ordering::Relaxed))
    }

    /// Entries offered after `next` (`None` if the driver claims more than the ring holds).
    pub fn pending(&self, next: u16) -> Option<u16> {
        let n = self.avail_idx().wrapping_sub(next);
        (n <= self.size).then_some(n)
    }

    fn read_desc(table: usize, i: u16) -> Desc {
        // SAFETY: callers pass `i` below the table's checked length; [u8; 16] has no
        // alignment requirement, so indirect tables at any address are fine.
        let b: [u8; 16] =
            unsafe { std::ptr::read_volatile((table + 16 * usize::from(i)) as *const [u8; 16]) };
        let u16le = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Desc {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16le(12),
            next: u16le(14),
        }
    }

    /// Collects the buffers of the chain starting at `head` into `out`: all device-writable
    /// (`writable`, e.g. RX) or all device-readable (TX), at most `max` bytes, no descriptor
    /// loops, at most one level of indirection (as virtio-queue's chain walker), and at most
    /// [`MAX_CHAIN_DESCS`] descriptors read whatever the chain holds (`out.visits()` says
    /// how many were).
    pub fn gather(
        &self,
        head: u16,
        writable: bool,
        max: usize,
        out: &mut SegList<'a>,
    ) -> Result<(), Error> {
        out.reset();
        let (mut table, mut tsize, mut idx) = (self.desc, self.size, head);
        let mut ttl = u32::from(self.size);
        let mut indirect = false;
        loop {
            if idx >= tsize {
                return Err(Error::IndexOutOfRange {
                    index: idx,
                    size: tsize,
                });
            }
            if ttl == 0 || out.visits() == MAX_CHAIN_DESCS {
                return Err(Error::ChainTooLong);
            }
            ttl -= 1;
            out.add_visit();
            let d = Self::read_desc(table, idx);
            if d.flags & F_INDIRECT != 0 {
                if indirect || d.len == 0 || d.len % 16 != 0 || d.len / 16 > u32::from(u16::MAX) {
                    return Err(Error::BadIndirect { len: d.len });
                }
                table = self
                    .mem
                    .range(d.addr, u64::from(d.len))
                    .ok_or(Error::OutsideMemory {
                        addr: d.addr,
                        len: u64::from(d.len),
                    })?;
                tsize = (d.len / 16) as u16;
                ttl = u32::from(tsize);
                idx = 0;
                indirect = true;
                continue;
            }
            if (d.flags & F_WRITE != 0) != writable {
                return Err(Error::WrongDirection);
            }
            if d.len > 0 {
                if out.add_total(d.len) > max {
                    return Err(Error::TooLong { max });
                }
                self.push(out, d.addr, u64::from(d.len))?;
            }
            if d.flags & F_NEXT == 0 {
                return Ok(());
            }
            idx = d.next;
        }
    }

    /// Appends `[addr, addr + len)`, split at region boundaries.
    fn push(&self, out: &mut SegList<'a>, addr: u64, len: u64) -> Result<(), Error> {
        let (mut cur, mut left) = (addr, len);
        while left > 0 {
            let (host, room) = self
                .mem
                .host(cur)
                .ok_or(Error::OutsideMemory { addr, len })?;
            let n = room.min(left);
            // SAFETY: `host` maps `room` >= n bytes of one region of the memory the map
            // borrows for 'a (n <= len, a descriptor's u32 length); guest memory is no
            // Rust object.
            let seg = unsafe { Seg::new(cur, host, n as u32) };
            if n == 0 || !out.push(seg) {
                return Err(Error::TooManySegments);
            }
            cur = cur
                .checked_add(n)
                .ok_or(Error::OutsideMemory { addr, len })?;
            left -= n;
        }
        Ok(())
    }

    /// Writes used element `pos` (not yet visible: see [`Ring::publish_used`]).
    pub fn put_used(&self, pos: u16, head: u16, len: u32) {
        let i = usize::from(pos % self.size);
        let e = self.used + 4 + 8 * i;
        // SAFETY: the element's id field is inside the used ring (checked in `new`) and
        // 4-byte aligned.
        unsafe { std::ptr::write_volatile(e as *mut u32, u32::from(head).to_le()) };
        // SAFETY: as above, for the len field 4 bytes further.
        unsafe { std::ptr::write_volatile((e + 4) as *mut u32, len.to_le()) };
        self.mem.mark_dirty(self.used_gpa + 4 + 8 * i as u64, 8);
    }

    /// Makes used elements up to `idx` visible to the driver.
    pub fn publish_used(&self, idx: u16) {
        self.u16_at(self.used + 2)
            .store(idx.to_le(), Ordering::Release);
        self.mem.mark_dirty(self.used_gpa + 2, 2);
    }

    /// Whether the driver wants an interrupt now that the used index moved from `old` to
    /// `new` (virtio's `vring_need_event` with EVENT_IDX, else the NO_INTERRUPT flag).
    pub fn needs_interrupt(&self, old: u16, new: u16) -> bool {
        if old == new {
            return false;
        }
        // The used index store must be visible before the driver's event is read.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let slot = self.avail + 4 + 2 * usize::from(self.size);
            let event = u16::from_le(self.u16_at(slot).load(Ordering::Relaxed));
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags = u16::from_le(self.u16_at(self.avail).load(Ordering::Relaxed));
            flags & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Asks the driver not to notify (kick) the device.
    pub fn disable_kicks(&self) {
        if !self.event_idx {
            self.u16_at(self.used)
                .store(USED_F_NO_NOTIFY.to_le(), Ordering::Relaxed);
            self.mem.mark_dirty(self.used_gpa, 2);
        }
        // With EVENT_IDX, kicks stop by themselves once avail_event falls behind.
    }

    /// Asks for a kick on the next entry after `next_avail`; returns whether entries
    /// arrived meanwhile (the caller then processes them instead of sleeping).
    pub fn enable_kicks(&self, next_avail: u16) -> bool {
        if self.event_idx {
            let off = 4 + 8 * usize::from(self.size);
            self.u16_at(self.used + off)
                .store(next_avail.to_le(), Ordering::Relaxed);
            self.mem.mark_dirty(self.used_gpa + off as u64, 2);
        } else {
            self.u16_at(self.used).store(0, Ordering::Relaxed);
            self.mem.mark_dirty(self.used_gpa, 2);
        }
        fence(Ordering::SeqCst);
        self.avail_idx() != next_avail
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
