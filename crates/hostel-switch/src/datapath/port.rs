//! Live state of a port, kept across table rebuilds and guest reconnects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vhost_user_backend::VringMutex;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::datapath::fairness::RxContention;
use crate::datapath::ratelimit::Policer;
use crate::stats::PortStats;

/// Guest memory as the vhost-user library hands it over (no dirty-page bitmap: the switch
/// does not support live migration logging).
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
pub type Vring = VringMutex<Mem>;

/// A connected guest's RX queue, reachable from other ports' worker threads.
#[derive(Clone)]
pub struct RxTarget {
    pub vring: Vring,
    pub mem: Mem,
    pub features: u64,
}

pub struct PortRuntime {
    /// Unique for the life of the process, so a stale connection of a removed-then-re-added
    /// port can never be mistaken for the new one.
    pub key: u64,
    pub id: String,
    pub stats: PortStats,
    /// Storm-control buckets, kept across reconnects so a reconnect is not a fresh burst.
    pub policer: Policer,
    /// Who sends to this port's RX ring, for the fair share (see [`crate::datapath::fairness`]).
    pub rx_contention: RxContention,
    rx: Mutex<Option<RxTarget>>,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl PortRuntime {
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(PortRuntime {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            stats: PortStats::default(),
            policer: Policer::default(),
            rx_contention: RxContention::default(),
            rx: Mutex::new(None),
        })
    }

    /// The RX queue of the connected guest, if any. Taken once per destination per batch.
    pub fn rx(&self) -> Option<RxTarget> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_rx(&self, t: Option<RxTarget>) {
        *self.rx.lock().unwrap_or_else(PoisonError::into_inner) = t;
    }

    pub fn is_connected(&self) -> bool {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}
