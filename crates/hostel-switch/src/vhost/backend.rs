//! [`VhostUserBackend`] for one virtio-net device (queue 0 RX, queue 1 TX).
//!
//! A fresh backend is created for every frontend connection, so negotiated features and
//! scratch buffers never leak from one guest session into the next.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hostel_vhost::ExitEvents;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::datapath::port::{Mem, PortRuntime, RxTarget, Vring};
use crate::datapath::tx::{process_tx, TxScratch};
use crate::datapath::Core;

pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
/// Ring size cap; QEMU's default is 256, 1024 helps throughput-tuned guests.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Default for how far a port's queue events may outrun the work they find before the
/// port's queue thread gives up. The relay refuses semaphore-mode kick eventfds where the
/// kernel reports the mode; this is the backstop where it does not: such a kick stays
/// readable for 2^64 reads, and the thread would spin on it forever.
///
/// An honest driver kicks a queue only after offering it buffers, and kicks coalesce in the
/// eventfd, so its events never outnumber the chains it offers on that queue (but for one or
/// two that race a re-check). So each event adds one to the port's idle debt and each chain
/// its own queue offered since the last event pays one back (never below zero, so work
/// cannot be banked): a guest that sends a frame now and then cannot keep a spinning kick
/// alive, and other ports' deliveries to this port (which are not its queues' work) pay
/// nothing.
pub const MAX_IDLE_KICKS: u32 = 1 << 20;

struct Inner {
    core: Arc<Core>,
    port: Arc<PortRuntime>,
    mem: Mem,
    acked: AtomicU64,
    published: AtomicBool,
    scratch: Mutex<TxScratch>,
    /// Exit events handed to the library, closed when the session ends.
    exit_events: ExitEvents,
    /// Queue events not yet paid for by work (see [`MAX_IDLE_KICKS`]); only the queue
    /// thread touches it.
    idle_kicks: AtomicU32,
    /// The debt at which the queue thread gives up.
    max_idle_kicks: u32,
    /// The RX avail index the last RX queue event saw: buffers offered since pay for the
    /// next one. Only the queue thread touches it.
    rx_avail_seen: AtomicU32,
}

#[derive(Clone)]
pub struct NicBackend {
    inner: Arc<Inner>,
}

impl NicBackend {
    pub fn new(core: Arc<Core>, port: Arc<PortRuntime>, mem: Mem) -> Self {
        Self::with_idle_limit(core, port, mem, MAX_IDLE_KICKS)
    }

    /// [`NicBackend::new`] with the idle-kick limit set (see [`MAX_IDLE_KICKS`]).
    pub fn with_idle_limit(
        core: Arc<Core>,
        port: Arc<PortRuntime>,
        mem: Mem,
        max_idle_kicks: u32,
    ) -> Self {
        NicBackend {
            inner: Arc::new(Inner {
                core,
                port,
                mem,
                acked: AtomicU64::new(0),
                published: AtomicBool::new(false),
                scratch: Mutex::new(TxScratch::default()),
                exit_events: ExitEvents::default(),
                idle_kicks: AtomicU32::new(0),
                max_idle_kicks: max_idle_kicks.max(1),
                rx_avail_seen: AtomicU32::new(0),
            }),
        }
    }

    /// The exit events this backend handed out.
    pub fn exit_events(&self) -> &ExitEvents {
        &self.inner.exit_events
    }

    /// Makes this connection's RX ring reachable by other ports. Done from the worker thread
    /// on the first queue event because the library only hands vrings to `handle_event`;
    /// guests kick RX as soon as they post receive buffers, so this happens at link-up.
    fn publish(&self, vrings: &[Vring]) {
        if self.inner.published.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(rx) = vrings.get(usize::from(RX_QUEUE)) {
            self.inner.port.set_rx(Some(RxTarget {
                vring: rx.clone(),
                mem: self.inner.mem.clone(),
                features: self.inner.acked.load(Ordering::Acquire),
            }));
            tracing::info!(port = %self.inner.port.id, "guest NIC connected");
        }
    }
}

impl VhostUserBackend for NicBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    /// PROTOCOL_FEATURES is required by QEMU's vhost-user-net (it fails to start the device
    /// without SET_VRING_ENABLE); see [`hostel_vhost::proxy`] for the ordering quirk.
    fn features(&self) -> u64 {
        crate::datapath::vnet::OFFERED_FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.inner.acked.store(features, Ordering::Release);
        // A driver reload renegotiates: republish so senders see the new offloads.
        self.inner.published.store(false, Ordering::Release);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The library applies it to the queues; the TX loop is correct either way.
    }

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        // `mem` is the same GuestMemoryAtomic this backend was built with; nothing to do.
        Ok(())
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
        self.publish(vrings);
        // Chains this queue offered since its last event: what pays for this one.
        let mut work = 0u64;
        if device_event == TX_QUEUE {
            if let Some(tx) = vrings.get(usize::from(TX_QUEUE)) {
                let mut scratch = self
                    .inner
                    .scratch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                work = process_tx(
                    &self.inner.core,
                    &self.inner.port,
                    &self.inner.mem,
                    tx,
                    &mut scratch,
                );
            }
        } else if device_event == RX_QUEUE {
            // Buffers were posted; delivery is push-based from senders, so nothing to drain.
            if let Some(rx) = vrings.get(usize::from(RX_QUEUE)) {
                let _ = rx.disable_notification();
                let avail = rx
                    .get_ref()
                    .get_queue()
                    .avail_idx(&*self.inner.mem.memory(), Ordering::Acquire);
                if let Ok(avail) = avail {
                    let avail = u32::from(avail.0);
                    let seen = self.inner.rx_avail_seen.swap(avail, Ordering::Relaxed);
                    work = u64::from((avail.wrapping_sub(seen)) & 0xffff);
                }
            }
        }
        let max = self.inner.max_idle_kicks;
        let debt =
            (u64::from(self.inner.idle_kicks.load(Ordering::Relaxed)) + 1).saturating_sub(work);
        let debt = u32::try_from(debt).unwrap_or(u32::MAX).min(max);
        self.inner.idle_kicks.store(debt, Ordering::Relaxed);
        if debt >= max {
            tracing::warn!(port = %self.inner.port.id, queue = device_event,
                "queue events outran the work they found by {max} (a semaphore-mode kick \
                 eventfd?); this port's queues stop until the guest reconnects");
            return Err(io::Error::other("queue events outran the work they found"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::pipeline::Pipeline;
    use vhost_user_backend::VringT;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

    const LIMIT: u32 = 64;

    fn backend() -> (NicBackend, Arc<PortRuntime>, [Vring; 2], Mem) {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mem = GuestMemoryAtomic::new(gm);
        let port = PortRuntime::new("p");
        let b = NicBackend::with_idle_limit(
            Core::new(Pipeline::new()),
            port.clone(),
            mem.clone(),
            LIMIT,
        );
        let vrings = [
            Vring::new(mem.clone(), 16).unwrap(),
            Vring::new(mem.clone(), 16).unwrap(),
        ];
        (b, port, vrings, mem)
    }

    /// Defect: a kick that stays readable (semaphore mode) made the queue thread spin
    /// forever. Where the relay cannot tell the mode, the thread stops once events outrun
    /// work by the limit instead. Before the backstop every call was Ok.
    #[test]
    fn a_queue_kicked_without_work_forever_stops() {
        let (b, _, vrings, _) = backend();
        for _ in 1..LIMIT {
            b.handle_event(TX_QUEUE, EventSet::IN, &vrings, 0).unwrap();
        }
        let r = b.handle_event(RX_QUEUE, EventSet::IN, &vrings, 0);
        assert!(r.is_err(), "the queue thread never gave up");
        assert_eq!(b.inner.idle_kicks.load(Ordering::Relaxed), LIMIT);
    }

    /// Defect: any descriptor work on the port (`desc_visits`, which this port's frames and
    /// other ports' deliveries raise) reset the backstop, so one frame now and then kept a
    /// spinning kick alive. Now each TX chain pays for one event only. Fails before the fix
    /// (every call Ok).
    #[test]
    fn an_occasional_frame_does_not_keep_a_spinning_kick_alive() {
        use vm_memory::GuestAddressSpace;
        let (b, port, vrings, mem) = backend();
        let tx = &vrings[usize::from(TX_QUEUE)];
        tx.set_queue_info(0x1000, 0x2000, 0x3000).unwrap();
        tx.set_queue_ready(true);
        let m = mem.memory();
        // One readable 72-byte descriptor (header + a short frame) at index 0.
        m.write_obj(0x4000u64, GuestAddress(0x1000)).unwrap();
        m.write_obj(72u32, GuestAddress(0x1008)).unwrap();
        m.write_obj(0u16, GuestAddress(0x2004)).unwrap();
        let mut stopped = false;
        let mut idx = 0u16;
        for i in 0..8 * LIMIT {
            if i % 8 == 0 {
                // The ring holds 16 entries, all naming descriptor 0.
                m.write_obj(0u16, GuestAddress(0x2004 + 2 * u64::from(idx % 16)))
                    .unwrap();
                idx = idx.wrapping_add(1);
                m.write_obj(idx, GuestAddress(0x2002)).unwrap();
            }
            if b.handle_event(TX_QUEUE, EventSet::IN, &vrings, 0).is_err() {
                stopped = true;
                break;
            }
        }
        assert!(
            port.stats.desc_visits.load(Ordering::Relaxed) > 0,
            "no frame was read"
        );
        assert!(stopped, "a frame every 8 events kept a spinning kick alive");
    }

    /// Buffers the guest offers on RX pay for RX events one each, and cannot be banked: one
    /// offer per many events (a guest keeping a spinning kick alive) still stops the thread,
    /// while an honest guest (a kick per batch of buffers) never does.
    #[test]
    fn rx_offers_pay_one_event_each() {
        let (b, _, vrings, mem) = backend();
        let rx = &vrings[usize::from(RX_QUEUE)];
        rx.set_queue_info(0x1000, 0x2000, 0x3000).unwrap();
        rx.set_queue_ready(true);
        let offer = |idx: u16| {
            use vm_memory::GuestAddressSpace;
            mem.memory().write_obj(idx, GuestAddress(0x2002)).unwrap();
        };
        let mut idx = 0u16;
        for _ in 0..10 * LIMIT {
            idx = idx.wrapping_add(4);
            offer(idx);
            b.handle_event(RX_QUEUE, EventSet::IN, &vrings, 0).unwrap();
            // A kick that raced a re-check finds nothing; honest drivers cause a few.
            b.handle_event(RX_QUEUE, EventSet::IN, &vrings, 0).unwrap();
        }
        let mut stopped = false;
        for i in 0..4 * LIMIT {
            if i % 8 == 0 {
                idx = idx.wrapping_add(1);
                offer(idx);
            }
            if b.handle_event(RX_QUEUE, EventSet::IN, &vrings, 0).is_err() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "an offer now and then kept a spinning kick alive");
    }
}
