//! [`VhostUserBackend`] for one virtio-blk disk: a pool volume, one queue per vCPU, each
//! queue served by its own thread.
//!
//! A fresh backend is created for every frontend connection (as the switch does), so nothing
//! negotiated with one guest session leaks into the next.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hostel_pool::Pool;
use hostel_vhost::ExitEvents;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringMutex, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::request::{self, Desc, Op, Parsed, Request, MAX_CHAIN, SECTOR};

pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
pub type Vring = VringMutex<Mem>;

/// Ring size cap (QEMU's vhost-user-blk default is 128).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Chains served per queue event before the queue yields (it kicks itself to resume): one
/// queue flooding requests cannot hold its thread, nor the pool, for longer than this.
pub const MAX_CHAINS_PER_EVENT: usize = 256;
/// Most queues a disk may have.
pub const MAX_QUEUES: u16 = 64;
/// Bytes moved between guest memory and the pool per step: bounds the backend's buffer
/// whatever the request's size.
const CHUNK: usize = 64 * 1024;

const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_MQ: u64 = 1 << 12;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;
const F_INDIRECT_DESC: u64 = 1 << 28;
const F_VERSION_1: u64 = 1 << 32;
/// What the device offers (event-index is left out: the queue loop re-checks the ring after
/// re-enabling notifications, which is all it needs).
pub const OFFERED_FEATURES: u64 = F_SIZE_MAX
    | F_SEG_MAX
    | F_BLK_SIZE
    | F_FLUSH
    | F_MQ
    | F_DISCARD
    | F_WRITE_ZEROES
    | F_INDIRECT_DESC
    | F_VERSION_1;

/// The disk a backend serves.
#[derive(Clone)]
pub struct Disk {
    pub pool: Arc<Pool>,
    pub volume: String,
    /// GET_ID's answer (the guest's /sys/block/vdX/serial), at most 20 bytes.
    pub serial: String,
    pub queues: u16,
}

struct Inner {
    disk: Disk,
    mem: Mem,
    /// Exit events handed to the library, closed when the session ends.
    exit_events: ExitEvents,
    acked: AtomicU64,
}

#[derive(Clone)]
pub struct BlkBackend {
    inner: Arc<Inner>,
}

impl BlkBackend {
    pub fn new(disk: Disk, mem: Mem) -> Self {
        BlkBackend {
            inner: Arc::new(Inner {
                disk,
                mem,
                exit_events: ExitEvents::default(),
                acked: AtomicU64::new(0),
            }),
        }
    }

    /// The exit events this backend handed out.
    pub fn exit_events(&self) -> &ExitEvents {
        &self.inner.exit_events
    }

    fn capacity_sectors(&self) -> u64 {
        let d = &self.inner.disk;
        d.pool.volume_size(&d.volume).map_or(0, |s| s / SECTOR)
    }

    /// virtio_blk_config (virtio 1.2, 5.2.4), little-endian.
    pub fn config(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        let put32 =
            |c: &mut [u8; 60], at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        put32(&mut c, 8, request::SIZE_MAX);
        put32(&mut c, 12, request::SEG_MAX);
        put32(&mut c, 20, 4096); // blk_size: the pool checksums 4 KiB blocks
        c[34..36].copy_from_slice(&self.inner.disk.queues.to_le_bytes());
        put32(&mut c, 36, request::MAX_DISCARD_SECTORS);
        put32(&mut c, 40, request::MAX_DISCARD_SEG);
        put32(&mut c, 44, (hostel_pool::CLUSTER_SIZE / SECTOR) as u32);
        put32(&mut c, 48, request::MAX_DISCARD_SECTORS);
        put32(&mut c, 52, request::MAX_DISCARD_SEG);
        c[56] = 1; // write_zeroes_may_unmap
        c
    }

    fn serve_queue(&self, vring: &Vring) -> io::Result<()> {
        let mem = self.inner.mem.memory();
        let capacity = self.capacity_sectors();
        let reader = |addr: u64, out: &mut [u8]| mem.read_slice(out, GuestAddress(addr)).is_ok();
        let mut served = 0;
        loop {
            let _ = vring.disable_notification();
            while served < MAX_CHAINS_PER_EVENT {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                // The chain walker is bounded by the ring (or indirect table) size; keep the
                // first MAX_CHAIN descriptors and always the last (where the status goes).
                let mut descs = Vec::with_capacity(8);
                for d in chain {
                    let d = Desc {
                        addr: d.addr().0,
                        len: d.len(),
                        writable: d.is_write_only(),
                    };
                    if descs.len() > MAX_CHAIN {
                        if let Some(last) = descs.last_mut() {
                            *last = d;
                        }
                    } else {
                        descs.push(d);
                    }
                }
                let used = match request::parse(&descs, capacity, &reader) {
                    Parsed::Ok(req) => self.execute(&req, &mem),
                    Parsed::Fail { why, status } => {
                        tracing::debug!(volume = %self.inner.disk.volume, error = %why, "bad request");
                        match status {
                            Some(s) => {
                                let _ = mem.write_obj(why.status(), GuestAddress(s));
                                1
                            }
                            None => 0,
                        }
                    }
                };
                if let Err(e) = vring.add_used(head, used) {
                    return Err(io::Error::other(format!("used ring: {e}")));
                }
                served += 1;
            }
            if served >= MAX_CHAINS_PER_EVENT {
                self_kick(vring);
                break;
            }
            match vring.enable_notification() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Err(io::Error::other(format!("queue: {e}"))),
            }
        }
        vring.signal_used_queue()
    }

    /// Carries out a parsed request; returns the bytes written into the guest's buffers.
    fn execute(&self, req: &Request, mem: &GuestMemoryMmap<()>) -> u32 {
        let d = &self.inner.disk;
        let (status, written) = match &req.op {
            Op::In { sector, bytes } => match self.read_into(mem, req, sector * SECTOR) {
                Ok(()) => (request::S_OK, *bytes as u32),
                Err(e) => {
                    tracing::warn!(volume = %d.volume, error = %e, "read failed");
                    (request::S_IOERR, 0)
                }
            },
            Op::Out { sector, .. } => match self.write_from(mem, req, sector * SECTOR) {
                Ok(()) => (request::S_OK, 0),
                Err(e) => {
                    tracing::warn!(volume = %d.volume, error = %e, "write failed");
                    (request::S_IOERR, 0)
                }
            },
            Op::Flush => match d.pool.flush() {
                Ok(()) => (request::S_OK, 0),
                Err(e) => {
                    tracing::warn!(volume = %d.volume, error = %e, "flush failed");
                    (request::S_IOERR, 0)
                }
            },
            Op::GetId => {
                let mut id = [0u8; request::ID_BYTES];
                let s = d.serial.as_bytes();
                let n = s.len().min(id.len());
                id[..n].copy_from_slice(&s[..n]);
                let mut at = 0usize;
                for b in &req.data {
                    let n = (b.len as usize).min(id.len() - at);
                    if mem
                        .write_slice(&id[at..at + n], GuestAddress(b.addr))
                        .is_err()
                    {
                        break;
                    }
                    at += n;
                }
                (request::S_OK, at as u32)
            }
            Op::Discard(ranges) | Op::WriteZeroes(ranges) => {
                let zero = matches!(req.op, Op::WriteZeroes(_));
                let mut st = request::S_OK;
                for r in ranges {
                    let (off, len) = (r.sector * SECTOR, u64::from(r.sectors) * SECTOR);
                    let res = if zero {
                        d.pool.write_zeroes(&d.volume, off, len)
                    } else {
                        d.pool.discard(&d.volume, off, len)
                    };
                    if let Err(e) = res {
                        tracing::warn!(volume = %d.volume, error = %e, "discard/write-zeroes failed");
                        st = request::S_IOERR;
                        break;
                    }
                }
                (st, 0)
            }
        };
        let _ = mem.write_obj(status, GuestAddress(req.status));
        written + 1
    }

    fn read_into(
        &self,
        mem: &GuestMemoryMmap<()>,
        req: &Request,
        mut off: u64,
    ) -> Result<(), DataError> {
        let d = &self.inner.disk;
        with_chunk(|buf| {
            for b in &req.data {
                let mut done = 0usize;
                while done < b.len as usize {
                    let n = (b.len as usize - done).min(CHUNK);
                    d.pool.read(&d.volume, off, &mut buf[..n])?;
                    mem.write_slice(&buf[..n], guest_addr(b.addr, done)?)?;
                    done += n;
                    off += n as u64;
                }
            }
            Ok(())
        })
    }

    fn write_from(
        &self,
        mem: &GuestMemoryMmap<()>,
        req: &Request,
        mut off: u64,
    ) -> Result<(), DataError> {
        let d = &self.inner.disk;
        with_chunk(|buf| {
            for b in &req.data {
                let mut done = 0usize;
                while done < b.len as usize {
                    let n = (b.len as usize - done).min(CHUNK);
                    mem.read_slice(&mut buf[..n], guest_addr(b.addr, done)?)?;
                    d.pool.write(&d.volume, off, &buf[..n])?;
                    done += n;
                    off += n as u64;
                }
            }
            Ok(())
        })
    }
}

thread_local! {
    /// The bounce buffer of this queue thread: requests of one queue run one after another on
    /// its thread, so one buffer per thread serves them all without an allocation per request.
    static CHUNK_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
}

/// Runs `f` with this thread's bounce buffer (`CHUNK` bytes).
fn with_chunk<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    CHUNK_BUF.with(|b| f(&mut b.borrow_mut()))
}

/// Why a request's data could not move between the guest and the pool (the request fails
/// alone, with IOERR).
#[derive(Debug, thiserror::Error)]
enum DataError {
    #[error(transparent)]
    Pool(#[from] hostel_pool::PoolError),
    #[error("guest buffer: {0}")]
    Guest(#[from] vm_memory::GuestMemoryError),
    #[error("guest buffer at {0:#x} wraps the address space")]
    Wraps(u64),
}

/// `addr + done` of a guest buffer; the address is the guest's, so it may wrap.
fn guest_addr(addr: u64, done: usize) -> Result<GuestAddress, DataError> {
    addr.checked_add(done as u64)
        .map(GuestAddress)
        .ok_or(DataError::Wraps(addr))
}

/// Makes the queue's kick readable again, so its thread comes back to it after serving its
/// other events: the continuation of a bounded batch.
fn self_kick(vring: &Vring) {
    let state = vring.get_ref();
    if let Some(kick) = state.get_kick() {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the kick eventfd, which `state` keeps open
        // for the call; eventfds take exactly such writes.
        let _ = unsafe { libc::write(kick.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.inner.disk.queues)
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        OFFERED_FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.inner.acked.store(features, Ordering::Release);
    }

    /// CONFIG: QEMU's vhost-user-blk reads the config space from the backend; MQ: it asks for
    /// the queue count.
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let c = self.config();
        let (o, s) = (offset as usize, size as usize);
        match o.checked_add(s) {
            Some(end) if end <= c.len() => c[o..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        Ok(())
    }

    /// One thread per queue: the guest maps one queue per vCPU, and one busy queue does not
    /// hold up the others.
    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.inner.disk.queues.min(64))
            .map(|q| 1u64 << q)
            .collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.inner.exit_events.new_pair()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        match vrings.get(usize::from(device_event)) {
            Some(v) => self.serve_queue(v),
            None => Ok(()),
        }
    }
}
