//! VPS rows: instances of kind `vps` in the `vms` table (migration 11), each with its slot of
//! host UID/GID ranges. Inserted by the VM insert (same name, quota and NIC rules) and then
//! marked, in the same transaction.

use super::rows::{query_first, query_rows};
use super::vms::{self, from_row, COLUMNS};
use super::DbResult;
use crate::error::{EntityKind, StoreError};
use crate::ids::{TenantId, VmName};
use crate::model::vm::{NewVm, VpsRecord};
use rusqlite::{Connection, Row};

/// How many VPSs one host can hold: the id ranges `hostel-vps` can hand out below 2^32.
pub const MAX_ID_SLOTS: u32 = 65_000;

fn from_vps_row(row: &Row<'_>) -> DbResult<VpsRecord> {
    let vm = from_row(row)?;
    let slot: i64 = row.get(COUNT)?;
    let slot = u32::try_from(slot)
        .map_err(|_| StoreError::Backend(format!("VPS {} has id slot {slot}", vm.id)))?;
    Ok(VpsRecord { vm, slot })
}

/// The position of `id_slot` after [`COLUMNS`].
const COUNT: usize = 19;

fn select() -> String {
    format!("SELECT {COLUMNS}, id_slot FROM vms WHERE kind = 'vps'")
}

/// The lowest slot no VPS holds.
fn free_slot(c: &Connection) -> DbResult<u32> {
    let taken: Vec<i64> = query_rows(
        c,
        "SELECT id_slot FROM vms WHERE id_slot IS NOT NULL ORDER BY id_slot",
        [],
        |r| Ok(r.get::<_, i64>(0)?),
    )?;
    let mut want: i64 = 0;
    for t in taken {
        if t > want {
            break;
        }
        want = t + 1;
    }
    match u32::try_from(want) {
        Ok(s) if s < MAX_ID_SLOTS => Ok(s),
        _ => Err(
            StoreError::conflict(EntityKind::Vm, "id_slot", "no free id range on this host").into(),
        ),
    }
}

pub(super) fn insert(c: &Connection, tenant: &TenantId, new: &NewVm) -> DbResult<VpsRecord> {
    let vm = vms::insert(c, tenant, new, vms::QuotaCheck::Enforce)?;
    let slot = free_slot(c)?;
    c.prepare_cached("UPDATE vms SET kind = 'vps', id_slot = ?1 WHERE id = ?2")?
        .execute((i64::from(slot), vm.id.to_string()))?;
    Ok(VpsRecord { vm, slot })
}

pub(super) fn get_by_name(c: &Connection, tenant: &TenantId, name: &VmName) -> DbResult<VpsRecord> {
    let sql = format!("{} AND tenant_id = ?1 AND name = ?2", select());
    query_first(c, &sql, (tenant.to_string(), name.as_str()), from_vps_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Vm, name).into())
}

pub(super) fn list_for_tenant(c: &Connection, tenant: &TenantId) -> DbResult<Vec<VpsRecord>> {
    let sql = format!("{} AND tenant_id = ?1 ORDER BY name", select());
    query_rows(c, &sql, [tenant.to_string()], from_vps_row)
}

pub(super) fn list_all(c: &Connection) -> DbResult<Vec<VpsRecord>> {
    let sql = format!("{} ORDER BY tenant_id, name", select());
    query_rows(c, &sql, [], from_vps_row)
}
