//! Security appliances: a row per network that has one, naming a NIC of the same network
//! and tenant (checked in the writing transaction). Deleting the VM sets the NIC columns to
//! NULL (the network then fails closed); deleting the network removes the row.

use rusqlite::{Connection, Row};

use super::rows::query_rows;
use super::DbResult;
use crate::error::{EntityKind, StoreError};
use crate::ids::{NetworkId, TenantId, VmId};
use crate::model::appliance::SecurityAppliance;

fn from_row(row: &Row<'_>) -> DbResult<SecurityAppliance> {
    let vm: Option<String> = row.get("vm_id")?;
    let idx: Option<i64> = row.get("nic_idx")?;
    let nic = match (vm, idx) {
        (Some(v), Some(i)) => Some((
            v.parse::<VmId>()
                .map_err(|_| StoreError::Backend(format!("corrupt vm_id {v:?}")))?,
            u32::try_from(i).map_err(|_| StoreError::Backend(format!("corrupt nic_idx {i}")))?,
        )),
        _ => None,
    };
    Ok(SecurityAppliance {
        network: super::convert::text(row, "network_id")?,
        tenant: super::convert::text(row, "tenant_id")?,
        nic,
    })
}

pub(super) fn list(c: &Connection) -> DbResult<Vec<SecurityAppliance>> {
    let sql = "SELECT a.network_id, n.tenant_id, a.vm_id, a.nic_idx \
               FROM security_appliances a JOIN networks n ON n.id = a.network_id \
               ORDER BY a.network_id";
    query_rows(c, sql, [], from_row)
}

/// Designates NIC `nic` of a VM of `tenant` as `network`'s appliance (`None`: none).
pub(super) fn set(
    c: &Connection,
    tenant: &TenantId,
    network: &NetworkId,
    nic: Option<&(VmId, u32)>,
) -> DbResult<()> {
    let net = super::networks::get(c, network)?;
    if net.tenant != *tenant {
        return Err(StoreError::not_found(EntityKind::Network, network).into());
    }
    let Some((vm, idx)) = nic else {
        c.prepare_cached("DELETE FROM security_appliances WHERE network_id = ?1")?
            .execute([network.to_string()])?;
        return Ok(());
    };
    let v = super::vms::get(c, vm)?;
    if v.tenant != *tenant {
        return Err(StoreError::not_found(EntityKind::Vm, vm).into());
    }
    let on_it: Option<String> = super::rows::query_first(
        c,
        "SELECT network_id FROM vm_nics WHERE vm_id = ?1 AND idx = ?2",
        (vm.to_string(), i64::from(*idx)),
        |r| Ok(r.get(0)?),
    )?;
    match on_it {
        None => return Err(StoreError::invalid("nic", format!("the VM has no NIC {idx}")).into()),
        Some(n) if n != network.to_string() => {
            return Err(StoreError::invalid(
                "nic",
                format!("NIC {idx} of the VM is not on this network"),
            )
            .into())
        }
        Some(_) => {}
    }
    c.prepare_cached(
        "INSERT INTO security_appliances (network_id, vm_id, nic_idx) VALUES (?1, ?2, ?3) \
         ON CONFLICT (network_id) DO UPDATE SET vm_id = excluded.vm_id, \
         nic_idx = excluded.nic_idx",
    )?
    .execute((network.to_string(), vm.to_string(), i64::from(*idx)))?;
    Ok(())
}
