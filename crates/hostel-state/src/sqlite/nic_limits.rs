//! Per-NIC rate limits: JSON columns on `vm_nics` (the operator's ceiling, the tenant's
//! own limits) and on `tenants` (the default ceiling). Every write checks the whole rule
//! inside the caller's transaction, so a ceiling lowered concurrently cannot let a tenant
//! limit above it slip in.

use rusqlite::{Connection, OptionalExtension, Row};

use super::rows::{query_first, query_rows};
use super::DbResult;
use crate::error::{EntityKind, StoreError};
use crate::ids::{TenantId, VmId};
use crate::model::nic_limits::{NicLimits, NicLimitsRecord};

fn nic_name(vm: &VmId, idx: u32) -> String {
    format!("{vm}#{idx}")
}

fn decode(row: &Row<'_>, col: &str) -> DbResult<Option<NicLimits>> {
    let Some(s) = row.get::<_, Option<String>>(col)? else {
        return Ok(None);
    };
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|e| StoreError::Backend(format!("corrupt value in column {col:?}: {e}")).into())
}

fn encode(l: &NicLimits) -> DbResult<String> {
    serde_json::to_string(l)
        .map_err(|e| StoreError::Backend(format!("encoding NIC limits: {e}")).into())
}

fn record_from_row(row: &Row<'_>) -> DbResult<NicLimitsRecord> {
    Ok(NicLimitsRecord {
        nic_ceiling: decode(row, "ceiling")?,
        tenant_ceiling: decode(row, "nic_ceiling")?,
        limits: decode(row, "limits")?.unwrap_or_default(),
    })
}

const RECORD_SQL: &str = "SELECT n.ceiling, n.limits, t.nic_ceiling \
     FROM vm_nics n JOIN vms v ON v.id = n.vm_id JOIN tenants t ON t.id = v.tenant_id";

pub(super) fn get(c: &Connection, vm: &VmId, idx: u32) -> DbResult<NicLimitsRecord> {
    let sql = format!("{RECORD_SQL} WHERE n.vm_id = ?1 AND n.idx = ?2");
    query_first(c, &sql, (vm.to_string(), idx), record_from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Nic, nic_name(vm, idx)).into())
}

/// Every NIC's effective limits, for the switch's tables.
pub(super) fn all_effective(c: &Connection) -> DbResult<Vec<(VmId, u32, NicLimits)>> {
    let sql = "SELECT n.vm_id, n.idx, n.ceiling, n.limits, t.nic_ceiling FROM vm_nics n \
         JOIN vms v ON v.id = n.vm_id JOIN tenants t ON t.id = v.tenant_id";
    query_rows(c, sql, [], |row| {
        Ok((
            super::convert::text(row, "vm_id")?,
            super::convert::uint(row, "idx")?,
            record_from_row(row)?.effective(),
        ))
    })
}

/// The tenant's own limits: valid, and within the ceiling in force.
pub(super) fn set_limits(
    c: &Connection,
    vm: &VmId,
    idx: u32,
    limits: &NicLimits,
) -> DbResult<NicLimitsRecord> {
    limits.validate()?;
    let mut rec = get(c, vm, idx)?;
    limits.check_within(&rec.ceiling().0)?;
    let value = (!limits.is_unlimited())
        .then(|| encode(limits))
        .transpose()?;
    c.prepare_cached("UPDATE vm_nics SET limits = ?3 WHERE vm_id = ?1 AND idx = ?2")?
        .execute((vm.to_string(), idx, value))?;
    rec.limits = *limits;
    Ok(rec)
}

/// The operator's ceiling on one NIC (`None`: back to the tenant's default). The tenant's
/// limits are kept: the effective limit is the lower of the two anyway, and raising the
/// ceiling again gives them back.
pub(super) fn set_ceiling(
    c: &Connection,
    vm: &VmId,
    idx: u32,
    ceiling: Option<&NicLimits>,
) -> DbResult<NicLimitsRecord> {
    if let Some(l) = ceiling {
        l.validate()?;
    }
    let mut rec = get(c, vm, idx)?;
    let value = ceiling.map(encode).transpose()?;
    c.prepare_cached("UPDATE vm_nics SET ceiling = ?3 WHERE vm_id = ?1 AND idx = ?2")?
        .execute((vm.to_string(), idx, value))?;
    rec.nic_ceiling = ceiling.copied();
    Ok(rec)
}

pub(super) fn tenant_ceiling(c: &Connection, tenant: &TenantId) -> DbResult<Option<NicLimits>> {
    let s: Option<Option<String>> = c
        .prepare_cached("SELECT nic_ceiling FROM tenants WHERE id = ?1")?
        .query_row([tenant.to_string()], |r| r.get(0))
        .optional()?;
    let s = s.ok_or_else(|| StoreError::not_found(EntityKind::Tenant, tenant))?;
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            StoreError::Backend(format!("corrupt value in column \"nic_ceiling\": {e}")).into()
        })
    })
    .transpose()
}

/// The default ceiling of the tenant's NICs that have none of their own.
pub(super) fn set_tenant_ceiling(
    c: &Connection,
    tenant: &TenantId,
    ceiling: Option<&NicLimits>,
) -> DbResult<Option<NicLimits>> {
    if let Some(l) = ceiling {
        l.validate()?;
    }
    let value = ceiling.map(encode).transpose()?;
    let n = c
        .prepare_cached("UPDATE tenants SET nic_ceiling = ?2 WHERE id = ?1")?
        .execute((tenant.to_string(), value))?;
    if n == 0 {
        return Err(StoreError::not_found(EntityKind::Tenant, tenant).into());
    }
    Ok(ceiling.copied())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{networks, schema, vms, SqliteStore, DB_FILE_NAME};
    use crate::error::StoreError;
    use crate::ids::{NetworkId, TenantId, VmName};
    use crate::model::audit::{Actor, NewAuditEntry};
    use crate::model::network::NewNic;
    use crate::model::nic_limits::{NicLimits, RateLimit};
    use crate::model::vm::{DesiredState, NewVm, VmSpecRecord};
    use crate::store::Store;

    /// A database as the release before limits (schema 5) left it, with one NIC: after the
    /// upgrade the NIC is unlimited and takes limits; a corrupt value is an error naming
    /// its column, not a panic or "unlimited".
    #[test]
    fn a_v5_database_upgrades_with_unlimited_nics_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        let vm = {
            let mut c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                .unwrap();
            schema::migrate_to(&mut c, 5).unwrap();
            let tx = c.transaction().unwrap();
            // The tenant and network rows as schema 5 has them (today's inserts write
            // columns a later schema added).
            let t = TenantId::new_random();
            tx.execute(
                "INSERT INTO tenants (id, name, created_at, max_vcpus, max_memory_mib, \
                 max_disk_gib, max_vms, max_networks, max_uplinks) \
                 VALUES (?1, 'acme', 0, 8, 8192, 100, 4, 4, 1)",
                [t.to_string()],
            )
            .unwrap();
            let net = NetworkId::new_random();
            tx.execute(
                "INSERT INTO networks (id, tenant_id, name, subnet4, gateway4, created_at) \
                 VALUES (?1, ?2, 'lan', '10.0.0.0/24', '10.0.0.1', 0)",
                [net.to_string(), t.to_string()],
            )
            .unwrap();
            let new_vm = NewVm {
                id: None,
                name: VmName::new("web").unwrap(),
                spec: VmSpecRecord::new(1, 128, 1, "busybox").unwrap(),
                desired: DesiredState::Stopped,
            };
            let vm = vms::insert(&tx, &t, &new_vm, vms::QuotaCheck::Skip).unwrap();
            let nic = NewNic {
                network: net,
                ipv4: None,
            };
            networks::attach(&tx, &t, &vm.id, &[nic]).unwrap();
            tx.commit().unwrap();
            vm
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(store
            .get_nic_limits(&vm.id, 0)
            .unwrap()
            .effective()
            .is_unlimited());
        let l = NicLimits {
            unknown: RateLimit {
                packets_per_sec: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let entry = NewAuditEntry::ok(Actor::Operator, None, "vm.nic_limits", "web");
        store.set_nic_limits(&vm.id, 0, &l, &entry).unwrap();
        assert_eq!(
            store.list_effective_nic_limits().unwrap(),
            vec![(vm.id, 0, l)]
        );

        let c = Connection::open(&path).unwrap();
        c.execute("UPDATE vm_nics SET ceiling = '{\"total\":7}'", [])
            .unwrap();
        match store.get_nic_limits(&vm.id, 0) {
            Err(StoreError::Backend(m)) => assert!(m.contains("ceiling"), "{m}"),
            other => panic!("corrupt ceiling read as {other:?}"),
        }
        assert!(store.list_effective_nic_limits().is_err());
    }
}
