//! A host network interface driven by the switch itself: an AF_PACKET socket bound to it,
//! promiscuous, with a memory-mapped TPACKET_V3 receive ring (the kernel fills whole blocks
//! of frames and hands them over; the reader walks a block and gives it back) and a
//! memory-mapped transmit ring: senders fill slots, and one kick ([`PacketDev::flush`], once
//! per batch) sends them all, with `PACKET_QDISC_BYPASS` (straight to the driver, no qdisc).
//! TSO frames (with their virtio-net header, segmented by the NIC or the kernel), frames too
//! big for a slot, and frames arriving while the ring is full go by `sendmsg` on a second,
//! ringless socket. No kernel bridge and no
//! host routing sit in the path: the switch decides where each frame goes.
//!
//! Hand-written over `libc` because no maintained crate offers a TPACKET_V3 ring with the
//! bounds checks wanted here. The ring's block and frame headers are written by the kernel,
//! but every length and offset in them is checked against the block before use
//! ([`walk_block`]), so a wrong header costs a counted drop, never a read outside the ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::VnetHdr;
use crate::stats::DropReason;

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_LOSS: libc::c_int = 14;
const PACKET_VNET_HDR: libc::c_int = 15;
/// `struct virtio_net_hdr` (without `num_buffers`), which `PACKET_VNET_HDR` prefixes.
const VNET_HDR_SHORT: usize = 10;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TPACKET_V3: libc::c_int = 2;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The frame was cut to fit (snaplen < len).
const TP_STATUS_COPY: u32 = 1 << 1;
/// The frame's TCP/UDP checksum is partial (the host's own stack sent it with checksum
/// offload, e.g. through a veth): only the pseudo-header sum is in the field.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
/// The frame carried an 802.1Q tag, which the kernel took out of the data (VLAN offload)
/// into the header: without this check a tagged frame would look untagged.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

/// Ring geometry: 16 blocks of 256 KiB (4 MiB), each retired after at most 2 ms so a lone
/// frame is not held back waiting for its block to fill.
pub const BLOCK_SIZE: u32 = 1 << 18;
pub const BLOCK_NR: u32 = 16;
const FRAME_SIZE: u32 = 1 << 11;
const RETIRE_MS: u32 = 2;
/// Transmit ring: 256 slots of 2 KiB (a 1514-byte frame and its header fit; larger frames
/// take the `sendmsg` path). The kernel walks queued slots in order on each kick.
const TX_BLOCK: u32 = 1 << 16;
const TX_BLOCK_NR: u32 = 8;
const TX_FRAME: usize = 2048;
const TX_FRAMES: usize = (TX_BLOCK * TX_BLOCK_NR) as usize / TX_FRAME;
/// Where a TX slot's frame starts: `TPACKET3_HDRLEN - sizeof(struct sockaddr_ll)`.
const TX_DATA: usize = 48;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// Offsets in `struct tpacket_block_desc` (V3) and `struct tpacket3_hdr`.
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST: usize = 16;
const BLK_HDR_LEN: usize = 48;
const PKT_NEXT: usize = 0;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_STATUS: usize = 20;
const PKT_MAC: usize = 24;
const PKT_HDR_LEN: usize = 48;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
struct PacketMreq {
    ifindex: libc::c_int,
    kind: libc::c_ushort,
    alen: libc::c_ushort,
    address: [u8; 8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_ne_bytes(s))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_ne_bytes(s))
}

/// One frame's place in a retired block, as its header describes it (checked against the
/// block).
struct Span {
    start: usize,
    end: usize,
    status: u32,
    len: u32,
}

/// Walks the frame headers of one retired block (`block`: the whole block, headers
/// included), calling `f` with each frame's span or with the drop reason of a header that
/// cannot be used. Every offset is checked against the block; the walk stops at the first
/// header that points outside it, and visits at most as many frames as the block could hold.
fn walk_spans(block: &[u8], mut f: impl FnMut(Result<Span, DropReason>)) {
    let Some(n) = u32_at(block, BLK_NUM_PKTS) else {
        return;
    };
    let Some(mut off) = u32_at(block, BLK_FIRST).map(|o| o as usize) else {
        return;
    };
    let most = block.len() / PKT_HDR_LEN;
    for _ in 0..(n as usize).min(most) {
        if off < BLK_HDR_LEN || off.saturating_add(PKT_HDR_LEN) > block.len() {
            f(Err(DropReason::Malformed));
            return;
        }
        let hdr = &block[off..off + PKT_HDR_LEN];
        let (Some(next), Some(snap), Some(len), Some(status), Some(mac)) = (
            u32_at(hdr, PKT_NEXT),
            u32_at(hdr, PKT_SNAPLEN),
            u32_at(hdr, PKT_LEN),
            u32_at(hdr, PKT_STATUS),
            u16_at(hdr, PKT_MAC),
        ) else {
            f(Err(DropReason::Malformed));
            return;
        };
        let start = off.saturating_add(usize::from(mac));
        let end = start.saturating_add(snap as usize);
        if usize::from(mac) < PKT_HDR_LEN || end > block.len() {
            f(Err(DropReason::Malformed));
            return;
        }
        f(Ok(Span {
            start,
            end,
            status,
            len,
        }));
        if next == 0 {
            return;
        }
        // Frames only move forward through a block.
        off = match off.checked_add(next as usize) {
            Some(o) if o > off => o,
            _ => {
                f(Err(DropReason::Malformed));
                return;
            }
        };
    }
}

/// Walks the frames of one retired block, calling `f` with each frame or with the drop
/// reason of one that cannot be used (see [`walk_spans`] for the bounds).
pub fn walk_block<'a>(block: &'a [u8], mut f: impl FnMut(Result<&'a [u8], DropReason>)) {
    walk_spans(block, |r| {
        f(r.and_then(|s| {
            if s.status & TP_STATUS_VLAN_VALID != 0 {
                Err(DropReason::VlanTagged)
            } else if s.status & TP_STATUS_COPY != 0 || (s.end - s.start) < s.len as usize {
                Err(DropReason::TooLong)
            } else {
                Ok(&block[s.start..s.end])
            }
        }))
    });
}

/// Completes, in place, the checksums the kernel left partial in a retired block's frames
/// (`TP_STATUS_CSUMNOTREADY`; see [`crate::packet::ip::complete_partial_l4`]). The block is
/// the reader's until it goes back to the kernel, so its frames may be written.
pub fn complete_checksums(block: &mut [u8]) {
    let mut partial: Vec<(usize, usize)> = Vec::new();
    walk_spans(block, |r| {
        if let Ok(s) = r {
            if s.status & TP_STATUS_CSUMNOTREADY != 0 {
                partial.push((s.start, s.end));
            }
        }
    });
    for (start, end) in partial {
        crate::packet::ip::complete_partial_l4(&mut block[start..end]);
    }
}

/// The mapping of both rings: receive blocks first, then the transmit slots.
struct Mapping {
    base: *mut u8,
    size: usize,
}

// SAFETY: plain shared memory. Receive blocks are touched only by the reader holding
// `PacketDev::rx`, transmit slots only under `PacketDev::tx`; status words are read and
// written volatile with fences, as the kernel's side expects.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access goes through one of the two locks.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are the mapping made in `PacketDev::open`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

/// An interface opened as the switch's external port.
pub struct PacketDev {
    pub name: String,
    map: Mapping,
    fd: OwnedFd,
    /// A second socket on the interface, without rings and receiving nothing, for frames
    /// that do not fit a transmit slot (on the ringed socket, `sendmsg` only kicks the ring).
    direct: OwnedFd,
    /// The next receive block to look at.
    rx: Mutex<usize>,
    /// The next transmit slot to fill.
    tx: Mutex<usize>,
    /// Slots were queued since the last kick.
    tx_pending: AtomicBool,
    stop: AtomicBool,
}

fn sockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the option's type, passed with its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A send-only AF_PACKET socket on interface `ifindex`, for TSO and oversized frames: bound
/// with protocol 0, so the kernel hands it no received frames.
fn direct_socket(ifindex: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: creating a socket has no memory-safety preconditions.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // No PACKET_QDISC_BYPASS here: the bypass drops a frame the kernel would have to
    // segment in software (a NIC without TSO), so TSO frames take the ordinary path.
    // A virtio-net header before each frame: a guest's TSO frame goes to the kernel whole,
    // and the NIC (or the kernel's software GSO) segments it and fills in the checksums.
    sockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)?;
    // SAFETY: sockaddr_ll is plain data, valid all-zero.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll and the size given is its own.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl PacketDev {
    /// Opens interface `name`: socket, V3 ring, bind, promiscuous membership, qdisc bypass,
    /// and our own transmissions ignored on receive. The interface must exist and be up.
    pub fn open(name: &str) -> io::Result<PacketDev> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such network interface",
            ));
        }
        // Protocol 0: nothing is received before the ring exists and the bind below.
        // SAFETY: creating a socket has no memory-safety preconditions.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        sockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        // A slot the kernel finds malformed is skipped, not left blocking the ring (settable
        // only before the rings exist).
        sockopt(&fd, SOL_PACKET, PACKET_LOSS, &1 as &libc::c_int)?;
        let req = TpacketReq3 {
            block_size: BLOCK_SIZE,
            block_nr: BLOCK_NR,
            frame_size: FRAME_SIZE,
            frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
            retire_blk_tov: RETIRE_MS,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        sockopt(&fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        let treq = TpacketReq3 {
            block_size: TX_BLOCK,
            block_nr: TX_BLOCK_NR,
            frame_size: TX_FRAME as u32,
            frame_nr: TX_FRAMES as u32,
            retire_blk_tov: 0,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        sockopt(&fd, SOL_PACKET, PACKET_TX_RING, &treq)?;
        let size = (BLOCK_SIZE * BLOCK_NR + TX_BLOCK * TX_BLOCK_NR) as usize;
        // SAFETY: maps the rings the kernel just allocated for this socket; the length is
        // theirs, and the mapping is owned (and unmapped) by `Mapping`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping {
            base: base.cast(),
            size,
        };
        sockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
        sockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)?;
        // SAFETY: sockaddr_ll is plain data, valid all-zero.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll and the size given is its own.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let direct = direct_socket(ifindex)?;
        let mreq = PacketMreq {
            ifindex: ifindex as libc::c_int,
            kind: PACKET_MR_PROMISC,
            alen: 0,
            address: [0; 8],
        };
        sockopt(&fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
        Ok(PacketDev {
            name: name.to_string(),
            map,
            fd,
            direct,
            rx: Mutex::new(0),
            tx: Mutex::new(0),
            tx_pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// Sends one frame: a plain one through the transmit ring (leaving on the next
    /// [`PacketDev::flush`]), one with offloads (`hdr`: TSO, partial checksum) or too big for
    /// a slot at once through the ringless socket, with its virtio-net header.
    pub fn send(&self, hdr: VnetHdr, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        let plain = hdr.gso_type == crate::datapath::vnet::GSO_NONE
            && hdr.flags & crate::datapath::vnet::HDR_F_NEEDS_CSUM == 0;
        if plain && src.len <= TX_FRAME - TX_DATA {
            match self.queue(src) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(r) => return Err(r),
            }
        }
        // What is queued goes first.
        self.flush();
        let vh = VnetHdr {
            num_buffers: 0,
            ..hdr
        }
        .to_bytes();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2 + hostel_virtq::MAX_SEGS];
        iov[0] = libc::iovec {
            iov_base: vh.as_ptr() as *mut _,
            iov_len: VNET_HDR_SHORT,
        };
        let head_len = src.head.len().min(src.len);
        iov[1] = libc::iovec {
            iov_base: src.head.as_ptr() as *mut _,
            iov_len: head_len,
        };
        let mut cnt = 2;
        let mut left = src.len - head_len;
        let mut pos = 0usize;
        for s in src.tail.as_slice() {
            if left == 0 {
                break;
            }
            let slen = s.len();
            if src.tail_skip >= pos + slen {
                pos += slen;
                continue;
            }
            let off = src.tail_skip.saturating_sub(pos);
            let n = (slen - off).min(left);
            iov[cnt] = s.iovec(off, n).ok_or(DropReason::BadDescriptor)?;
            cnt += 1;
            left -= n;
            pos += slen;
        }
        // SAFETY: msghdr is plain data, valid all-zero.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = cnt;
        // SAFETY: the iovecs point into `vh`, `src.head` and guest segments checked by
        // `Seg::iovec`, all alive for the call; sendmsg only reads them. The socket is bound,
        // so no address is needed.
        let r = unsafe { libc::sendmsg(self.direct.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if r < 0 {
            return Err(DropReason::UplinkError);
        }
        Ok(())
    }

    /// Puts `src` in the next transmit slot, to leave on the next [`PacketDev::flush`]; false
    /// if that slot is still the kernel's (the ring is full).
    fn queue(&self, src: &FrameSrc<'_>) -> Result<bool, DropReason> {
        let mut next = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let rx_size = (BLOCK_SIZE * BLOCK_NR) as usize;
        let slot = self.map.base.wrapping_add(rx_size + *next * TX_FRAME);
        let status_word = slot.wrapping_add(PKT_STATUS).cast::<u32>();
        // SAFETY: the status word is 4-aligned inside the slot (slots are 2 KiB aligned in a
        // page-aligned mapping); read volatile because the kernel writes it.
        let status = unsafe { std::ptr::read_volatile(status_word) };
        if status != TP_STATUS_AVAILABLE && status != TP_STATUS_WRONG_FORMAT {
            return Ok(false);
        }
        fence(Ordering::Acquire);
        let n = {
            // SAFETY: the slot (`TX_FRAME` bytes inside the mapping) is ours while its status
            // is AVAILABLE, and `self.tx` keeps other senders out of it.
            let s = unsafe { std::slice::from_raw_parts_mut(slot, TX_FRAME) };
            let n = src.copy_prefix(&mut s[TX_DATA..]);
            if n != src.len {
                return Err(DropReason::BadDescriptor);
            }
            s[PKT_NEXT..PKT_NEXT + 4].copy_from_slice(&0u32.to_ne_bytes());
            s[PKT_SNAPLEN..PKT_SNAPLEN + 4].copy_from_slice(&(n as u32).to_ne_bytes());
            s[PKT_LEN..PKT_LEN + 4].copy_from_slice(&(n as u32).to_ne_bytes());
            n
        };
        debug_assert!(n <= TX_FRAME - TX_DATA);
        fence(Ordering::Release);
        // SAFETY: as above; handing the slot to the kernel.
        unsafe { std::ptr::write_volatile(status_word, TP_STATUS_SEND_REQUEST) };
        *next = (*next + 1) % TX_FRAMES;
        self.tx_pending.store(true, Ordering::Release);
        Ok(true)
    }

    /// Tells the kernel to send every queued slot (one system call for all of them); a
    /// no-op when nothing was queued since the last call.
    pub fn flush(&self) {
        if !self.tx_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        // SAFETY: a zero-length send on our own socket: the kernel reads only the ring.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if r < 0 {
            tracing::debug!(interface = %self.name, error = %io::Error::last_os_error(),
                "kicking the transmit ring failed");
        }
    }

    /// Waits up to `timeout_ms` for a retired block; false if the interface is gone.
    pub fn wait(&self, timeout_ms: libc::c_int) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        !(r > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
    }

    /// Hands every frame of every block the kernel has retired (at most the whole ring) to
    /// `f`, giving each block back as soon as it is walked. Returns the frames seen.
    /// Hands the frames of each retired block to `f`, a block at a time (so the consumer can
    /// look ahead within it), then gives the block back to the kernel.
    pub fn drain(&self, mut f: impl FnMut(&[Result<&[u8], DropReason>])) -> usize {
        let mut next = self.rx.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = 0;
        let mut frames = Vec::new();
        for _ in 0..BLOCK_NR {
            let bs = BLOCK_SIZE as usize;
            // SAFETY: `next < BLOCK_NR`, so the block lies inside the mapping.
            let block = unsafe { self.map.base.add(*next * bs) };
            let status_word = block.wrapping_add(BLK_STATUS).cast::<u32>();
            // SAFETY: the status word is 4-aligned inside the block (blocks are page
            // aligned); read volatile because the kernel writes it.
            let status = unsafe { std::ptr::read_volatile(status_word) };
            if status & TP_STATUS_USER == 0 {
                break;
            }
            // Pairs with the kernel's barrier before it set TP_STATUS_USER.
            fence(Ordering::Acquire);
            {
                // SAFETY: the block is ours until its status goes back to KERNEL below: the
                // kernel neither writes nor frees it meanwhile, and only this reader (holding
                // `rx`) touches it, so a unique slice is sound until the shared one below.
                let bm = unsafe { std::slice::from_raw_parts_mut(block, bs) };
                complete_checksums(bm);
                // SAFETY: as above; `bm` is no longer used.
                let b = unsafe { std::slice::from_raw_parts(block.cast_const(), bs) };
                walk_block(b, |r| frames.push(r));
                seen += frames.len();
                f(&frames);
                // No reference into the block outlives its return to the kernel.
                frames.clear();
            }
            fence(Ordering::Release);
            // SAFETY: as above; handing the block back to the kernel.
            unsafe { std::ptr::write_volatile(status_word, TP_STATUS_KERNEL) };
            *next = (*next + 1) % BLOCK_NR as usize;
        }
        seen
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// A block with `frames` laid out as the kernel does.
    fn block(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        put32(&mut b, BLK_NUM_PKTS, frames.len() as u32);
        put32(&mut b, BLK_FIRST, BLK_HDR_LEN as u32);
        let mut off = BLK_HDR_LEN;
        for (i, f) in frames.iter().enumerate() {
            let mac = 66usize;
            let step = (mac + f.len()).next_multiple_of(16);
            let next = if i + 1 == frames.len() { 0 } else { step };
            put32(&mut b, off + PKT_NEXT, next as u32);
            put32(&mut b, off + PKT_SNAPLEN, f.len() as u32);
            put32(&mut b, off + PKT_LEN, f.len() as u32);
            b[off + PKT_MAC..off + PKT_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[off + mac..off + mac + f.len()].copy_from_slice(f);
            off += step;
        }
        b
    }

    fn walk(b: &[u8]) -> Vec<Result<Vec<u8>, DropReason>> {
        let mut out = Vec::new();
        walk_block(b, |r| out.push(r.map(<[u8]>::to_vec)));
        out
    }

    #[test]
    fn walks_well_formed_blocks() {
        let b = block(&[b"first frame", b"second", &[7u8; 100]]);
        let got = walk(&b);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_deref(), Ok(&b"first frame"[..]));
        assert_eq!(got[2].as_deref(), Ok(&[7u8; 100][..]));
    }

    #[test]
    fn hostile_headers_stay_inside_the_block() {
        // A frame whose snaplen runs past the block.
        let mut b = block(&[b"abc"]);
        put32(&mut b, BLK_HDR_LEN + PKT_SNAPLEN, 1 << 20);
        put32(&mut b, BLK_HDR_LEN + PKT_LEN, 1 << 20);
        assert_eq!(walk(&b), vec![Err(DropReason::Malformed)]);
        // A first-packet offset outside the block, or inside the block header.
        let mut b = block(&[b"abc"]);
        put32(&mut b, BLK_FIRST, u32::MAX);
        assert_eq!(walk(&b), vec![Err(DropReason::Malformed)]);
        put32(&mut b, BLK_FIRST, 4);
        assert_eq!(walk(&b), vec![Err(DropReason::Malformed)]);
        // A next offset that loops back (0 ends the block; a wrap is refused).
        let mut b = block(&[b"abc", b"def"]);
        put32(&mut b, BLK_HDR_LEN + PKT_NEXT, u32::MAX);
        let got = walk(&b);
        assert_eq!(got.last(), Some(&Err(DropReason::Malformed)));
        // A huge packet count visits at most what the block could hold.
        let mut b = block(&[b"abc", b"def"]);
        put32(&mut b, BLK_NUM_PKTS, u32::MAX);
        assert_eq!(walk(&b).len(), 2);
        // A frame cut short by the kernel is a drop, not a short frame.
        let mut b = block(&[b"abc"]);
        put32(&mut b, BLK_HDR_LEN + PKT_LEN, 9000);
        assert_eq!(walk(&b), vec![Err(DropReason::TooLong)]);
        // A tag the kernel took out of the frame still makes it a tagged frame.
        let mut b = block(&[b"abc"]);
        put32(&mut b, BLK_HDR_LEN + PKT_STATUS, TP_STATUS_VLAN_VALID);
        assert_eq!(walk(&b), vec![Err(DropReason::VlanTagged)]);
        // A MAC offset inside the frame header.
        let mut b = block(&[b"abc"]);
        b[BLK_HDR_LEN + PKT_MAC..BLK_HDR_LEN + PKT_MAC + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(walk(&b), vec![Err(DropReason::Malformed)]);
        // Truncated blocks.
        assert!(walk(&b[..10]).is_empty());
        assert_eq!(
            walk(&block(&[b"abc"])[..60]),
            vec![Err(DropReason::Malformed)]
        );
    }

    /// An IPv4 UDP frame (or TCP with `tcp`) whose L4 checksum field holds `csum`.
    fn ip4_frame(tcp: bool, csum: Option<u16>) -> Vec<u8> {
        let l4len = if tcp { 20 } else { 8 } + 5;
        let mut f = vec![0u8; 14 + 20 + l4len];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = if tcp { 6 } else { 17 };
        ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
        ip[16..20].copy_from_slice(&[192, 0, 2, 9]);
        let l4 = &mut f[34..];
        l4[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        if tcp {
            l4[12] = 5 << 4;
        } else {
            l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
        }
        let at = if tcp { 16 } else { 6 };
        let n = l4.len();
        l4[n - 5..].copy_from_slice(b"hello");
        let full = {
            let acc = crate::packet::checksum::pseudo4(
                std::net::Ipv4Addr::new(192, 0, 2, 1),
                std::net::Ipv4Addr::new(192, 0, 2, 9),
                if tcp { 6 } else { 17 },
                l4len as u16,
            );
            crate::packet::checksum::finish(crate::packet::checksum::sum(acc, l4))
        };
        let c = csum.unwrap_or(full);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn partial_checksums_are_completed_in_the_block() {
        for tcp in [false, true] {
            let whole = ip4_frame(tcp, None);
            // What the host's stack leaves with offload on: the pseudo-header sum, folded,
            // not inverted.
            let pseudo = !crate::packet::checksum::finish(crate::packet::checksum::pseudo4(
                std::net::Ipv4Addr::new(192, 0, 2, 1),
                std::net::Ipv4Addr::new(192, 0, 2, 9),
                if tcp { 6 } else { 17 },
                (whole.len() - 34) as u16,
            ));
            let partial = ip4_frame(tcp, Some(pseudo));
            assert_ne!(partial, whole);
            let mut b = block(&[&partial, &partial]);
            put32(&mut b, BLK_HDR_LEN + PKT_STATUS, TP_STATUS_CSUMNOTREADY);
            complete_checksums(&mut b);
            let got = walk(&b);
            assert_eq!(
                got[0].as_deref(),
                Ok(&whole[..]),
                "tcp={tcp}: flagged frame completed"
            );
            assert_eq!(
                got[1].as_deref(),
                Ok(&partial[..]),
                "tcp={tcp}: unflagged frame untouched"
            );
        }
    }

    #[test]
    fn hostile_partial_frames_are_left_alone() {
        // Lengths that do not add up, a fragment, a header length below 20, a runt.
        let mut frag = ip4_frame(false, Some(0x1234));
        frag[14 + 6] = 0x20;
        let mut long = ip4_frame(true, Some(0x1234));
        long[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
        let mut ihl = ip4_frame(true, Some(0x1234));
        ihl[14] = 0x41;
        let mut v6 = vec![0u8; 60];
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        v6[14 + 4..14 + 6].copy_from_slice(&0xfff0u16.to_be_bytes());
        v6[14 + 6] = 6;
        for f in [frag, long, ihl, v6, vec![8u8, 0], Vec::new()] {
            let mut b = block(&[&f]);
            put32(&mut b, BLK_HDR_LEN + PKT_STATUS, TP_STATUS_CSUMNOTREADY);
            complete_checksums(&mut b);
            assert_eq!(walk(&b), vec![Ok(f.clone())]);
        }
    }
}
