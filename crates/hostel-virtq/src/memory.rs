//! Guest memory resolved to host addresses once per batch.

use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::chain::Seg;
use crate::error::Error;
use crate::log::DirtyLog;

/// Regions beyond this many are looked up through vm-memory (QEMU sends at most 8 without
/// the memory-slots protocol feature).
const MAX_REGIONS: usize = 16;

/// Guest memory as (guest start, length, host address) triples, valid for `'a`: the borrow
/// of the [`GuestMemoryMmap`] that keeps every region mapped.
pub struct MemMap<'a> {
    start: [u64; MAX_REGIONS],
    len: [u64; MAX_REGIONS],
    host: [usize; MAX_REGIONS],
    n: usize,
    /// Set when the memory has more regions than the table holds.
    slow: Option<&'a GuestMemoryMmap<()>>,
    log: Option<&'a DirtyLog>,
}

impl<'a> MemMap<'a> {
    pub fn new(m: &'a GuestMemoryMmap<()>) -> MemMap<'a> {
        let mut map = MemMap {
            start: [0; MAX_REGIONS],
            len: [0; MAX_REGIONS],
            host: [0; MAX_REGIONS],
            n: 0,
            slow: None,
            log: None,
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

    /// Marks every page the device writes through this map (used rings, and what the
    /// device reports with [`MemMap::mark_dirty`]) in `log`.
    pub fn with_log(mut self, log: &'a DirtyLog) -> MemMap<'a> {
        self.log = Some(log);
        self
    }

    /// Host address of `addr` and how many bytes from it stay inside its region.
    #[inline]
    pub(crate) fn host(&self, addr: u64) -> Option<(usize, u64)> {
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
    pub(crate) fn range(&self, addr: u64, len: u64) -> Option<usize> {
        let (h, room) = self.host(addr)?;
        (len <= room).then_some(h)
    }

    /// `[addr, addr + len)` as one segment, if it lies inside one region and fits a
    /// segment's `u32` length.
    pub fn segment(&self, addr: u64, len: u64) -> Result<Seg<'_>, Error> {
        let outside = Error::OutsideMemory { addr, len };
        let n = u32::try_from(len).map_err(|_| outside)?;
        let host = self.range(addr, len).ok_or(outside)?;
        // SAFETY: `range` checked that [host, host + len) is inside one region of the
        // memory this map borrows for 'a, and the segment borrows the map.
        Ok(unsafe { Seg::new(addr, host, n) })
    }

    /// Records that the device wrote `[addr, addr + len)` of guest memory (no-op without a
    /// log).
    #[inline]
    pub fn mark_dirty(&self, addr: u64, len: u64) {
        if let Some(log) = self.log {
            log.mark(addr, len);
        }
    }

    pub(crate) fn log(&self) -> Option<&'a DirtyLog> {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_checked_against_regions() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x2000), 0x1000),
        ])
        .unwrap();
        let map = MemMap::new(&m);
        let s = map.segment(0x2f00, 0x100).unwrap();
        assert_eq!(s.write(0, b"hi"), 2);
        let mut out = [0u8; 2];
        assert_eq!(s.read(0, &mut out), 2);
        assert_eq!(&out, b"hi");
        for (addr, len) in [(0xf00, 0x101), (0x1000, 1), (0x2f00, 0x101), (u64::MAX, 2)] {
            assert_eq!(
                map.segment(addr, len).err(),
                Some(Error::OutsideMemory { addr, len })
            );
        }
    }

    #[test]
    fn more_regions_than_the_table_take_the_slow_path() {
        let ranges: Vec<_> = (0..20u64)
            .map(|i| (GuestAddress(i * 0x2000), 0x1000))
            .collect();
        let m = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
        let map = MemMap::new(&m);
        assert!(map.segment(19 * 0x2000 + 0x10, 0x10).is_ok());
        assert!(map.segment(19 * 0x2000 + 0x1000, 1).is_err());
    }
}
