//! Split-virtqueue access through host pointers: the hot path's replacement for
//! virtio-queue's per-access guest-memory lookups.
//!
//! [`MemMap`] resolves guest memory to host addresses once per batch (a handful of regions);
//! [`Ring`] resolves a queue's descriptor table, avail and used rings once per batch and
//! then reads and writes them with plain loads and stores. The queue's cursors
//! (`next_avail`, `next_used`) stay in virtio-queue's `Queue`, which the vhost-user library
//! owns and saves/restores; callers copy them out under the vring lock and store them back.
//!
//! Everything the guest wrote is untrusted: indexes are reduced modulo the ring size or
//! checked, chains are bounded by the ring size (no loops), and every buffer is checked
//! to lie inside one guest memory region. Host addresses stay valid only while the memory
//! guard the [`MemMap`] was built from is alive.

use std::sync::atomic::{fence, AtomicU16, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::datapath::chain::{Seg, SegList, MAX_CHAIN_DESCS, MAX_SEGS};
use crate::stats::DropReason;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// Regions beyond this many are looked up through vm-memory (QEMU sends at most 8 without
/// the memory-slots protocol feature, which the switch does not offer).
const MAX_REGIONS: usize = 16;

/// Guest memory as (guest start, length, host address) triples.
pub struct MemMap<'a> {
    start: [u64; MAX_REGIONS],
    len: [u64; MAX_REGIONS],
    host: [usize; MAX_REGIONS],
    n: usize,
    /// Set when the memory has more regions than the table holds.
    slow: Option<&'a GuestMemoryMmap<()>>,
}

impl<'a> MemMap<'a> {
    pub fn new(m: &'a GuestMemoryMmap<()>) -> MemMap<'a> {
        let mut map = MemMap {
            start: [0; MAX_REGIONS],
            len: [0; MAX_REGIONS],
            host: [0; MAX_REGIONS],
            n: 0,
            slow: None,
        };
        for r in m.iter() {
            let Ok(h) = r.get_host_address(MemoryRegionAddress(0)) else {
                continue;
            };
            if map.n == MAX_REGIONS {
                map.slow = Some(m);
                break;
            }
            map.start[map.n] = r.start_addr().raw_value();
            map.len[map.n] = r.len();
            map.host[map.n] = h as usize;
            map.n += 1;
        }
        map
    }

    /// Host address of `addr` and how many bytes from it stay inside its region.
    #[inline]
    pub fn host(&self, addr: u64) -> Option<(usize, u64)> {
        for i in 0..self.n {
            let off = addr.wrapping_sub(self.start[i]);
            if off < self.len[i] {
                return Some((self.host[i] + off as usize, self.len[i] - off));
            }
        }
        let m = self.slow?;
        let (region, raddr) = m.to_region_addr(GuestAddress(addr))?;
        let room = region.len().checked_sub(raddr.raw_value())?;
        let h = region.get_host_address(raddr).ok()?;
        Some((h as usize, room))
    }

    /// Host address of `[addr, addr + len)` if it lies inside one region.
    #[inline]
    pub fn range(&self, addr: u64, len: u64) -> Option<usize> {
        let (h, room) = self.host(addr)?;
        (len <= room).then_some(h)
    }
}

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
    size: u16,
    event_idx: bool,
    mem: &'a MemMap<'a>,
}

impl<'a> Ring<'a> {
    /// `None` if the queue is not ready or a ring is not inside (aligned) guest memory.
    pub fn new(q: &Queue, mem: &'a MemMap<'a>) -> Option<Ring<'a>> {
        if !q.ready() {
            return None;
        }
        let size = q.size();
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = u64::from(size);
        let desc = mem.range(q.desc_table(), 16 * n)?;
        let avail = mem.range(q.avail_ring(), 6 + 2 * n)?;
        let used = mem.range(q.used_ring(), 6 + 8 * n)?;
        if desc % 16 != 0 || avail % 2 != 0 || used % 4 != 0 {
            return None;
        }
        Some(Ring {
            desc,
            avail,
            used,
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
        // checked to be mapped (for the guard's lifetime) and 2-byte aligned.
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
    /// (`writable`, RX) or all device-readable (TX), at most `max` bytes, no descriptor
    /// loops, at most one level of indirection (as virtio-queue's chain walker), and at most
    /// [`MAX_CHAIN_DESCS`] descriptors read whatever the chain holds (`out.visits` says how
    /// many were).
    pub fn gather(
        &self,
        head: u16,
        writable: bool,
        max: usize,
        out: &mut SegList,
    ) -> Result<(), DropReason> {
        out.n = 0;
        out.total = 0;
        out.visits = 0;
        let (mut table, mut tsize, mut idx) = (self.desc, self.size, head);
        let mut ttl = u32::from(self.size);
        let mut indirect = false;
        loop {
            if idx >= tsize || ttl == 0 || out.visits == MAX_CHAIN_DESCS {
                return Err(DropReason::BadDescriptor);
            }
            ttl -= 1;
            out.visits += 1;
            let d = Self::read_desc(table, idx);
            if d.flags & F_INDIRECT != 0 {
                if indirect || d.len == 0 || d.len % 16 != 0 || d.len / 16 > u32::from(u16::MAX) {
                    return Err(DropReason::BadDescriptor);
                }
                table = self
                    .mem
                    .range(d.addr, u64::from(d.len))
                    .ok_or(DropReason::BadDescriptor)?;
                tsize = (d.len / 16) as u16;
                ttl = u32::from(tsize);
                idx = 0;
                indirect = true;
                continue;
            }
            if (d.flags & F_WRITE != 0) != writable {
                return Err(DropReason::BadDescriptor);
            }
            if d.len > 0 {
                out.total = out.total.saturating_add(d.len as usize);
                if out.total > max {
                    return Err(DropReason::TooLong);
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
    fn push(&self, out: &mut SegList, addr: u64, len: u64) -> Result<(), DropReason> {
        let (mut cur, mut left) = (addr, len);
        while left > 0 {
            let (host, room) = self.mem.host(cur).ok_or(DropReason::BadDescriptor)?;
            let n = room.min(left);
            if n == 0 || out.n == MAX_SEGS {
                return Err(DropReason::BadDescriptor);
            }
            out.segs[out.n] = Seg {
                addr: cur,
                host,
                len: n as u32,
            };
            out.n += 1;
            cur = cur.checked_add(n).ok_or(DropReason::BadDescriptor)?;
            left -= n;
        }
        Ok(())
    }

    /// Writes used element `pos` (not yet visible: see [`Ring::publish_used`]).
    pub fn put_used(&self, pos: u16, head: u16, len: u32) {
        let e = self.used + 4 + 8 * usize::from(pos % self.size);
        // SAFETY: the element's id field is inside the used ring (checked in `new`) and
        // 4-byte aligned.
        unsafe { std::ptr::write_volatile(e as *mut u32, u32::from(head).to_le()) };
        // SAFETY: as above, for the len field 4 bytes further.
        unsafe { std::ptr::write_volatile((e + 4) as *mut u32, len.to_le()) };
    }

    /// Makes used elements up to `idx` visible to the driver.
    pub fn publish_used(&self, idx: u16) {
        self.u16_at(self.used + 2)
            .store(idx.to_le(), Ordering::Release);
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
        }
        // With EVENT_IDX, kicks stop by themselves once avail_event falls behind.
    }

    /// Asks for a kick on the next entry after `next_avail`; returns whether entries
    /// arrived meanwhile (the caller then processes them instead of sleeping).
    pub fn enable_kicks(&self, next_avail: u16) -> bool {
        if self.event_idx {
            let slot = self.used + 4 + 8 * usize::from(self.size);
            self.u16_at(slot)
                .store(next_avail.to_le(), Ordering::Relaxed);
        } else {
            self.u16_at(self.used).store(0, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        self.avail_idx() != next_avail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::SplitRing;
    use vm_memory::Bytes;

    fn setup() -> (GuestMemoryMmap<()>, SplitRing, Queue) {
        let m = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let (r, _) = SplitRing::new(0x1000, 16);
        let mut q = Queue::new(16).unwrap();
        q.set_desc_table_address(Some(r.desc as u32), Some(0));
        q.set_avail_ring_address(Some(r.avail as u32), Some(0));
        q.set_used_ring_address(Some(r.used as u32), Some(0));
        q.set_ready(true);
        (m, r, q)
    }

    #[test]
    fn chains_split_at_regions_and_used_entries_land() {
        let (m, mut r, q) = setup();
        let head = r
            .push(&m, &[(0xff00, 0x200, false), (0x3000, 0x10, false)])
            .unwrap();
        r.publish(&m);
        let map = MemMap::new(&m);
        let ring = Ring::new(&q, &map).unwrap();
        assert_eq!(ring.pending(0), Some(1));
        assert_eq!(ring.avail_head(0), head);
        let mut l = SegList::default();
        ring.gather(head, false, 1 << 20, &mut l).unwrap();
        assert_eq!((l.n, l.total), (3, 0x210));
        assert_eq!(
            ring.gather(head, true, 1 << 20, &mut l),
            Err(DropReason::BadDescriptor)
        );
        assert_eq!(
            ring.gather(head, false, 0x100, &mut l),
            Err(DropReason::TooLong)
        );
        assert_eq!(
            ring.gather(16, false, 1 << 20, &mut l),
            Err(DropReason::BadDescriptor)
        );
        ring.put_used(0, head, 7);
        ring.publish_used(1);
        assert!(ring.needs_interrupt(0, 1));
        assert_eq!(r.pop_used(&m), Some((head, 7)));
    }

    #[test]
    fn loops_and_outside_buffers_are_refused() {
        let (m, _r, q) = setup();
        // Descriptor 0 points to itself; descriptor 1 lies past the end of memory.
        let d = q.desc_table();
        m.write_obj(0x2000u64, GuestAddress(d)).unwrap();
        m.write_obj(16u32, GuestAddress(d + 8)).unwrap();
        m.write_obj(F_NEXT, GuestAddress(d + 12)).unwrap();
        m.write_obj(0u16, GuestAddress(d + 14)).unwrap();
        m.write_obj(0x1_fff0u64, GuestAddress(d + 16)).unwrap();
        m.write_obj(0x100u32, GuestAddress(d + 24)).unwrap();
        let map = MemMap::new(&m);
        let ring = Ring::new(&q, &map).unwrap();
        let mut l = SegList::default();
        assert_eq!(
            ring.gather(0, false, usize::MAX, &mut l),
            Err(DropReason::BadDescriptor)
        );
        assert_eq!(
            ring.gather(1, false, usize::MAX, &mut l),
            Err(DropReason::BadDescriptor)
        );
    }

    fn write_desc(m: &GuestMemoryMmap<()>, at: u64, d: (u64, u32, u16, u16)) {
        m.write_obj(d.0, GuestAddress(at)).unwrap();
        m.write_obj(d.1, GuestAddress(at + 8)).unwrap();
        m.write_obj(d.2, GuestAddress(at + 12)).unwrap();
        m.write_obj(d.3, GuestAddress(at + 14)).unwrap();
    }

    #[test]
    fn indirect_tables_are_followed_once() {
        let (m, _r, q) = setup();
        let d = q.desc_table();
        // Descriptor 0 -> indirect table at 0x4000 holding two readable buffers.
        write_desc(&m, d, (0x4000, 32, F_INDIRECT, 0));
        write_desc(&m, 0x4000, (0x5000, 100, F_NEXT, 1));
        write_desc(&m, 0x4010, (0x6000, 50, 0, 0));
        // Descriptor 1 -> indirect table whose entry is itself indirect.
        write_desc(&m, d + 16, (0x4100, 16, F_INDIRECT, 0));
        write_desc(&m, 0x4100, (0x4000, 32, F_INDIRECT, 0));
        // Descriptor 2 -> indirect table with a length that is not whole descriptors.
        write_desc(&m, d + 32, (0x4000, 20, F_INDIRECT, 0));
        let map = MemMap::new(&m);
        let ring = Ring::new(&q, &map).unwrap();
        let mut l = SegList::default();
        ring.gather(0, false, usize::MAX, &mut l).unwrap();
        assert_eq!((l.n, l.total, l.segs[1].addr), (2, 150, 0x6000));
        for head in [1, 2] {
            assert_eq!(
                ring.gather(head, false, usize::MAX, &mut l),
                Err(DropReason::BadDescriptor)
            );
        }
    }

    /// Defect: an indirect table of 65,535 zero-length descriptors was walked to its end for
    /// every chain offered.
    #[test]
    fn a_chain_reads_at_most_max_chain_descs() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let (r, _) = SplitRing::new(0x1000, 16);
        let mut q = Queue::new(16).unwrap();
        q.set_desc_table_address(Some(r.desc as u32), Some(0));
        q.set_avail_ring_address(Some(r.avail as u32), Some(0));
        q.set_used_ring_address(Some(r.used as u32), Some(0));
        q.set_ready(true);
        const N: u64 = 65_535;
        let table = 0x10_0000;
        for i in 0..N {
            let (flags, next) = if i + 1 == N {
                (0, 0)
            } else {
                (F_NEXT, i as u16 + 1)
            };
            write_desc(&m, table + 16 * i, (0x8000, 0, flags, next));
        }
        write_desc(&m, r.desc, (table, (16 * N) as u32, F_INDIRECT, 0));
        // A direct chain as long as the limit allows still passes.
        let long = u64::from(MAX_CHAIN_DESCS);
        for i in 0..long {
            let (flags, next) = if i + 1 == long {
                (0, 0)
            } else {
                (F_NEXT, i as u16 + 1)
            };
            write_desc(&m, 0x4000 + 16 * i, (0x8000, 1, flags, next));
        }
        write_desc(&m, r.desc + 16, (0x4000, (16 * long) as u32, F_INDIRECT, 0));
        let map = MemMap::new(&m);
        let ring = Ring::new(&q, &map).unwrap();
        let mut l = SegList::default();
        assert_eq!(
            ring.gather(0, false, usize::MAX, &mut l),
            Err(DropReason::BadDescriptor)
        );
        assert_eq!(l.visits, MAX_CHAIN_DESCS);
        // 128 one-byte buffers overflow the segment list (MAX_SEGS) first.
        assert_eq!(
            ring.gather(1, false, usize::MAX, &mut l),
            Err(DropReason::BadDescriptor)
        );
        assert!(l.visits <= MAX_CHAIN_DESCS);
    }

    #[test]
    fn interrupts_follow_the_drivers_event_index() {
        let (m, r, mut q) = setup();
        q.set_event_idx(true);
        let map = MemMap::new(&m);
        let ring = Ring::new(&q, &map).unwrap();
        // used_event sits after the avail ring's 16 entries.
        let used_event = GuestAddress(r.avail + 4 + 2 * 16);
        m.write_obj(5u16, used_event).unwrap();
        assert!(!ring.needs_interrupt(0, 5), "event 5 not yet passed");
        assert!(ring.needs_interrupt(5, 6), "used index moved past 5");
        assert!(ring.needs_interrupt(0, 8));
        assert!(!ring.needs_interrupt(7, 7));
        // Kicks: with EVENT_IDX enabling writes avail_event and reports pending entries.
        assert!(!ring.enable_kicks(0));
        let avail_event = GuestAddress(r.used + 4 + 8 * 16);
        assert_eq!(m.read_obj::<u16>(avail_event).unwrap(), 0);
    }
}
