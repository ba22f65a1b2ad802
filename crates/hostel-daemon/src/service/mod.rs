//! Domain operations, free of HTTP: the handlers in `http/` parse a request, call a service
//! and map its [`DaemonError`] to a response. Services reach the store off the async
//! workers ([`blocking`]) and the switch through [`crate::adapters::SwitchAdapter`], so
//! their unit tests run against a real store in a temporary directory and a fake switch.
//!
//! Networks, NIC limits, tenants and tokens are here, and the edge: the external network
//! and attaching networks to it (`edge.rs`), public addresses (`addresses.rs`) and firewall
//! rules (`firewall.rs`); VM creation (image resolution, disks,
//! seed, standby claim) and images still live in their handlers (`http/`), to move the same
//! way.

pub mod addresses;
pub mod edge;
pub mod firewall;
pub mod networks;
pub mod nic_limits;
pub mod tenants;
pub mod tokens;

use crate::adapters::SyncError;
use hostel_state::{Store, StoreError};
use std::sync::Arc;

/// Why a domain operation failed: the one error type services return.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store refused the change (not found, conflict, quota, invalid) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change is in the store, but the switch did not take it (the watchdog retries).
    #[error(transparent)]
    Switch(#[from] SyncError),
    /// A VM lifecycle call (start, stop, restart, delete, admission) failed.
    #[error(transparent)]
    Vm(#[from] crate::supervisor::VmOpError),
    /// The operator's own token is the daemon's to manage, not the API's to revoke.
    #[error(
        "the operator's token is the daemon's own (operator.token): delete that file and \
         restart the daemon to replace it"
    )]
    OperatorToken,
    /// A request field the store's own checks do not cover (a firewall rule, the external
    /// network's set-up), named as the caller wrote it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl DaemonError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DaemonError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

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
pub(crate) mod fakes {
    use crate::adapters::switch_link::LinkError;
    use crate::adapters::{SwitchAdapter, SyncError};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A switch that records how often it was synced and can be told to refuse.
    #[derive(Default)]
    pub struct FakeSwitch {
        pub syncs: AtomicU32,
        pub refuse: AtomicBool,
    }

    impl FakeSwitch {
        pub fn syncs(&self) -> u32 {
            self.syncs.load(Ordering::SeqCst)
        }
    }

    impl SwitchAdapter for FakeSwitch {
        async fn sync(&self) -> Result<(), SyncError> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.refuse.load(Ordering::SeqCst) {
                return Err(LinkError::Refused("fake switch told to refuse".into()).into());
            }
            Ok(())
        }
    }
}
