//! The guest side of a split virtqueue, minimal and allocation-light.
//!
//! The switch never needs this in production; it exists so unit tests, the bench tool and
//! the fuzz targets can play a guest driver against the real datapath over plain guest
//! memory, without QEMU.

use std::sync::atomic::{fence, Ordering};

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// Ring addresses plus the driver's private cursor state.
#[derive(Debug)]
pub struct SplitRing {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
}

impl SplitRing {
    /// Lays a ring of `size` (power of two) out at `base`; returns it and the first byte
    /// after it.
    pub fn new(base: u64, size: u16) -> (SplitRing, u64) {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        let end = used + 6 + 8 * u64::from(size);
        let ring = SplitRing {
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            free: (0..size).rev().collect(),
        };
        (ring, end)
    }

    /// The descriptor the next single-buffer [`SplitRing::push`] will use.
    pub fn peek_free(&self) -> Option<u16> {
        self.free.last().copied()
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Writes one chain (`(addr, len, device_writable)` buffers) and its avail entry; the
    /// index becomes visible to the device only at [`SplitRing::publish`].
    pub fn push<M: GuestMemoryBackend>(
        &mut self,
        mem: &M,
        bufs: &[(u64, u32, bool)],
    ) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > 64 || self.free.len() < bufs.len() {
            return None;
        }
        let mut ids = [0u16; 64];
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
            let d = GuestAddress(self.desc + 16 * u64::from(ids[i]));
            mem.write_obj(addr, d).ok()?;
            mem.write_obj(len, d.unchecked_add(8)).ok()?;
            mem.write_obj(flags, d.unchecked_add(12)).ok()?;
            mem.write_obj(next, d.unchecked_add(14)).ok()?;
        }
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(ids[0], GuestAddress(slot)).ok()?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Some(ids[0])
    }

    /// Makes all pushed chains visible to the device.
    pub fn publish<M: GuestMemoryBackend>(&self, mem: &M) {
        fence(Ordering::Release);
        let _ = mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2));
        fence(Ordering::SeqCst);
    }

    /// Takes the next used element, returning (head, written length) and recycling the
    /// chain's descriptors.
    pub fn pop_used<M: GuestMemoryBackend>(&mut self, mem: &M) -> Option<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).ok()?;
        if idx == self.last_used {
            return None;
        }
        fence(Ordering::Acquire);
        let e = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        let id: u32 = mem.read_obj(GuestAddress(e)).ok()?;
        let len: u32 = mem.read_obj(GuestAddress(e + 4)).ok()?;
        self.last_used = self.last_used.wrapping_add(1);
        let mut d = (id as u16) % self.size;
        for _ in 0..self.size {
            self.free.push(d);
            let base = GuestAddress(self.desc + 16 * u64::from(d));
            let flags: u16 = mem.read_obj(base.unchecked_add(12)).unwrap_or(0);
            if flags & F_NEXT == 0 {
                break;
            }
            d = mem.read_obj(base.unchecked_add(14)).unwrap_or(0) % self.size;
        }
        Some((id as u16, len))
    }

    /// Whether the device asked not to be kicked (VRING_USED_F_NO_NOTIFY).
    pub fn device_suppresses_kicks<M: GuestMemoryBackend>(&self, mem: &M) -> bool {
        mem.read_obj::<u16>(GuestAddress(self.used))
            .map(|f| f & 1 == 1)
            .unwrap_or(false)
    }
}
