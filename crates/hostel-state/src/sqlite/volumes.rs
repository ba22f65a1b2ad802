//! Storage devices, volumes and the tenants' storage quota.
//!
//! A volume's quota check and its insert run in one IMMEDIATE transaction, so two creates
//! cannot both fit under the same remaining quota. A volume being deleted still counts
//! until its row is gone: the pool may still hold its space.

use rusqlite::{named_params, Connection};

use super::convert::{is_unique_violation, opt_text, text, to_i64, uint};
use super::rows::{query_first, query_rows};
use super::DbResult;
use crate::error::{EntityKind, QuotaResource, QuotaViolation, StoreError};
use crate::ids::{TenantId, VmId, VolumeId, VolumeName};
use crate::model::volume::{
    DeviceState, NewVolume, StorageDevice, StorageQuota, Volume, VolumeState,
};
use crate::time::Timestamp;

const COLUMNS: &str = "id, tenant_id, name, size_bytes, copies, vm_id, state, created_at";

fn from_row(row: &rusqlite::Row<'_>) -> DbResult<Volume> {
    Ok(Volume {
        id: text(row, "id")?,
        tenant: text(row, "tenant_id")?,
        name: text(row, "name")?,
        size_bytes: uint(row, "size_bytes")?,
        copies: uint(row, "copies")?,
        vm: opt_text(row, "vm_id")?,
        state: text(row, "state")?,
        created_at: Timestamp::from_unix_millis(row.get("created_at")?),
    })
}

fn device_from_row(row: &rusqlite::Row<'_>) -> DbResult<StorageDevice> {
    Ok(StorageDevice {
        path: row.get("path")?,
        state: text(row, "state")?,
        added_at: Timestamp::from_unix_millis(row.get("added_at")?),
    })
}

pub(super) fn list_devices(c: &Connection) -> DbResult<Vec<StorageDevice>> {
    query_rows(
        c,
        "SELECT path, state, added_at FROM storage_devices ORDER BY added_at, path",
        [],
        device_from_row,
    )
}

pub(super) fn add_device(c: &Connection, path: &str) -> DbResult<StorageDevice> {
    let dev = StorageDevice {
        path: path.to_string(),
        state: DeviceState::Adding,
        added_at: Timestamp::now(),
    };
    let r = c
        .prepare_cached("INSERT INTO storage_devices (path, state, added_at) VALUES (?1, ?2, ?3)")?
        .execute((path, dev.state.as_str(), dev.added_at.unix_millis()));
    match r {
        Ok(_) => Ok(dev),
        Err(e) => {
            let e = e.into();
            if is_unique_violation(&e) {
                Err(StoreError::conflict(EntityKind::Device, path, "already in the pool").into())
            } else {
                Err(e)
            }
        }
    }
}

pub(super) fn set_device_state(c: &Connection, path: &str, state: DeviceState) -> DbResult<()> {
    let n = c
        .prepare_cached("UPDATE storage_devices SET state = ?2 WHERE path = ?1")?
        .execute((path, state.as_str()))?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Device, path).into());
    }
    Ok(())
}

pub(super) fn remove_device(c: &Connection, path: &str) -> DbResult<()> {
    let n = c
        .prepare_cached("DELETE FROM storage_devices WHERE path = ?1")?
        .execute([path])?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Device, path).into());
    }
    Ok(())
}

pub(super) fn storage_quota(c: &Connection, tenant: &TenantId) -> DbResult<StorageQuota> {
    query_first(
        c,
        "SELECT max_volume_bytes, max_volume_allocated_bytes FROM tenants WHERE id = ?1",
        [tenant.to_string()],
        |r| {
            Ok(StorageQuota {
                max_volume_bytes: uint(r, "max_volume_bytes")?,
                max_volume_allocated_bytes: uint(r, "max_volume_allocated_bytes")?,
            })
        },
    )?
    .ok_or_else(|| StoreError::not_found(EntityKind::Tenant, tenant).into())
}

pub(super) fn set_storage_quota(
    c: &Connection,
    tenant: &TenantId,
    q: StorageQuota,
) -> DbResult<StorageQuota> {
    let n = c
        .prepare_cached(
            "UPDATE tenants SET max_volume_bytes = ?2, max_volume_allocated_bytes = ?3 WHERE id = ?1",
        )?
        .execute((
            tenant.to_string(),
            to_i64("max_volume_bytes", q.max_volume_bytes)?,
            to_i64("max_volume_allocated_bytes", q.max_volume_allocated_bytes)?,
        ))?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Tenant, tenant).into());
    }
    Ok(q)
}

fn provisioned(c: &Connection, tenant: &TenantId, except: Option<&VolumeId>) -> DbResult<u64> {
    let except = except.map(|v| v.to_string()).unwrap_or_default();
    let v: i64 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM volumes WHERE tenant_id = ?1 AND id != ?2",
        )?
        .query_row((tenant.to_string(), except), |r| r.get(0))?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn check_provisioned(
    c: &Connection,
    tenant: &TenantId,
    except: Option<&VolumeId>,
    requested: u64,
) -> DbResult<()> {
    let limit = storage_quota(c, tenant)?.max_volume_bytes;
    let in_use = provisioned(c, tenant, except)?;
    if in_use.saturating_add(requested) > limit {
        return Err(StoreError::QuotaExceeded(QuotaViolation {
            resource: QuotaResource::VolumeBytes,
            requested,
            in_use,
            limit,
        })
        .into());
    }
    Ok(())
}

pub(super) fn insert(c: &Connection, tenant: &TenantId, new: &NewVolume) -> DbResult<Volume> {
    let taken = c
        .prepare_cached("SELECT 1 FROM volumes WHERE tenant_id = ?1 AND name = ?2")?
        .exists((tenant.to_string(), new.name.as_str()))?;
    if taken {
        return Err(StoreError::conflict(
            EntityKind::Volume,
            &new.name,
            "name already in use in this tenant",
        )
        .into());
    }
    check_provisioned(c, tenant, None, new.size_bytes)?;
    let v = Volume {
        id: VolumeId::new_random(),
        tenant: *tenant,
        name: new.name.clone(),
        size_bytes: new.size_bytes,
        copies: new.copies,
        vm: None,
        state: VolumeState::Creating,
        created_at: Timestamp::now(),
    };
    let sql = format!(
        "INSERT INTO volumes ({COLUMNS}) VALUES \
         (:id, :tenant_id, :name, :size_bytes, :copies, NULL, :state, :created_at)"
    );
    c.prepare_cached(&sql)?.execute(named_params! {
        ":id": v.id.to_string(),
        ":tenant_id": tenant.to_string(),
        ":name": v.name.as_str(),
        ":size_bytes": to_i64("size_bytes", v.size_bytes)?,
        ":copies": i64::from(v.copies),
        ":state": v.state.as_str(),
        ":created_at": v.created_at.unix_millis(),
    })?;
    Ok(v)
}

pub(super) fn get(c: &Connection, id: &VolumeId) -> DbResult<Volume> {
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE id = ?1");
    query_first(c, &sql, [id.to_string()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Volume, id).into())
}

pub(super) fn get_by_name(
    c: &Connection,
    tenant: &TenantId,
    name: &VolumeName,
) -> DbResult<Volume> {
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE tenant_id = ?1 AND name = ?2");
    query_first(c, &sql, (tenant.to_string(), name.as_str()), from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Volume, name).into())
}

pub(super) fn list_for_tenant(c: &Connection, tenant: &TenantId) -> DbResult<Vec<Volume>> {
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE tenant_id = ?1 ORDER BY name");
    query_rows(c, &sql, [tenant.to_string()], from_row)
}

pub(super) fn list_all(c: &Connection) -> DbResult<Vec<Volume>> {
    let sql = format!("SELECT {COLUMNS} FROM volumes ORDER BY tenant_id, name");
    query_rows(c, &sql, [], from_row)
}

pub(super) fn list_of_vm(c: &Connection, vm: &VmId) -> DbResult<Vec<Volume>> {
    let sql = format!("SELECT {COLUMNS} FROM volumes WHERE vm_id = ?1 ORDER BY created_at, id");
    query_rows(c, &sql, [vm.to_string()], from_row)
}

pub(super) fn set_state(c: &Connection, id: &VolumeId, state: VolumeState) -> DbResult<Volume> {
    let n = c
        .prepare_cached("UPDATE volumes SET state = ?2 WHERE id = ?1")?
        .execute((id.to_string(), state.as_str()))?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Volume, id).into());
    }
    get(c, id)
}

/// Attaches (`Some`) or detaches (`None`). An attach names a VM of the volume's tenant and
/// is refused while the volume is attached to any VM, or not ready.
pub(super) fn set_vm(c: &Connection, id: &VolumeId, vm: Option<&VmId>) -> DbResult<Volume> {
    let v = get(c, id)?;
    if let Some(vm) = vm {
        if v.state != VolumeState::Ready {
            return Err(StoreError::conflict(
                EntityKind::Volume,
                &v.name,
                format!("is {}", v.state),
            )
            .into());
        }
        let owner = super::vms::get(c, vm)?;
        if owner.tenant != v.tenant {
            return Err(StoreError::not_found(EntityKind::Vm, vm).into());
        }
        if let Some(cur) = v.vm {
            let reason = if &cur == vm {
                "is attached to this VM already".to_string()
            } else {
                "is attached to another VM (detach it first)".to_string()
            };
            return Err(StoreError::conflict(EntityKind::Volume, &v.name, reason).into());
        }
    }
    c.prepare_cached("UPDATE volumes SET vm_id = ?2 WHERE id = ?1")?
        .execute((id.to_string(), vm.map(|v| v.to_string())))?;
    get(c, id)
}

pub(super) fn resize(c: &Connection, id: &VolumeId, size: u64) -> DbResult<Volume> {
    let v = get(c, id)?;
    if v.state != VolumeState::Ready {
        return Err(
            StoreError::conflict(EntityKind::Volume, &v.name, format!("is {}", v.state)).into(),
        );
    }
    check_provisioned(c, &v.tenant, Some(id), size)?;
    c.prepare_cached("UPDATE volumes SET size_bytes = ?2 WHERE id = ?1")?
        .execute((id.to_string(), to_i64("size_bytes", size)?))?;
    get(c, id)
}

/// Marks the volume `deleting` (refused while attached); the row goes with [`remove`] once
/// the pool dropped it.
pub(super) fn begin_delete(c: &Connection, id: &VolumeId) -> DbResult<Volume> {
    let v = get(c, id)?;
    if v.vm.is_some() {
        return Err(StoreError::conflict(
            EntityKind::Volume,
            &v.name,
            "is attached to a VM (detach it first)",
        )
        .into());
    }
    set_state(c, id, VolumeState::Deleting)
}

pub(super) fn remove(c: &Connection, id: &VolumeId) -> DbResult<()> {
    c.prepare_cached("DELETE FROM volumes WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{
        Actor, NewAuditEntry, NewVolume, Quota, SqliteStore, StorageQuota, Store, StoreError,
        TenantName, VolumeName, VolumeState,
    };

    #[test]
    fn quota_names_resizes_deletes_and_device_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let sys = |a: &str| NewAuditEntry::ok(Actor::System, None, a, "t");
        let quota = Quota {
            max_vcpus: 1,
            max_memory_mib: 128,
            max_disk_gib: 1,
            max_vms: 1,
            max_networks: 0,
            max_uplinks: 0,
            max_public_addresses: 0,
        };
        let t = store
            .create_tenant(
                &TenantName::new("acme").unwrap(),
                quota,
                &sys("tenant.create"),
            )
            .unwrap()
            .id;
        let q = StorageQuota {
            max_volume_bytes: 100,
            max_volume_allocated_bytes: 100,
        };
        store.set_storage_quota(&t, q, &sys("quota")).unwrap();
        let new = |n: &str, size| NewVolume {
            name: VolumeName::new(n).unwrap(),
            size_bytes: size,
            copies: 1,
        };
        let v = store.create_volume(&t, &new("a", 60), &sys("c")).unwrap();
        assert_eq!(v.state, VolumeState::Creating);
        // Quota counts every volume of the tenant, the one being created included.
        let e = store
            .create_volume(&t, &new("b", 41), &sys("c"))
            .unwrap_err();
        assert!(matches!(e, StoreError::QuotaExceeded(_)), "{e}");
        assert!(matches!(
            store
                .create_volume(&t, &new("a", 1), &sys("c"))
                .unwrap_err(),
            StoreError::Conflict { .. }
        ));
        assert!(
            matches!(
                store.resize_volume(&v.id, 101, &sys("r")).unwrap_err(),
                StoreError::Conflict { .. }
            ),
            "a volume still being created cannot be resized"
        );
        store.set_volume_state(&v.id, VolumeState::Ready).unwrap();
        assert!(matches!(
            store.resize_volume(&v.id, 101, &sys("r")).unwrap_err(),
            StoreError::QuotaExceeded(_)
        ));
        assert_eq!(
            store
                .resize_volume(&v.id, 100, &sys("r"))
                .unwrap()
                .size_bytes,
            100
        );
        assert_eq!(store.list_volumes(&t).unwrap().len(), 1);
        assert_eq!(
            store.begin_volume_delete(&v.id, &sys("d")).unwrap().state,
            VolumeState::Deleting
        );
        store.finish_volume_delete(&v.id).unwrap();
        assert!(store.list_all_volumes().unwrap().is_empty());
        // Devices: one record per path.
        store.add_storage_device("/dev/x", &sys("dev")).unwrap();
        assert!(matches!(
            store.add_storage_device("/dev/x", &sys("dev")).unwrap_err(),
            StoreError::Conflict { .. }
        ));
        store.remove_storage_device("/dev/x", None).unwrap();
        assert!(store.list_storage_devices().unwrap().is_empty());
    }
}
