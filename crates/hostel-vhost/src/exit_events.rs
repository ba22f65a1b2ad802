//! The worker threads' exit eventfds of a vhost-user session.
//!
//! `vhost-user-backend` asks the backend for an exit event per worker thread and hands the
//! consumer end to the worker's epoll loop, which never closes it: without bookkeeping, every
//! reconnecting guest would leak one descriptor per queue thread until the process hits its
//! descriptor limit (and every tenant's next connection fails).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// The exit eventfds handed out during one session, closed by [`ExitEvents::close_all`].
#[derive(Debug, Default)]
pub struct ExitEvents {
    consumers: Mutex<Vec<RawFd>>,
}

impl ExitEvents {
    /// A new exit event pair for a worker thread (`VhostUserBackend::exit_event`); the
    /// consumer's number is remembered so that the session's end can close it.
    pub fn new_pair(&self) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    /// Closes every consumer handed out so far. Call only once the session's worker threads
    /// are gone (the library has told them to exit and joined them): they are the only other
    /// users of these descriptors.
    pub fn close_all(&self) {
        let fds = std::mem::take(
            &mut *self
                .consumers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for fd in fds {
            // SAFETY: `fd` came from an `EventConsumer` that the library converted into a raw
            // descriptor and never closes; its users (the worker threads and their epoll sets)
            // are gone, as this function's contract requires, so this is the last owner.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}
