//! A vhost-user frontend playing one VM: memfd guest memory shared with the switch, an RX
//! and a TX split ring driven through raw pointers into that memory (as a guest driver
//! does), so the driver side costs little next to the switch it is measuring.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use hostel_switch::datapath::vnet::{VnetHdr, OFFERED_FEATURES, VNET_HDR_LEN};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const QSIZE: u16 = 1024;
pub const MEM_SIZE: usize = 64 << 20;
const DATA: u64 = 1 << 20;
const F_WRITE: u16 = 2;

/// The driver side of one split ring over the bench's own (single-region) guest memory.
/// Every chain is one descriptor, and descriptor `i` always carries the same buffer, so
/// pushing a chain is one avail-ring slot and popping one is one used-ring read.
pub struct Ring {
    base: *mut u8,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
}

// SAFETY: the ring points into memory the owning `Vm` keeps mapped; it is used from one
// thread at a time.
unsafe impl Send for Ring {}

impl Ring {
    fn new(base: *mut u8, at: u64, size: u16) -> (Ring, u64) {
        let desc = at;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        let end = used + 6 + 8 * u64::from(size);
        let r = Ring {
            base,
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            free: (0..size).rev().collect(),
        };
        (r, end)
    }

    fn at<T>(&self, addr: u64) -> *mut T {
        debug_assert!((addr as usize) < MEM_SIZE);
        // SAFETY: every address passed is inside the bench's MEM_SIZE mapping.
        unsafe { self.base.add(addr as usize).cast() }
    }

    fn u16_at(&self, addr: u64) -> &AtomicU16 {
        // SAFETY: ring fields are 2-byte aligned and inside the mapping; the switch accesses
        // them atomically too.
        unsafe { &*self.at::<AtomicU16>(addr) }
    }

    /// Writes descriptor `id` once: `addr`/`len`, device-writable or not.
    pub fn set_desc(&mut self, id: u16, addr: u64, len: u32, write: bool) {
        let d = self.desc + 16 * u64::from(id);
        let flags = if write { F_WRITE } else { 0 };
        // SAFETY: a field of descriptor `id` < size, inside the descriptor table,
        // naturally aligned (the table is 16-byte aligned).
        unsafe { self.at::<u64>(d).write_volatile(addr.to_le()) };
        // SAFETY: as above.
        unsafe { self.at::<u32>(d + 8).write_volatile(len.to_le()) };
        // SAFETY: as above.
        unsafe { self.at::<u16>(d + 12).write_volatile(flags.to_le()) };
        // SAFETY: as above.
        unsafe { self.at::<u16>(d + 14).write_volatile(0) };
    }

    /// Offers the next free descriptor's chain; visible to the device at [`Ring::publish`].
    pub fn push(&mut self) -> bool {
        let Some(id) = self.free.pop() else {
            return false;
        };
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        // SAFETY: inside the avail ring.
        unsafe { self.at::<u16>(slot).write_volatile(id.to_le()) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        true
    }

    pub fn publish(&self) {
        self.u16_at(self.avail + 2)
            .store(self.avail_idx.to_le(), Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Chains offered and not yet used by the device.
    pub fn in_flight(&self) -> usize {
        usize::from(self.size) - self.free.len()
    }

    /// Takes back every chain the device has used; returns how many.
    pub fn reap(&mut self) -> usize {
        let idx = u16::from_le(self.u16_at(self.used + 2).load(Ordering::Acquire));
        let n = idx.wrapping_sub(self.last_used);
        for _ in 0..n {
            let e = self.used + 4 + 8 * u64::from(self.last_used % self.size);
            // SAFETY: inside the used ring.
            let id = u32::from_le(unsafe { self.at::<u32>(e).read_volatile() });
            self.free.push((id as u16) % self.size);
            self.last_used = self.last_used.wrapping_add(1);
        }
        usize::from(n)
    }

    /// Whether the device asked not to be kicked (VRING_USED_F_NO_NOTIFY).
    pub fn device_suppresses_kicks(&self) -> bool {
        u16::from_le(self.u16_at(self.used).load(Ordering::Relaxed)) & 1 == 1
    }

    /// Tells the device not to interrupt (VRING_AVAIL_F_NO_INTERRUPT): the bench polls.
    fn suppress_interrupts(&self) {
        self.u16_at(self.avail).store(1, Ordering::Relaxed);
    }
}

pub struct Vm {
    _mem: GuestMemoryMmap<()>,
    _frontend: Frontend,
    pub rx: Ring,
    pub tx: Ring,
    pub rx_kick: EventFd,
    pub tx_kick: EventFd,
    _calls: [EventFd; 2],
}

/// Guest memory as QEMU's memfd backend makes it: sealed against shrinking, which the switch
/// requires (a file that can shrink under its mapping would fault the switch).
fn memfd(size: usize) -> std::io::Result<File> {
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe {
        libc::memfd_create(
            c"hostel-bench".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size as u64)?;
    // SAFETY: F_ADD_SEALS with an integer seal set on our own memfd.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

type BoxErr = Box<dyn std::error::Error>;

impl Vm {
    /// Connects to a port socket and sets the device up as a guest driver would: the TX
    /// ring's descriptors all carry `tx_frame` (with `hdr`), the RX ring's each own one
    /// `rx_buf_size` buffer.
    pub fn connect(
        sock: &Path,
        rx_buf_size: u32,
        hdr: VnetHdr,
        tx_frame: &[u8],
    ) -> Result<Vm, BoxErr> {
        let file = memfd(MEM_SIZE)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            MEM_SIZE,
            Some(FileOffset::new(file, 0)),
        )])?;
        let mut fe = Frontend::connect(sock, 2)?;
        fe.set_owner()?;
        let offered = fe.get_features()?;
        // EVENT_IDX left out: the bench polls and uses the flag-based suppression.
        let want = (OFFERED_FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX))
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        fe.set_features(offered & want)?;
        let pf = fe.get_protocol_features()?;
        fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)?;
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<_, _>>()?;
        fe.set_mem_table(&regions)?;
        let host = mem.get_host_address(GuestAddress(0))?;
        let (mut rx, end) = Ring::new(host, 0x1000, QSIZE);
        let (mut tx, end) = Ring::new(host, (end + 0xfff) & !0xfff, QSIZE);
        assert!(end < DATA);

        let mut data = hdr.to_bytes().to_vec();
        data.extend_from_slice(tx_frame);
        mem.write_slice(&data, GuestAddress(DATA))?;
        let tx_len = (VNET_HDR_LEN + tx_frame.len()) as u32;
        let rx_base = DATA + (128 << 10);
        assert!(rx_base + u64::from(QSIZE) * u64::from(rx_buf_size) <= MEM_SIZE as u64);
        for id in 0..QSIZE {
            tx.set_desc(id, DATA, tx_len, false);
            let addr = rx_base + u64::from(id) * u64::from(rx_buf_size);
            rx.set_desc(id, addr, rx_buf_size, true);
        }
        rx.suppress_interrupts();
        tx.suppress_interrupts();

        let calls = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let kicks = [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?];
        let host = host as u64;
        for (q, r) in [&rx, &tx].into_iter().enumerate() {
            fe.set_vring_num(q, QSIZE)?;
            fe.set_vring_addr(
                q,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: host + r.desc,
                    used_ring_addr: host + r.used,
                    avail_ring_addr: host + r.avail,
                    log_addr: None,
                },
            )?;
            fe.set_vring_base(q, 0)?;
            fe.set_vring_call(q, &calls[q])?;
            fe.set_vring_kick(q, &kicks[q])?;
            fe.set_vring_enable(q, true)?;
        }
        let [rx_kick, tx_kick] = kicks;
        Ok(Vm {
            _mem: mem,
            _frontend: fe,
            rx,
            tx,
            rx_kick,
            tx_kick,
            _calls: calls,
        })
    }

    /// Re-posts every free RX descriptor.
    pub fn refill_rx(&mut self) {
        while self.rx.push() {}
        self.rx.publish();
    }

    /// Posts every RX buffer and kicks once so the switch learns of the ring.
    pub fn fill_rx(&mut self) {
        self.refill_rx();
        let _ = self.rx_kick.write(1);
    }
}
