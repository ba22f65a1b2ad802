//! What the daemon drives outside its own process, behind small traits so the services
//! above can be unit-tested with fakes (`service::tests`):
//!
//! - [`switch_link`]: the host's switch process and its control socket;
//! - [`networking`]: the store's networks and NICs rendered into the switch's tables, applied
//!   under one lock with a generation number, and the watchdog that re-applies them to a
//!   restarted switch;
//! - [`storage_link`] / [`storage`]: the host's storage process (pool, volumes, disk
//!   sockets), started with the recorded devices and re-serving attached volumes after a
//!   restart;
//! - [`edge`]: the external network, the tenants' edges and their firewall policies, as
//!   part of those tables.
//!
//! The engine (QEMU launch, adoption and control) is reached through `crate::launch` and
//! `crate::supervisor` for now.

pub mod edge;
pub mod engine;
pub mod ids;
pub mod networking;
pub mod storage;
pub mod storage_link;
pub mod switch_link;
pub mod vps;

use std::future::Future;

pub use networking::SyncError;

/// The switch as the services see it: something that can be made to hold the store's
/// networks and ports.
pub trait SwitchAdapter: Send + Sync {
    /// Makes the switch's tables equal to what the store holds now (starting the switch if
    /// needed). Idempotent: a port whose configuration did not change stays connected.
    fn sync(&self) -> impl Future<Output = Result<(), SyncError>> + Send;
}

/// The real switch, reached through the daemon's shared context.
impl SwitchAdapter for crate::Ctx {
    fn sync(&self) -> impl Future<Output = Result<(), SyncError>> + Send {
        networking::sync(self)
    }
}
