//! Domain operations, free of HTTP: the handlers in `http/` parse a request, call a service
//! and map its [`DaemonError`] to a response. Services reach the store off the async
//! workers ([`blocking`]) and the switch through [`crate::adapters::SwitchAdapter`], so
//! their unit tests run against a real store in a temporary directory and a fake switch.
//!
//! The guest agent (`agent.rs`: exec, what the guest reports; off the VM actors' queue;
//! `agent_files.rs`: file push and pull).
//! VMs (`vms.rs`: lifecycle and resize; `vm_create.rs`: a create and its undo;
//! `standby.rs`: a create served by a standby), images (`images.rs`), networks, NIC limits,
//! tenants and tokens, and the edge: the external network and attaching networks to it
//! (`edge.rs`), public addresses (`addresses.rs`) and firewall rules (`firewall.rs`). The engine is reached through
//! [`crate::adapters::engine::EngineAdapter`], so a create that fails at launch can be
//! tested with a fake engine.

pub mod addresses;
pub mod agent;
pub mod agent_files;
pub mod agent_freeze;
pub mod backups;
pub mod edge;
mod error;
pub mod firewall;
pub mod ids;
pub mod ids_eve;
pub mod images;
pub mod networks;
pub mod nic_limits;
pub mod revert;
pub mod standby;
pub mod tenants;
pub mod tokens;
mod vm_create;
pub mod vm_snapshot;
#[cfg(test)]
mod vm_tests;
pub mod vms;
pub mod volume_reconcile;
pub mod volumes;
pub mod vps;

pub use error::{image_error, DaemonError};
use hostel_state::{Store, StoreError};
use std::sync::Arc;

/// Runs `f` with the store on tokio's blocking pool and waits for it.
///
/// The store is synchronous SQLite: a write waits for the one writer connection and fsyncs
/// the WAL (`synchronous=FULL`), and a list reads whole tables. Run on an async worker,
/// either stalls every request and VM actor scheduled on that worker (there are two on a
/// 2-core host). Each call is one thread hop, so store calls that belong together go into
/// one `f`.
pub async fn blocking<T, E>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(out) => out,
        // A bug in `f` panics its caller, as it did when store calls ran inline.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only when the runtime shuts down before the call ran.
        Err(e) => Err(StoreError::Backend(format!("store call not run: {e}")).into()),
    }
}

#[cfg(test)]
pub(crate) mod fakes;
