//! The store's pool as the storage process sees it: started with the recorded devices, and
//! serving every attached volume's vhost-user socket. A storage process that died or was
//! restarted comes back with every socket (QEMU's `reconnect=1` finds them; the VMs keep
//! running), under one lock so two syncs do not race a start.

use super::storage_link::{StorageInstance, StorageLinkError, DISK_QUEUES};
use crate::Ctx;
use hostel_state::{DeviceState, StoreError, Volume, VolumeState};
use hostel_storage_proto::Request;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StorageSyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Link(#[from] StorageLinkError),
}

/// Which storage process was given the store's sockets last.
#[derive(Default)]
pub struct Served {
    applied: tokio::sync::Mutex<Option<StorageInstance>>,
}

/// The devices the store records as part of the pool.
pub async fn pool_devices(ctx: &Ctx) -> Result<Vec<PathBuf>, StoreError> {
    let devs = ctx.db(|s| s.list_storage_devices()).await?;
    Ok(devs
        .into_iter()
        .filter(|d| d.state == DeviceState::Ready)
        .map(|d| PathBuf::from(d.path))
        .collect())
}

/// Starts the storage process if needed (on the pool's devices) and serves every attached
/// volume. Nothing to do, and no process, on a host without a pool.
pub async fn sync(ctx: &Ctx) -> Result<(), StorageSyncError> {
    let mut applied = ctx.served.applied.lock().await;
    let devices = pool_devices(ctx).await?;
    if devices.is_empty() && !ctx.storage.alive().await {
        *applied = None;
        return Ok(());
    }
    ctx.storage.ensure_running(&devices).await?;
    let volumes = ctx.db(|s| s.list_all_volumes()).await?;
    let mut result = Ok(());
    for v in volumes
        .iter()
        .filter(|v| v.vm.is_some() && v.state == VolumeState::Ready)
    {
        if let Err(e) = serve(ctx, v).await {
            tracing::error!(volume = %v.id, error = %e, "cannot serve an attached volume");
            result = Err(e);
        }
    }
    *applied = match result {
        Ok(()) => ctx.storage.instance(),
        Err(_) => None,
    };
    Ok(result?)
}

/// Serves one volume on its socket (idempotent).
pub async fn serve(ctx: &Ctx, v: &Volume) -> Result<(), StorageLinkError> {
    let name = v.pool_name();
    ctx.storage
        .request(&Request::Serve {
            socket: ctx.storage.disk_socket(&name),
            volume: name,
            queues: DISK_QUEUES,
        })
        .await
        .map(|_| ())
}

/// Keeps the storage process alive and serving: one `stat` and one status request a tick.
pub async fn watchdog(ctx: std::sync::Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_ok = true;
    loop {
        tick.tick().await;
        let applied = *ctx.served.applied.lock().await;
        let current = ctx.storage.instance();
        if applied.is_some() && applied == current && ctx.storage.alive().await {
            last_ok = true;
            continue;
        }
        let has_pool = match pool_devices(&ctx).await {
            Ok(d) => !d.is_empty(),
            Err(_) => true,
        };
        if !has_pool {
            continue;
        }
        if last_ok {
            tracing::warn!(
                "storage process missing or restarted; serving the attached volumes again"
            );
        }
        last_ok = match sync(&ctx).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the storage process");
                false
            }
        };
    }
}
