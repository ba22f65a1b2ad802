//! The host's storage pool and the tenants' volumes. Each change is recorded in the store
//! first (a device as `adding`, a volume as `creating` or `deleting`, with its audit entry
//! and quota check), then carried out by the storage process, then marked done; a daemon
//! killed between the two is finished or undone by [`super::volume_reconcile::reconcile`] at
//! its next start. VM snapshots: `vm_snapshot.rs`.

use super::DaemonError;
use crate::adapters::storage_link::StorageLinkError;
use crate::Ctx;
use hostel_state::{
    DesiredState, DeviceState, NewAuditEntry, NewVolume, ObservedState, QuotaResource,
    QuotaViolation, StorageDevice, StoreError, TenantId, Vm, Volume, VolumeName, VolumeState,
};
use hostel_storage_proto::{ErrorKind, PoolInfo, Request, VolumeStatus};
use std::path::PathBuf;

/// Largest volume a tenant may ask for (the pool's own limit is higher).
pub const MAX_VOLUME_BYTES: u64 = 16 << 40;

/// A storage refusal as the API reports it: `field` names the request field at fault.
pub fn storage_error(e: StorageLinkError, field: &'static str) -> DaemonError {
    match e {
        StorageLinkError::Refused { kind, message } => match kind {
            ErrorKind::NotFound => DaemonError::NotFound {
                kind: "volume or snapshot",
                name: message,
            },
            ErrorKind::Exists => DaemonError::conflict(Some(field), message),
            ErrorKind::Invalid => DaemonError::invalid(field, message),
            ErrorKind::NoPool => DaemonError::conflict(None, message),
            ErrorKind::NoSpace | ErrorKind::Other => {
                DaemonError::Storage(StorageLinkError::Refused { kind, message })
            }
        },
        other => DaemonError::Storage(other),
    }
}

/// A volume as shown: the store's record and what the pool says of it.
#[derive(Debug, Clone)]
pub struct VolumeView {
    pub volume: Volume,
    pub vm_name: Option<String>,
    pub pool: Option<VolumeStatus>,
}

/// The devices and what the pool says of each.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub device: StorageDevice,
    pub pool: Option<hostel_storage_proto::DeviceStatus>,
}

pub(super) async fn ready_devices(ctx: &Ctx) -> Result<Vec<PathBuf>, DaemonError> {
    Ok(crate::adapters::storage::pool_devices(ctx).await?)
}

pub(super) async fn running_storage(ctx: &Ctx) -> Result<(), DaemonError> {
    let devices = ready_devices(ctx).await?;
    ctx.storage
        .ensure_running(&devices)
        .await
        .map_err(DaemonError::Storage)
}

pub(super) async fn pool_info(ctx: &Ctx) -> Result<Option<PoolInfo>, DaemonError> {
    if ready_devices(ctx).await?.is_empty() {
        return Ok(None);
    }
    running_storage(ctx).await?;
    Ok(ctx
        .storage
        .status()
        .await
        .map_err(DaemonError::Storage)?
        .pool)
}

/// The pool's status when a storage process answers; never starts one (for `/metrics`).
pub async fn pool_info_if_running(ctx: &Ctx) -> Result<Option<PoolInfo>, DaemonError> {
    Ok(ctx
        .storage
        .status()
        .await
        .map_err(DaemonError::Storage)?
        .pool)
}

/// Adds a device to the pool (the first creates it). The path must exist; it is recorded
/// as given after resolving symlinks, so the same device cannot be added twice by two names.
pub async fn add_device(
    ctx: &Ctx,
    path: &str,
    audit: NewAuditEntry,
) -> Result<StorageDevice, DaemonError> {
    if path.is_empty() || path.len() > 4096 || !path.starts_with('/') {
        return Err(DaemonError::invalid(
            "path",
            "an absolute path of a block device or file",
        ));
    }
    let real = std::fs::canonicalize(path)
        .map_err(|e| DaemonError::invalid("path", format!("{path}: {e}")))?;
    let meta = std::fs::metadata(&real)
        .map_err(|e| DaemonError::invalid("path", format!("{path}: {e}")))?;
    {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(DaemonError::invalid(
                "path",
                format!("{path} is not a block device or file"),
            ));
        }
    }
    let real_s = real.display().to_string();
    running_storage(ctx).await?;
    let p = real_s.clone();
    ctx.db(move |s| s.add_storage_device(&p, &audit))
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => DaemonError::conflict(Some("path"), e.to_string()),
            other => other.into(),
        })?;
    let added = ctx
        .storage
        .request(&Request::DeviceAdd { path: real.clone() })
        .await;
    match added {
        Ok(_) => {
            let p = real_s.clone();
            ctx.db(move |s| s.set_storage_device_state(&p, DeviceState::Ready))
                .await?;
            let devs = ctx.db(|s| s.list_storage_devices()).await?;
            devs.into_iter()
                .find(|d| d.path == real_s)
                .ok_or_else(|| DaemonError::NotFound {
                    kind: "device",
                    name: real_s,
                })
        }
        Err(e) => {
            let p = real_s.clone();
            ctx.db(move |s| s.remove_storage_device(&p, None)).await?;
            Err(storage_error(e, "path"))
        }
    }
}

pub async fn list_devices(ctx: &Ctx) -> Result<Vec<DeviceView>, DaemonError> {
    let devs = ctx.db(|s| s.list_storage_devices()).await?;
    let pool = pool_info(ctx).await.ok().flatten();
    Ok(devs
        .into_iter()
        .map(|d| {
            let st = pool.as_ref().and_then(|p| {
                p.devices
                    .iter()
                    .find(|x| x.path.as_deref() == Some(d.path.as_str()))
                    .cloned()
            });
            DeviceView {
                device: d,
                pool: st,
            }
        })
        .collect())
}

/// Device removal: the pool cannot give a device's extents back yet, so a device it holds
/// stays; a record the pool never took (an interrupted add) is dropped.
pub async fn remove_device(ctx: &Ctx, path: &str, audit: NewAuditEntry) -> Result<(), DaemonError> {
    let devs = ctx.db(|s| s.list_storage_devices()).await?;
    let real = std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string());
    let Some(d) = devs.into_iter().find(|d| d.path == real || d.path == path) else {
        return Err(DaemonError::NotFound {
            kind: "device",
            name: path.to_string(),
        });
    };
    if d.state == DeviceState::Ready {
        return Err(DaemonError::conflict(
            Some("path"),
            format!(
                "{} holds pool data; the pool cannot move its copies off a device yet \
                 (a failed or missing device is re-mirrored onto the others by itself)",
                d.path
            ),
        ));
    }
    let p = d.path.clone();
    ctx.db(move |s| s.remove_storage_device(&p, Some(&audit)))
        .await?;
    Ok(())
}

fn check_size(size: u64) -> Result<(), DaemonError> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(DaemonError::invalid(
            "size_bytes",
            "a non-zero multiple of 512",
        ));
    }
    if size > MAX_VOLUME_BYTES {
        return Err(DaemonError::invalid(
            "size_bytes",
            format!("at most {MAX_VOLUME_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Refuses growth when the tenant's volumes already hold its allocated-bytes quota.
pub(super) async fn check_allocated(
    ctx: &Ctx,
    tenant: TenantId,
    pool: &PoolInfo,
) -> Result<(), DaemonError> {
    let (quota, vols) = ctx
        .db(move |s| Ok::<_, StoreError>((s.get_storage_quota(&tenant)?, s.list_volumes(&tenant)?)))
        .await?;
    let in_use: u64 = vols
        .iter()
        .filter_map(|v| pool.volumes.iter().find(|p| p.name == v.pool_name()))
        .map(|p| p.allocated)
        .sum();
    if in_use >= quota.max_volume_allocated_bytes {
        return Err(StoreError::QuotaExceeded(QuotaViolation {
            resource: QuotaResource::VolumeAllocatedBytes,
            requested: 0,
            in_use,
            limit: quota.max_volume_allocated_bytes,
        })
        .into());
    }
    Ok(())
}

pub async fn create(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    size_bytes: u64,
    copies: Option<u8>,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    check_size(size_bytes)?;
    if let Some(c) = copies {
        if !(1..=2).contains(&c) {
            return Err(DaemonError::invalid("copies", "1 or 2"));
        }
    }
    let Some(pool) = pool_info(ctx).await? else {
        return Err(DaemonError::conflict(
            None,
            "this host has no storage pool (the operator adds devices with `hostel storage device add`)",
        ));
    };
    let healthy = pool
        .devices
        .iter()
        .filter(|d| !d.failed && d.path.is_some())
        .count();
    let copies = copies.unwrap_or(if healthy >= 2 { 2 } else { 1 });
    if usize::from(copies) > healthy {
        return Err(DaemonError::invalid(
            "copies",
            format!("{copies} copies need {copies} healthy devices; the pool has {healthy}"),
        ));
    }
    check_allocated(ctx, tenant, &pool).await?;
    let new = NewVolume {
        name,
        size_bytes,
        copies,
    };
    let vol = ctx
        .db(move |s| s.create_volume(&tenant, &new, &audit))
        .await?;
    crate::failpoint::hit("volume.create.recorded").await;
    let made = ctx
        .storage
        .request(&Request::VolumeCreate {
            name: vol.pool_name(),
            size: size_bytes,
            copies,
        })
        .await;
    match made {
        Ok(r) => {
            let id = vol.id;
            let vol = ctx
                .db(move |s| s.set_volume_state(&id, VolumeState::Ready))
                .await?;
            Ok(VolumeView {
                volume: vol,
                vm_name: None,
                pool: r.volume,
            })
        }
        Err(e) => {
            let id = vol.id;
            ctx.db(move |s| s.finish_volume_delete(&id)).await?;
            Err(storage_error(e, "size_bytes"))
        }
    }
}

/// The tenant's volume by name (another tenant's is not found).
pub async fn find(ctx: &Ctx, tenant: TenantId, name: VolumeName) -> Result<Volume, DaemonError> {
    Ok(ctx
        .db(move |s| s.get_volume_by_name(&tenant, &name))
        .await?)
}

pub(super) async fn view(ctx: &Ctx, vols: Vec<Volume>) -> Result<Vec<VolumeView>, DaemonError> {
    let pool = pool_info(ctx).await.ok().flatten();
    let mut out = Vec::with_capacity(vols.len());
    for v in vols {
        let vm_name = match v.vm {
            Some(vm) => ctx
                .db(move |s| s.get_vm(&vm))
                .await
                .ok()
                .map(|vm| vm.name.to_string()),
            None => None,
        };
        let st = pool
            .as_ref()
            .and_then(|p| p.volumes.iter().find(|x| x.name == v.pool_name()).cloned());
        out.push(VolumeView {
            volume: v,
            vm_name,
            pool: st,
        });
    }
    Ok(out)
}

pub async fn list(ctx: &Ctx, tenant: TenantId) -> Result<Vec<VolumeView>, DaemonError> {
    let vols = ctx.db(move |s| s.list_volumes(&tenant)).await?;
    view(ctx, vols).await
}

pub async fn show(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
) -> Result<VolumeView, DaemonError> {
    let v = find(ctx, tenant, name).await?;
    let mut views = view(ctx, vec![v]).await?;
    views
        .pop()
        .ok_or_else(|| DaemonError::conflict(None, "volume vanished"))
}

/// A VM whose QEMU may be running: its disks cannot change under it (microvm guests have
/// no hotplug, and a detach would yank a disk in use).
fn is_up(vm: &Vm) -> bool {
    vm.desired == DesiredState::Running
        || matches!(
            vm.observed.state,
            ObservedState::Creating
                | ObservedState::Starting
                | ObservedState::Running
                | ObservedState::Stopping
        )
}

pub(super) fn must_be_stopped(vm: &Vm, what: &str) -> Result<(), DaemonError> {
    if is_up(vm) {
        return Err(DaemonError::conflict(
            Some("vm"),
            format!("VM {} is running: stop it to {what}", vm.name),
        ));
    }
    Ok(())
}

pub async fn attach(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    vm_name: hostel_state::VmName,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    let v = find(ctx, tenant, name).await?;
    let vm = ctx.db(move |s| s.get_vm_by_name(&tenant, &vm_name)).await?;
    must_be_stopped(&vm, "attach a volume")?;
    let (id, vm_id) = (v.id, vm.id);
    let v = ctx
        .db(move |s| s.set_volume_vm(&id, Some(&vm_id), &audit))
        .await?;
    // Served now, so the VM's next start finds the socket.
    running_storage(ctx).await?;
    crate::adapters::storage::serve(ctx, &v)
        .await
        .map_err(|e| storage_error(e, "name"))?;
    let mut views = view(ctx, vec![v]).await?;
    views
        .pop()
        .ok_or_else(|| DaemonError::conflict(None, "volume vanished"))
}

pub async fn detach(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    let v = find(ctx, tenant, name).await?;
    let Some(vm_id) = v.vm else {
        return Err(DaemonError::conflict(
            Some("name"),
            format!("volume {} is not attached", v.name),
        ));
    };
    let vm = ctx.db(move |s| s.get_vm(&vm_id)).await?;
    must_be_stopped(&vm, "detach a volume")?;
    let id = v.id;
    let v = ctx.db(move |s| s.set_volume_vm(&id, None, &audit)).await?;
    // The socket goes too; an error leaves it served, which harms nobody.
    let _ = ctx
        .storage
        .request(&Request::Unserve {
            volume: v.pool_name(),
        })
        .await;
    let mut views = view(ctx, vec![v]).await?;
    views
        .pop()
        .ok_or_else(|| DaemonError::conflict(None, "volume vanished"))
}

pub async fn resize(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    size_bytes: u64,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    check_size(size_bytes)?;
    let v = find(ctx, tenant, name).await?;
    if size_bytes < v.size_bytes {
        return Err(DaemonError::invalid(
            "size_bytes",
            format!(
                "{size_bytes} is smaller than the volume's {} (volumes only grow)",
                v.size_bytes
            ),
        ));
    }
    if let Some(vm_id) = v.vm {
        let vm = ctx.db(move |s| s.get_vm(&vm_id)).await?;
        must_be_stopped(&vm, "resize its volume")?;
    }
    running_storage(ctx).await?;
    let id = v.id;
    // Grown in the store first (quota checked): a cut before the pool grows leaves the
    // record larger, and the next resize (or the reconciler) repeats the pool's part.
    let v = ctx
        .db(move |s| s.resize_volume(&id, size_bytes, &audit))
        .await?;
    ctx.storage
        .request(&Request::VolumeResize {
            name: v.pool_name(),
            size: size_bytes,
        })
        .await
        .map_err(|e| storage_error(e, "size_bytes"))?;
    let mut views = view(ctx, vec![v]).await?;
    views
        .pop()
        .ok_or_else(|| DaemonError::conflict(None, "volume vanished"))
}

pub async fn delete(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    audit: NewAuditEntry,
) -> Result<(), DaemonError> {
    let v = find(ctx, tenant, name).await?;
    let id = v.id;
    let v = ctx.db(move |s| s.begin_volume_delete(&id, &audit)).await?;
    crate::failpoint::hit("volume.delete.recorded").await;
    finish_delete(ctx, &v).await
}

pub(super) async fn finish_delete(ctx: &Ctx, v: &Volume) -> Result<(), DaemonError> {
    running_storage(ctx).await?;
    ctx.storage
        .request(&Request::VolumeDelete {
            name: v.pool_name(),
        })
        .await
        .map_err(|e| storage_error(e, "name"))?;
    let id = v.id;
    ctx.db(move |s| s.finish_volume_delete(&id)).await?;
    Ok(())
}

/// Snapshot operations on a tenant's volume. A restore changes the disk under its guest,
/// so it needs the VM stopped.
pub enum SnapshotOp {
    Create,
    Restore,
    Delete,
}

pub async fn snapshot(
    ctx: &Ctx,
    tenant: TenantId,
    name: VolumeName,
    snapshot: VolumeName,
    op: SnapshotOp,
    audit: NewAuditEntry,
) -> Result<VolumeView, DaemonError> {
    let v = find(ctx, tenant, name).await?;
    if v.state != VolumeState::Ready {
        return Err(DaemonError::conflict(
            Some("name"),
            format!("volume {} is {}", v.name, v.state),
        ));
    }
    if let (SnapshotOp::Restore, Some(vm_id)) = (&op, v.vm) {
        let vm = ctx.db(move |s| s.get_vm(&vm_id)).await?;
        must_be_stopped(&vm, "restore its volume")?;
    }
    running_storage(ctx).await?;
    if let SnapshotOp::Create = op {
        if let Some(pool) = pool_info(ctx).await? {
            check_allocated(ctx, tenant, &pool).await?;
        }
    }
    let (volume, snapshot) = (v.pool_name(), snapshot.as_str().to_string());
    let req = match op {
        SnapshotOp::Create => Request::SnapshotCreate { volume, snapshot },
        SnapshotOp::Restore => Request::SnapshotRestore { volume, snapshot },
        SnapshotOp::Delete => Request::SnapshotDelete { volume, snapshot },
    };
    let r = ctx
        .storage
        .request(&req)
        .await
        .map_err(|e| storage_error(e, "snapshot"))?;
    ctx.db(move |s| s.append_audit(&audit)).await?;
    Ok(VolumeView {
        volume: v,
        vm_name: None,
        pool: r.volume,
    })
}
