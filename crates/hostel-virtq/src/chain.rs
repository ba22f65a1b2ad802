//! A guest descriptor chain as a bounded list of host-address segments.
//!
//! Chains come from the guest and are hostile: [`crate::Ring::gather`] checks every
//! descriptor against guest memory once, splits it at memory-region boundaries and stores it
//! as (guest address, host address, length) segments in a fixed-size array, so a chain can
//! neither make the device allocate nor reach outside the guest's memory.
//!
//! A [`Seg`] borrows the [`crate::MemMap`] its host address was resolved from, so it cannot
//! outlive the mapping; the copy methods stay inside it, so safe code can neither forge a
//! host address nor reach past one.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Enough for Linux's TSO frames (MAX_SKB_FRAGS + 2) plus region splits.
pub const MAX_SEGS: usize = 32;

/// Most descriptors one chain may use, counting the indirect descriptor and zero-length
/// ones: what a guest can make the device read per chain. Linux uses at most
/// MAX_SKB_FRAGS + 2 (19, or 47 with the largest MAX_SKB_FRAGS).
pub const MAX_CHAIN_DESCS: u32 = 128;

/// `len` bytes of guest memory at guest address `addr`, mapped at a host address for `'m`.
///
/// Checked segments come from [`crate::MemMap::segment`] or [`crate::Ring::gather`]:
///
/// ```
/// use hostel_virtq::MemMap;
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
/// let map = MemMap::new(&m);
/// let seg = map.segment(0x100, 16).unwrap();
/// assert_eq!(seg.write(0, b"hello"), 5);
/// ```
///
/// A segment cannot outlive the memory map it borrows (and so the mapping):
///
/// ```compile_fail,E0597
/// use hostel_virtq::MemMap;
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// let seg;
/// {
///     let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
///     let map = MemMap::new(&m);
///     seg = map.segment(0x100, 16).unwrap();
/// }
/// seg.write(0, b"after unmap");
/// ```
///
/// and safe code cannot make one from an address of its choosing:
///
/// ```compile_fail,E0133
/// let seg = hostel_virtq::Seg::new(0, 0xdead_0000, 16);
/// ```
///
/// ```compile_fail,E0451
/// let seg = hostel_virtq::Seg { addr: 0, host: 0xdead_0000, len: 16, _map: Default::default() };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg<'m> {
    addr: u64,
    host: usize,
    len: u32,
    _map: PhantomData<&'m [u8]>,
}

impl<'m> Seg<'m> {
    /// A segment for `[host, host + len)`, standing for guest `[addr, addr + len)`.
    ///
    /// # Safety
    /// `[host, host + len)` must be mapped, readable and writable memory that stays mapped
    /// for all of `'m` (for guest memory: inside one region of a memory map borrowed for
    /// `'m`), and must not overlap any Rust object that is borrowed or owned elsewhere,
    /// since the segment's methods write to it through shared references. Its contents may
    /// change concurrently (the guest owns it); that only affects the bytes copied.
    #[inline]
    pub unsafe fn new(addr: u64, host: usize, len: u32) -> Seg<'m> {
        Seg {
            addr,
            host,
            len,
            _map: PhantomData,
        }
    }

    /// Guest physical address of the first byte.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `[off, off + n)` of the segment as an iovec, for system calls that take them
    /// (`writev`, `readv`); `None` unless the range lies inside the segment. The iovec is
    /// valid for as long as the segment's borrow lives; the bounds are checked here so a
    /// caller's arithmetic cannot point a system call outside guest memory.
    pub fn iovec(&self, off: usize, n: usize) -> Option<libc::iovec> {
        if off.checked_add(n)? > self.len() {
            return None;
        }
        Some(libc::iovec {
            iov_base: (self.host + off) as *mut libc::c_void,
            iov_len: n,
        })
    }

    /// Bytes `[off, ...)` of the segment that `want` asks for: `min(want, len - off)`,
    /// 0 if `off` is past the end.
    #[inline]
    fn room(&self, off: usize, want: usize) -> usize {
        self.len().saturating_sub(off).min(want)
    }

    /// Copies the segment's bytes from `off` into `out`; returns how many were copied
    /// (fewer than `out.len()` at the segment's end).
    #[inline]
    pub fn read(&self, off: usize, out: &mut [u8]) -> usize {
        let n = self.room(off, out.len());
        if n > 0 {
            // SAFETY: `room` keeps [host + off, host + off + n) inside the segment, which
            // `new`'s contract keeps mapped for 'm; `out` is ours and not guest memory.
            unsafe { std::ptr::copy((self.host + off) as *const u8, out.as_mut_ptr(), n) };
        }
        n
    }

    /// Copies `src` into the segment from `off`; returns how many bytes fit.
    #[inline]
    pub fn write(&self, off: usize, src: &[u8]) -> usize {
        let n = self.room(off, src.len());
        if n > 0 {
            // SAFETY: `room` keeps the destination inside the segment, mapped and writable
            // for 'm by `new`'s contract; `src` is a live slice of at least n bytes.
            unsafe { std::ptr::copy(src.as_ptr(), (self.host + off) as *mut u8, n) };
        }
        n
    }

    /// Copies up to `n` bytes from `src` (from `src_off`) into the segment (from `off`);
    /// returns how many were copied: `n` unless either segment ends first. The two may
    /// overlap (a guest can make its own buffers alias).
    #[inline]
    pub fn copy_from(&self, off: usize, src: &Seg<'_>, src_off: usize, n: usize) -> usize {
        let n = src.room(src_off, self.room(off, n));
        if n > 0 {
            // SAFETY: both ranges lie inside their segments (`room`), each mapped for its
            // borrow by `new`'s contract; `copy` allows overlap.
            unsafe {
                std::ptr::copy(
                    (src.host + src_off) as *const u8,
                    (self.host + off) as *mut u8,
                    n,
                )
            };
        }
        n
    }
}

/// A chain's buffers, each segment inside one guest memory region, valid for `'m`.
#[derive(Clone, Copy)]
pub struct SegList<'m> {
    /// The first `n` are initialised. Left uninitialised otherwise, so an empty list costs
    /// nothing to make (a device keeps one per in-flight chain).
    segs: [MaybeUninit<Seg<'m>>; MAX_SEGS],
    n: usize,
    total: usize,
    visits: u32,
}

impl Default for SegList<'_> {
    fn default() -> Self {
        SegList::new()
    }
}

impl std::fmt::Debug for SegList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegList")
            .field("segs", &self.as_slice())
            .field("total", &self.total)
            .field("visits", &self.visits)
            .finish()
    }
}

impl<'m> SegList<'m> {
    pub const fn new() -> SegList<'m> {
        SegList {
            segs: [MaybeUninit::uninit(); MAX_SEGS],
            n: 0,
            total: 0,
            visits: 0,
        }
    }

    /// Makes an empty list in `slot`, writing only its few counters: moving a
    /// [`SegList::new`] into place can cost a memset of the whole list (LLVM may zero the
    /// uninitialised segments), which a device making one per chain of a batch notices.
    #[inline]
    pub fn init_in<'s>(slot: &'s mut MaybeUninit<SegList<'m>>) -> &'s mut SegList<'m> {
        let p = slot.as_mut_ptr();
        // SAFETY: `p` points at the slot's storage; `&raw mut` takes the field's address
        // without making a reference to uninitialised data.
        let n = unsafe { &raw mut (*p).n };
        // SAFETY: an aligned field pointer into storage we borrow mutably.
        unsafe { n.write(0) };
        // SAFETY: `p` points at the slot's storage; `&raw mut` takes the field's address
        // without making a reference to uninitialised data.
        let total = unsafe { &raw mut (*p).total };
        // SAFETY: an aligned field pointer into storage we borrow mutably.
        unsafe { total.write(0) };
        // SAFETY: `p` points at the slot's storage; `&raw mut` takes the field's address
        // without making a reference to uninitialised data.
        let visits = unsafe { &raw mut (*p).visits };
        // SAFETY: an aligned field pointer into storage we borrow mutably.
        unsafe { visits.write(0) };
        // SAFETY: every field is now initialised: the three counters just written, and
        // `segs`, an array of `MaybeUninit` that needs none (`n == 0`: none of it in use).
        unsafe { slot.assume_init_mut() }
    }

    #[inline]
    pub fn as_slice(&self) -> &[Seg<'m>] {
        // SAFETY: the first `n` elements are initialised (`push` is the only writer and
        // raises `n` after writing), and MaybeUninit<T> has T's layout.
        unsafe { std::slice::from_raw_parts(self.segs.as_ptr().cast::<Seg<'m>>(), self.n) }
    }

    /// Segments in the list.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes in the chain (the sum of its descriptors' lengths).
    pub fn total(&self) -> usize {
        self.total
    }

    /// Descriptors read to gather the chain (at most [`MAX_CHAIN_DESCS`]), even if it was
    /// refused: the work it cost.
    pub fn visits(&self) -> u32 {
        self.visits
    }

    #[inline]
    pub(crate) fn reset(&mut self) {
        self.n = 0;
        self.total = 0;
        self.visits = 0;
    }

    #[inline]
    pub(crate) fn add_visit(&mut self) -> u32 {
        self.visits += 1;
        self.visits
    }

    #[inline]
    pub(crate) fn add_total(&mut self, len: u32) -> usize {
        self.total = self.total.saturating_add(len as usize);
        self.total
    }

    /// Appends `s`; false if the list is full.
    #[inline]
    pub(crate) fn push(&mut self, s: Seg<'m>) -> bool {
        let Some(slot) = self.segs.get_mut(self.n) else {
            return false;
        };
        slot.write(s);
        self.n += 1;
        true
    }

    /// Copies bytes `[skip, skip + out.len())` of the chain into `out`; returns how many
    /// bytes were available.
    pub fn read_at(&self, skip: usize, out: &mut [u8]) -> usize {
        let mut pos = 0usize; // chain offset of the current segment's start
        let mut done = 0usize;
        for s in self.as_slice() {
            if done == out.len() {
                break;
            }
            let want_from = skip + done;
            if want_from < pos + s.len() {
                done += s.read(want_from - pos, &mut out[done..]);
            }
            pos += s.len();
        }
        done
    }

    /// Records in `map`'s dirty log that the device wrote the chain's first `len` bytes.
    pub fn mark_written(&self, map: &crate::MemMap<'_>, len: usize) {
        if map.log().is_none() {
            return;
        }
        let mut left = len;
        for s in self.as_slice() {
            if left == 0 {
                break;
            }
            let n = s.len().min(left);
            map.mark_dirty(s.addr(), n as u64);
            left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_made_in_place_is_empty() {
        let mut slot = MaybeUninit::<SegList<'static>>::uninit();
        let l = SegList::init_in(&mut slot);
        assert!(l.is_empty());
        assert_eq!((l.len(), l.total(), l.visits()), (0, 0, 0));
        assert!(l.as_slice().is_empty());
    }

    #[test]
    fn iovec_stays_inside_its_segment() {
        let buf = [0u8; 16];
        // SAFETY: a live local array; the test only builds iovecs from it.
        let s = unsafe { Seg::new(0, buf.as_ptr() as usize, 16) };
        let v = s.iovec(4, 12).unwrap();
        assert_eq!(v.iov_base as usize, buf.as_ptr() as usize + 4);
        assert_eq!(v.iov_len, 12);
        assert!(s.iovec(16, 0).is_some());
        assert!(s.iovec(4, 13).is_none());
        assert!(s.iovec(17, 0).is_none());
        assert!(s.iovec(usize::MAX, 2).is_none());
    }

    fn list(parts: &[&[u8]]) -> SegList<'static> {
        let mut l = SegList::new();
        for p in parts {
            // SAFETY: test data leaked for 'static; the tests only read through the segments.
            let s = unsafe { Seg::new(0, p.as_ptr() as usize, p.len() as u32) };
            assert!(l.push(s));
            l.add_total(p.len() as u32);
        }
        l
    }

    #[test]
    fn read_at_spans_segments() {
        let data: &'static [u8] = Vec::leak((0..=255u8).collect());
        let l = list(&[&data[..100], &data[100..]]);
        let mut out = [0u8; 50];
        assert_eq!(l.read_at(80, &mut out), 50);
        assert_eq!(&out[..], &data[80..130]);
        assert_eq!(l.read_at(250, &mut out), 6);
        assert_eq!(l.read_at(300, &mut out), 0);
    }

    #[test]
    fn copies_stay_inside_their_segments() {
        let buf: &'static mut [u8] = Vec::leak(vec![0u8; 64]);
        let base = buf.as_mut_ptr() as usize;
        // SAFETY: the first half of a leaked buffer nothing else borrows.
        let a = unsafe { Seg::new(0, base, 32) };
        // SAFETY: the second half of it.
        let b = unsafe { Seg::new(32, base + 32, 32) };
        assert_eq!(a.write(30, b"abcd"), 2, "stops at the segment's end");
        assert_eq!(a.write(40, b"x"), 0, "past the end writes nothing");
        assert_eq!(b.copy_from(0, &a, 30, 10), 2);
        let mut out = [0u8; 4];
        assert_eq!(b.read(0, &mut out), 4);
        assert_eq!(&out[..2], b"ab");
        assert_eq!(b.read(31, &mut out), 1);
        let mut l = SegList::new();
        for _ in 0..MAX_SEGS {
            assert!(l.push(a));
        }
        assert!(!l.push(a), "a full list refuses more");
    }
}
