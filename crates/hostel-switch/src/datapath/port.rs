//! Live state of a port, kept across table rebuilds and guest reconnects.
//!
//! Every port kind is a [`PortRuntime`]: a VM's vhost-user NIC, a host TAP device (a
//! container's NIC) and a network's uplink TAP alike. They share counters, storm-control
//! state and the one delivery path ([`crate::datapath::exec::with_rx`], which opens the
//! port's [`PortIo`] whatever it is); only how frames come in differs (a vhost-user TX
//! queue, or a TAP reader thread: [`crate::uplink`], or the external interface's ring reader:
//! [`crate::external`]). A tunnel port would be one more [`PortIo`] variant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vhost_user_backend::VringMutex;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::afpacket::PacketDev;
use crate::datapath::fairness::RxContention;
use crate::datapath::ratelimit::Policer;
use crate::stats::PortStats;
use crate::uplink::TapDev;

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
    io: PortIo,
}

/// How frames reach the port's receiver.
pub enum PortIo {
    /// The RX queue of the connected guest, once there is one.
    Vhost(Mutex<Option<RxTarget>>),
    /// A TAP device: frames are written to it (and read from it by the port's reader).
    Tap(Arc<TapDev>),
    /// A host network interface the switch drives (the external network's port): frames
    /// are sent on its AF_PACKET socket, and read from its ring by [`crate::external`].
    Packet(Arc<PacketDev>),
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl PortRuntime {
    /// A vhost-user port, not connected yet.
    pub fn new(id: &str) -> Arc<Self> {
        Self::with_io(id, PortIo::Vhost(Mutex::new(None)))
    }

    /// A port whose frames go out through `dev`.
    pub fn tap(id: &str, dev: Arc<TapDev>) -> Arc<Self> {
        Self::with_io(id, PortIo::Tap(dev))
    }

    /// The external network's port on interface `dev`.
    pub fn packet(id: &str, dev: Arc<PacketDev>) -> Arc<Self> {
        Self::with_io(id, PortIo::Packet(dev))
    }

    /// The interface behind the port, if it is the external one.
    pub fn packet_dev(&self) -> Option<&Arc<PacketDev>> {
        match &self.io {
            PortIo::Packet(d) => Some(d),
            _ => None,
        }
    }

    fn with_io(id: &str, io: PortIo) -> Arc<Self> {
        Arc::new(PortRuntime {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            stats: PortStats::default(),
            policer: Policer::default(),
            rx_contention: RxContention::default(),
            io,
        })
    }

    pub fn io(&self) -> &PortIo {
        &self.io
    }

    /// The TAP device behind the port, if it is one.
    pub fn tap_dev(&self) -> Option<&Arc<TapDev>> {
        match &self.io {
            PortIo::Tap(d) => Some(d),
            PortIo::Vhost(_) | PortIo::Packet(_) => None,
        }
    }

    /// The RX queue of the connected guest, if any. Taken once per destination per batch.
    pub fn rx(&self) -> Option<RxTarget> {
        match &self.io {
            PortIo::Vhost(rx) => rx.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            PortIo::Tap(_) | PortIo::Packet(_) => None,
        }
    }

    /// Sets the connected guest's RX queue (a no-op on a port that is no vhost-user NIC).
    pub fn set_rx(&self, t: Option<RxTarget>) {
        if let PortIo::Vhost(rx) = &self.io {
            *rx.lock().unwrap_or_else(PoisonError::into_inner) = t;
        }
    }

    /// Whether frames can be delivered: a guest is connected, or the TAP is open.
    pub fn is_connected(&self) -> bool {
        match &self.io {
            PortIo::Vhost(rx) => rx.lock().unwrap_or_else(PoisonError::into_inner).is_some(),
            PortIo::Tap(_) | PortIo::Packet(_) => true,
        }
    }
}
