//! Dirty-page logging for live migration (`VHOST_F_LOG_ALL` with `VHOST_USER_PROTOCOL_F_LOG_SHMFD`).
//!
//! While a VM migrates, QEMU copies its memory and re-copies every page written since; pages
//! the vhost-user backend writes (RX buffers, used rings) are invisible to QEMU unless the
//! backend sets their bits in a log QEMU shares with it (`VHOST_USER_SET_LOG_BASE`). The log
//! is a bitmap over guest physical addresses, one bit per [`LOG_PAGE`] bytes: bit `p % 8` of
//! byte `p / 8` for page `p`, set atomically because QEMU reads and clears it concurrently.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::mmap::MmapRegion;
use vm_memory::FileOffset;

use crate::error::LogError;

/// Bytes of guest memory one bit of the log stands for (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: u64 = 0x1000;

const BITS: u64 = 64;

enum Words {
    Owned(Box<[AtomicU64]>),
    /// The log QEMU shares: `words` 64-bit words at the start of `region`'s mapping plus the
    /// mapping offset.
    Shared {
        region: MmapRegion<()>,
        offset: usize,
        words: usize,
    },
}

/// A bitmap of the guest pages the device has written.
pub struct DirtyLog {
    words: Words,
}

impl DirtyLog {
    /// A log of its own covering guest addresses `[0, mem_end)`: for tests, and for a device
    /// that keeps the log itself.
    pub fn new(mem_end: u64) -> DirtyLog {
        let words = mem_end.div_ceil(LOG_PAGE).div_ceil(BITS) as usize;
        DirtyLog {
            words: Words::Owned((0..words).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// Maps the log QEMU hands over with `VHOST_USER_SET_LOG_BASE`: `size` bytes at `offset`
    /// of `file` (the message's `mmap_size` and `mmap_offset`). The file must hold them and be
    /// sealed against shrinking, as guest memory must: a file cut short under the mapping
    /// would fault the device on its next mark.
    pub fn map(file: File, size: u64, offset: u64) -> Result<DirtyLog, LogError> {
        let bad = LogError::BadLayout { size, offset };
        if size == 0 || offset % 8 != 0 {
            return Err(bad);
        }
        let len = usize::try_from(size.checked_add(offset).ok_or(bad)?)
            .map_err(|_| LogError::BadLayout { size, offset })?;
        let file_len = file.metadata()?.len();
        if file_len < len as u64 {
            return Err(LogError::FileTooShort {
                file_len,
                needed: len as u64,
            });
        }
        // SAFETY: F_GET_SEALS only reads the seal set of a descriptor we own.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(LogError::NotSealed);
        }
        let region = MmapRegion::from_file(FileOffset::new(file, 0), len)?;
        Ok(DirtyLog {
            words: Words::Shared {
                region,
                offset: offset as usize,
                words: (size / 8) as usize,
            },
        })
    }

    fn words(&self) -> &[AtomicU64] {
        match &self.words {
            Words::Owned(w) => w,
            Words::Shared {
                region,
                offset,
                words,
            } => {
                let ptr = region.as_ptr().wrapping_add(*offset).cast::<AtomicU64>();
                // SAFETY: the mapping holds offset + 8 * words bytes (checked in `map`), is
                // page-aligned so `ptr` is 8-aligned (offset % 8 == 0), lives as long as
                // `self`, and is only ever accessed atomically here (QEMU, the other user,
                // does the same).
                unsafe { std::slice::from_raw_parts(ptr, *words) }
            }
        }
    }

    /// Guest bytes the log covers.
    pub fn covers(&self) -> u64 {
        self.words().len() as u64 * BITS * LOG_PAGE
    }

    /// Marks the pages of `[addr, addr + len)`. Pages past the end of the log are not
    /// recorded: the log is sized by QEMU to cover guest memory, and the device only writes
    /// inside guest memory, so a shorter log is QEMU's to answer for.
    #[inline]
    pub fn mark(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let words = self.words();
        let first = addr / LOG_PAGE;
        let last = addr.saturating_add(len - 1) / LOG_PAGE;
        let mut page = first;
        while page <= last {
            let Some(w) = words.get((page / BITS) as usize) else {
                return;
            };
            // Bits of this word from `page` up to `last`.
            let lo = page % BITS;
            let hi = (last - page + lo).min(BITS - 1);
            let bits = (u64::MAX >> (BITS - 1 - hi)) & (u64::MAX << lo);
            // A load first: pages already dirty (the common case for a busy ring) then cost
            // no write to a line QEMU reads.
            let le = bits.to_le();
            if w.load(Ordering::Relaxed) & le != le {
                w.fetch_or(le, Ordering::Relaxed);
            }
            page += hi - lo + 1;
        }
    }

    pub fn is_dirty(&self, addr: u64) -> bool {
        let page = addr / LOG_PAGE;
        self.words()
            .get((page / BITS) as usize)
            .is_some_and(|w| u64::from_le(w.load(Ordering::Relaxed)) & (1 << (page % BITS)) != 0)
    }

    /// The dirty pages' guest addresses, clearing them (what QEMU does with the shared log).
    pub fn take_dirty(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, w) in self.words().iter().enumerate() {
            let mut bits = u64::from_le(w.swap(0, Ordering::Relaxed));
            while bits != 0 {
                let b = u64::from(bits.trailing_zeros());
                out.push((i as u64 * BITS + b) * LOG_PAGE);
                bits &= bits - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_every_page_a_range_touches() {
        let log = DirtyLog::new(1 << 30);
        log.mark(0xfff, 2);
        log.mark(0x10_0000, 0);
        assert_eq!(log.take_dirty(), vec![0, 0x1000]);
        // A range across word boundaries: pages 60..=70.
        log.mark(60 * LOG_PAGE + 5, 10 * LOG_PAGE + 1);
        let want: Vec<u64> = (60..=70).map(|p| p * LOG_PAGE).collect();
        assert_eq!(log.take_dirty(), want);
        assert!(log.take_dirty().is_empty(), "taking clears");
    }

    #[test]
    fn ranges_past_the_log_are_cut_not_faulted() {
        let log = DirtyLog::new(64 * LOG_PAGE);
        assert_eq!(log.covers(), 64 * LOG_PAGE);
        log.mark(63 * LOG_PAGE, u64::MAX);
        log.mark(u64::MAX, u64::MAX);
        assert_eq!(log.take_dirty(), vec![63 * LOG_PAGE]);
    }

    #[test]
    fn a_shared_log_is_the_bitmap_qemu_reads() {
        let f = memfd(4096 + 16, false);
        assert!(matches!(
            DirtyLog::map(f.try_clone().unwrap(), 16, 4096),
            Err(LogError::NotSealed)
        ));
        let f = memfd(4096 + 16, true);
        assert!(matches!(
            DirtyLog::map(f.try_clone().unwrap(), 24, 4096),
            Err(LogError::FileTooShort { .. })
        ));
        let log = DirtyLog::map(f.try_clone().unwrap(), 16, 4096).unwrap();
        log.mark(9 * LOG_PAGE, 1);
        log.mark(64 * LOG_PAGE, 1);
        let mut bytes = [0u8; 16];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut bytes, 4096).unwrap();
        // Page 9: byte 1, bit 1; page 64: byte 8, bit 0.
        let mut want = [0u8; 16];
        (want[1], want[8]) = (0b10, 1);
        assert_eq!(bytes, want);
        assert!(matches!(
            DirtyLog::map(f, 16, 3),
            Err(LogError::BadLayout { .. })
        ));
    }

    fn memfd(len: u64, seal: bool) -> File {
        crate::testing::memfd(len, seal).unwrap()
    }
}
