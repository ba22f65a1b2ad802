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

#[cfg(test)]
mod tests {
    use crate::{
        Actor, DesiredState, NetworkName, NewAuditEntry, NewNetwork, NewNic, NewVm, Quota,
        SqliteStore, Store, StoreError, TenantName, VmName, VmSpecRecord,
    };

    #[test]
    fn an_appliance_is_a_nic_of_the_tenant_on_the_network_and_outlives_its_vm_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let sys = |a: &str| NewAuditEntry::ok(Actor::System, None, a, "t");
        let quota = Quota {
            max_vcpus: 8,
            max_memory_mib: 4096,
            max_disk_gib: 10,
            max_vms: 4,
            max_networks: 4,
            max_uplinks: 0,
            max_public_addresses: 0,
        };
        let t = store
            .create_tenant(&TenantName::new("acme").unwrap(), quota, &sys("tenant"))
            .unwrap()
            .id;
        let other = store
            .create_tenant(&TenantName::new("other").unwrap(), quota, &sys("tenant"))
            .unwrap()
            .id;
        let net = |tenant, name: &str, cidr: &str| {
            let n = NewNetwork::ipv4(NetworkName::new(name).unwrap(), cidr.parse().unwrap());
            store
                .create_network(&tenant, &n, &sys("network"))
                .unwrap()
                .id
        };
        let (lan, dmz, theirs) = (
            net(t, "lan", "10.0.0.0/24"),
            net(t, "dmz", "10.0.1.0/24"),
            net(other, "lan", "10.0.0.0/24"),
        );
        let vm = |tenant, name: &str, network| {
            let new = NewVm {
                id: None,
                name: VmName::new(name).unwrap(),
                spec: VmSpecRecord::new(1, 128, 1, "busybox").unwrap(),
                desired: DesiredState::Stopped,
            };
            let nic = NewNic {
                network,
                ipv4: None,
            };
            store
                .create_vm_with_nics_within_quota(&tenant, &new, &[nic], &sys("vm"))
                .unwrap()
                .0
                .id
        };
        let fw = vm(t, "fw", lan);
        let theirs_vm = vm(other, "fw", theirs);

        store
            .set_appliance(&t, &lan, Some(&(fw, 0)), &sys("appliance"))
            .unwrap();
        let all = store.list_appliances().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].network, all[0].tenant, all[0].nic),
            (lan, t, Some((fw, 0)))
        );

        // Refused, nothing changed: a NIC on another network, a NIC the VM lacks, another
        // tenant's VM or network.
        let refused = [
            store.set_appliance(&t, &dmz, Some(&(fw, 0)), &sys("appliance")),
            store.set_appliance(&t, &lan, Some(&(fw, 1)), &sys("appliance")),
            store.set_appliance(&t, &lan, Some(&(theirs_vm, 0)), &sys("appliance")),
            store.set_appliance(&t, &theirs, None, &sys("appliance")),
        ];
        assert!(matches!(
            refused[0],
            Err(StoreError::Invalid { field: "nic", .. })
        ));
        assert!(matches!(
            refused[1],
            Err(StoreError::Invalid { field: "nic", .. })
        ));
        assert!(matches!(refused[2], Err(StoreError::NotFound { .. })));
        assert!(matches!(refused[3], Err(StoreError::NotFound { .. })));
        assert_eq!(store.list_appliances().unwrap(), all);

        // The VM deleted: the designation stays, without a NIC (the network fails closed).
        store.delete_vm(&fw, None, &sys("vm.delete")).unwrap();
        let after = store.list_appliances().unwrap();
        assert_eq!((after.len(), after[0].nic), (1, None));
        // Removed.
        store
            .set_appliance(&t, &lan, None, &sys("appliance"))
            .unwrap();
        assert!(store.list_appliances().unwrap().is_empty());
    }
}
