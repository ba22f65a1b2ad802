//! Tenant rows.

use rusqlite::{named_params, Connection, Row};

use super::convert::{is_unique_violation, text, to_i64, uint};
use super::rows::{query_first, query_rows};
use super::DbResult;
use crate::error::{EntityKind, StoreError};
use crate::ids::{TenantId, TenantName};
use crate::model::tenant::{Quota, Tenant};
use crate::time::Timestamp;

const COLUMNS: &str =
    "id, name, created_at, max_vcpus, max_memory_mib, max_disk_gib, max_vms, max_networks, max_uplinks, max_public_addresses";

fn from_row(row: &Row<'_>) -> DbResult<Tenant> {
    Ok(Tenant {
        id: text(row, "id")?,
        name: text(row, "name")?,
        created_at: Timestamp::from_unix_millis(row.get("created_at")?),
        quota: Quota {
            max_vcpus: uint(row, "max_vcpus")?,
            max_memory_mib: uint(row, "max_memory_mib")?,
            max_disk_gib: uint(row, "max_disk_gib")?,
            max_vms: uint(row, "max_vms")?,
            max_networks: uint(row, "max_networks")?,
            max_uplinks: uint(row, "max_uplinks")?,
            max_public_addresses: uint(row, "max_public_addresses")?,
        },
    })
}

pub(super) fn insert(c: &Connection, name: &TenantName, quota: Quota) -> DbResult<Tenant> {
    quota.validate()?;
    let conflict = || StoreError::conflict(EntityKind::Tenant, name, "name already in use");
    let taken = c
        .prepare_cached("SELECT 1 FROM tenants WHERE name = ?1")?
        .exists([name.as_str()])?;
    if taken {
        return Err(conflict().into());
    }
    let tenant = Tenant {
        id: TenantId::new_random(),
        name: name.clone(),
        created_at: Timestamp::now(),
        quota,
    };
    let sql = format!(
        "INSERT INTO tenants ({COLUMNS}) VALUES \
         (:id, :name, :created_at, :max_vcpus, :max_memory_mib, :max_disk_gib, :max_vms, \
         :max_networks, :max_uplinks, :max_public_addresses)"
    );
    c.prepare_cached(&sql)?
        .execute(named_params! {
            ":id": tenant.id.to_string(),
            ":name": name.as_str(),
            ":created_at": tenant.created_at.unix_millis(),
            ":max_vcpus": quota.max_vcpus,
            ":max_memory_mib": to_i64("quota.max_memory_mib", quota.max_memory_mib)?,
            ":max_disk_gib": to_i64("quota.max_disk_gib", quota.max_disk_gib)?,
            ":max_vms": quota.max_vms,
            ":max_networks": quota.max_networks,
            ":max_uplinks": quota.max_uplinks,
            ":max_public_addresses": quota.max_public_addresses,
        })
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e) {
                conflict().into()
            } else {
                e
            }
        })?;
    Ok(tenant)
}

pub(super) fn get(c: &Connection, id: &TenantId) -> DbResult<Tenant> {
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = ?1");
    query_first(c, &sql, [id.to_string()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Tenant, id).into())
}

pub(super) fn get_by_name(c: &Connection, name: &TenantName) -> DbResult<Tenant> {
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE name = ?1");
    query_first(c, &sql, [name.as_str()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Tenant, name).into())
}

pub(super) fn list(c: &Connection) -> DbResult<Vec<Tenant>> {
    let sql = format!("SELECT {COLUMNS} FROM tenants ORDER BY name");
    query_rows(c, &sql, [], from_row)
}

pub(super) fn set_quota(c: &Connection, id: &TenantId, quota: Quota) -> DbResult<Tenant> {
    quota.validate()?;
    let n = c
        .prepare_cached(
            "UPDATE tenants SET max_vcpus = :max_vcpus, max_memory_mib = :max_memory_mib, \
             max_disk_gib = :max_disk_gib, max_vms = :max_vms, max_networks = :max_networks, \
             max_uplinks = :max_uplinks, \
             max_public_addresses = :max_public_addresses WHERE id = :id",
        )?
        .execute(named_params! {
            ":id": id.to_string(),
            ":max_vcpus": quota.max_vcpus,
            ":max_memory_mib": to_i64("quota.max_memory_mib", quota.max_memory_mib)?,
            ":max_disk_gib": to_i64("quota.max_disk_gib", quota.max_disk_gib)?,
            ":max_vms": quota.max_vms,
            ":max_networks": quota.max_networks,
            ":max_uplinks": quota.max_uplinks,
            ":max_public_addresses": quota.max_public_addresses,
        })?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Tenant, id).into());
    }
    get(c, id)
}

pub(super) fn delete(c: &Connection, id: &TenantId) -> DbResult<()> {
    let tenant = get(c, id)?;
    let vm_count: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM vms WHERE tenant_id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))?;
    if vm_count > 0 {
        return Err(StoreError::conflict(
            EntityKind::Tenant,
            &tenant.name,
            format!("still owns {vm_count} VM(s); delete them first"),
        )
        .into());
    }
    let net_count = super::networks::count_for_tenant(c, id)?;
    if net_count > 0 {
        return Err(StoreError::conflict(
            EntityKind::Tenant,
            &tenant.name,
            format!("still owns {net_count} network(s); delete them first"),
        )
        .into());
    }
    // Its volumes hold data in the pool: never dropped with the tenant.
    let vol_count: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM volumes WHERE tenant_id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))?;
    if vol_count > 0 {
        return Err(StoreError::conflict(
            EntityKind::Tenant,
            &tenant.name,
            format!("still owns {vol_count} volume(s); delete them first"),
        )
        .into());
    }
    c.prepare_cached("DELETE FROM tenants WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(())
}

/// NotFound unless the tenant exists; reads only its id, so it works on every schema
/// version.
pub(super) fn ensure_exists(c: &Connection, id: &TenantId) -> DbResult<()> {
    let found = c
        .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .exists([id.to_string()])?;
    if !found {
        return Err(StoreError::not_found(EntityKind::Tenant, id).into());
    }
    Ok(())
}

/// The tenant's quota, or NotFound; used by VM writes that must see the
/// quota inside their own transaction.
pub(super) fn quota(c: &Connection, id: &TenantId) -> DbResult<Quota> {
    get(c, id).map(|t| t.quota)
}
