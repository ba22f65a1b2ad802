//! What a daemon killed in the middle of a storage change left, finished or undone at its
//! next start (before the VMs are adopted, so a VM's volumes are served when it launches).

use super::volumes::{finish_delete, pool_info, ready_devices};
use super::DaemonError;
use crate::Ctx;
use hostel_state::{DeviceState, VolumeState};
use hostel_storage_proto::PoolInfo;
use std::path::{Path, PathBuf};

/// Finishes or undoes what a daemon killed mid-change left: a device being added is kept
/// if the pool has it, a volume being created likewise; a volume being deleted is deleted.
pub async fn reconcile(ctx: &Ctx) {
    if let Err(e) = reconcile_inner(ctx).await {
        tracing::error!(error = %e, "storage reconcile failed; retried at the next start");
    }
}

async fn reconcile_inner(ctx: &Ctx) -> Result<(), DaemonError> {
    let devs = ctx.db(|s| s.list_storage_devices()).await?;
    let vols = ctx.db(|s| s.list_all_volumes()).await?;
    let pending_dev = devs.iter().any(|d| d.state == DeviceState::Adding);
    let pending_vol = vols.iter().any(|v| v.state != VolumeState::Ready);
    if !pending_dev && !pending_vol {
        return Ok(());
    }
    // Devices first: the pool may have taken a device the record calls `adding`; the
    // storage process is started on the ready ones plus those (a device of another pool,
    // or never formatted, is refused at open and so known not to be the pool's).
    for d in devs.iter().filter(|d| d.state == DeviceState::Adding) {
        let mut with: Vec<PathBuf> = ready_devices(ctx).await?;
        with.push(PathBuf::from(&d.path));
        let taken = probe_pool_has(ctx, &with, &d.path).await;
        let p = d.path.clone();
        if taken {
            tracing::info!(device = %d.path, "finishing an interrupted device add");
            ctx.db(move |s| s.set_storage_device_state(&p, DeviceState::Ready))
                .await?;
        } else {
            tracing::info!(device = %d.path, "undoing an interrupted device add");
            ctx.db(move |s| s.remove_storage_device(&p, None)).await?;
        }
    }
    let Some(pool) = pool_info(ctx).await? else {
        return Ok(());
    };
    for v in vols {
        match v.state {
            VolumeState::Ready => {}
            VolumeState::Creating => {
                let id = v.id;
                let st = pool.volumes.iter().find(|p| p.name == v.pool_name());
                if st.is_some() {
                    tracing::info!(volume = %v.id, "finishing an interrupted volume create");
                    ctx.db(move |s| s.set_volume_state(&id, VolumeState::Ready))
                        .await?;
                } else {
                    tracing::info!(volume = %v.id, "undoing an interrupted volume create");
                    ctx.db(move |s| s.finish_volume_delete(&id)).await?;
                }
            }
            VolumeState::Deleting => {
                tracing::info!(volume = %v.id, "finishing an interrupted volume delete");
                finish_delete(ctx, &v).await?;
            }
        }
    }
    Ok(())
}

/// Whether the pool opened on `devices` lists `path`: a storage process is (re)started on
/// them if the running one does not list it.
async fn probe_pool_has(ctx: &Ctx, devices: &[PathBuf], path: &str) -> bool {
    let listed = |info: &Option<PoolInfo>| {
        info.as_ref()
            .is_some_and(|p| p.devices.iter().any(|d| d.path.as_deref() == Some(path)))
    };
    if let Ok(st) = ctx.storage.status().await {
        if listed(&st.pool) {
            return true;
        }
        if st.pool.is_some() {
            return false;
        }
    }
    // No process (the daemon's start): open the pool with the device among the others.
    if ctx.storage.ensure_running(devices).await.is_ok() {
        if let Ok(st) = ctx.storage.status().await {
            return listed(&st.pool);
        }
    }
    // The device is not part of any pool: the process refused to open with it. Start it
    // again on the others.
    let others: Vec<PathBuf> = devices
        .iter()
        .filter(|d| Path::new(path) != d.as_path())
        .cloned()
        .collect();
    let _ = ctx.storage.ensure_running(&others).await;
    false
}
