//! [`VhostUserBackend`] for one virtio-net device (queue 0 RX, queue 1 TX).
//!
//! A fresh backend is created for every frontend connection, so negotiated features and
//! scratch buffers never leak from one guest session into the next.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::datapath::port::{Mem, PortRuntime, RxTarget, Vring};
use crate::datapath::tx::{process_tx, TxScratch};
use crate::datapath::Core;

pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
/// Ring size cap; QEMU's default is 256, 1024 helps throughput-tuned guests.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Queue events in a row that find no work before the port's queue thread gives up. The
/// relay refuses semaphore-mode kick eventfds where the kernel reports the mode; this is the
/// backstop where it does not: such a kick stays readable for 2^64 reads, and the thread
/// would spin on it forever. An honest driver kicks only after offering buffers.
pub const MAX_IDLE_KICKS: u32 = 1 << 20;

struct Inner {
    core: Arc<Core>,
    port: Arc<PortRuntime>,
    mem: Mem,
    acked: AtomicU64,
    published: AtomicBool,
    scratch: Mutex<TxScratch>,
    /// Exit-event consumers handed to the library, which turns them into raw descriptors for
    /// its epoll set and never closes them (vhost-user-backend 0.24, `VringEpollHandler::new`):
    /// one leaked eventfd per connection, until [`NicBackend::close_exit_events`].
    exit_consumers: Mutex<Vec<RawFd>>,
    /// Queue events in a row that found no work (see [`MAX_IDLE_KICKS`]); only the queue
    /// thread touches it.
    idle_kicks: AtomicU32,
}

#[derive(Clone)]
pub struct NicBackend {
    inner: Arc<Inner>,
}

impl NicBackend {
    pub fn new(core: Arc<Core>, port: Arc<PortRuntime>, mem: Mem) -> Self {
        NicBackend {
            inner: Arc::new(Inner {
                core,
                port,
                mem,
                acked: AtomicU64::new(0),
                published: AtomicBool::new(false),
                scratch: Mutex::new(TxScratch::default()),
                exit_consumers: Mutex::new(Vec::new()),
                idle_kicks: AtomicU32::new(0),
            }),
        }
    }

    /// Closes the exit-event descriptors the library leaked. Call only once the daemon this
    /// backend served is dropped: that joins its worker threads and closes their epoll sets,
    /// the only users of these descriptors.
    pub fn close_exit_events(&self) {
        let fds = std::mem::take(
            &mut *self
                .inner
                .exit_consumers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for fd in fds {
            // SAFETY: `fd` came from `exit_event`'s consumer, which the library converted
            // into a raw descriptor and never closes; its only users (the worker's epoll set
            // and thread) are gone, so this is the last owner and nothing reuses the number
            // before the close.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
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
    /// without SET_VRING_ENABLE); see [`crate::vhost::proxy`] for the ordering quirk.
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
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        // Remember the number the library will leak, so the connection's end can close it.
        self.inner
            .exit_consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
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
        // Descriptor work on this port's rings (its TX chains, deliveries to its RX ring):
        // an event after which it has not moved found nothing to do.
        let work = &self.inner.port.stats.desc_visits;
        let before = work.load(Ordering::Relaxed);
        if device_event == TX_QUEUE {
            if let Some(tx) = vrings.get(usize::from(TX_QUEUE)) {
                let mut scratch = self
                    .inner
                    .scratch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                process_tx(
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
            }
        }
        if work.load(Ordering::Relaxed) != before {
            self.inner.idle_kicks.store(0, Ordering::Relaxed);
        } else if self.inner.idle_kicks.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_IDLE_KICKS {
            tracing::warn!(port = %self.inner.port.id, queue = device_event,
                "queue kicked {MAX_IDLE_KICKS} times in a row without work (a semaphore-mode \
                 kick eventfd?); this port's queues stop until the guest reconnects");
            return Err(io::Error::other(
                "kicked without work too many times in a row",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::pipeline::Pipeline;
    use vhost_user_backend::VringT;
    use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

    /// Defect: a kick that stays readable (semaphore mode) made the queue thread spin
    /// forever. Where the relay cannot tell the mode, the thread stops after
    /// MAX_IDLE_KICKS events without work instead. Before the backstop every call was Ok.
    #[test]
    fn a_queue_kicked_without_work_forever_stops() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mem = GuestMemoryAtomic::new(gm);
        let port = PortRuntime::new("p");
        let b = NicBackend::new(Core::new(Pipeline::new()), port, mem.clone());
        let vrings = [
            Vring::new(mem.clone(), 16).unwrap(),
            Vring::new(mem, 16).unwrap(),
        ];
        for _ in 1..MAX_IDLE_KICKS {
            b.handle_event(TX_QUEUE, EventSet::IN, &vrings, 0).unwrap();
        }
        let r = b.handle_event(RX_QUEUE, EventSet::IN, &vrings, 0);
        assert!(r.is_err(), "the queue thread never gave up");
        assert_eq!(b.inner.idle_kicks.load(Ordering::Relaxed), MAX_IDLE_KICKS);
    }
}
