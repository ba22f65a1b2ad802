//! Upgrades of databases written by older releases. Lives inside the crate
//! because building an old-schema file needs the real migration steps, which
//! are private (a copy of the old SQL in a test could silently drift).

use std::net::Ipv4Addr;

use rusqlite::Connection;

use super::{schema, vms, SqliteStore, DB_FILE_NAME};
use crate::ids::{NetworkName, TenantId, TenantName, VmName};
use crate::model::audit::{Actor, NewAuditEntry};
use crate::model::network::{NewNetwork, NewNic, Uplink};
use crate::model::tenant::{Quota, Tenant};
use crate::model::vm::{DesiredState, NewVm, VmSpecRecord};
use crate::store::Store;
use crate::time::Timestamp;

fn quota() -> Quota {
    Quota {
        max_vcpus: 64,
        max_memory_mib: 65_536,
        max_disk_gib: 1000,
        max_vms: 10,
        max_networks: 8,
        max_uplinks: 2,
        max_public_addresses: 2,
    }
}

fn audit(action: &str) -> NewAuditEntry {
    NewAuditEntry::ok(Actor::Operator, None, action, "test")
}

fn table_exists(c: &Connection, name: &str) -> bool {
    c.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
        .unwrap()
        .exists([name])
        .unwrap()
}

#[test]
fn v1_database_is_upgraded_to_v2_keeping_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    // A database exactly as the v1 release left it, with a tenant and a VM.
    let (tenant, vm) =
        {
            let mut c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                .unwrap();
            assert_eq!(schema::migrate_to(&mut c, 1).unwrap(), vec![1]);
            assert_eq!(schema::user_version(&c).unwrap(), 1);
            assert!(!table_exists(&c, "networks"));
            let tx = c.transaction().unwrap();
            // The v1 columns only; the network quotas come with version 5, at their defaults.
            let t = Tenant {
                id: TenantId::new_random(),
                name: TenantName::new("acme").unwrap(),
                created_at: Timestamp::now(),
                quota: quota(),
            };
            tx.execute(
            "INSERT INTO tenants (id, name, created_at, max_vcpus, max_memory_mib, max_disk_gib, \
             max_vms) VALUES (?1, ?2, ?3, 64, 65536, 1000, 10)",
            (t.id.to_string(), t.name.as_str(), t.created_at.unix_millis()),
        )
        .unwrap();
            let new = NewVm {
                id: None,
                name: VmName::new("web").unwrap(),
                spec: VmSpecRecord::new(2, 1024, 10, "debian-12").unwrap(),
                desired: DesiredState::Running,
            };
            let vm = vms::insert(&tx, &t.id, &new, vms::QuotaCheck::Skip).unwrap();
            tx.commit().unwrap();
            (t, vm)
        };

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), crate::SCHEMA_VERSION);
    store.integrity_check().unwrap();
    assert_eq!(store.get_tenant(&tenant.id).unwrap(), tenant);
    assert_eq!(store.get_vm(&vm.id).unwrap(), vm);
    assert!(store.list_nics_of_vm(&vm.id).unwrap().is_empty());
    {
        let c = Connection::open(&path).unwrap();
        assert!(table_exists(&c, "networks") && table_exists(&c, "vm_nics"));
        let strict: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_list WHERE name IN ('networks', 'vm_nics') AND strict = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(strict, 2, "new tables must be STRICT");
    }

    // The upgraded schema is fully usable alongside the old rows.
    let net = store
        .create_network(
            &tenant.id,
            &NewNetwork {
                name: NetworkName::new("lan").unwrap().clone(),
                subnet4: "10.0.0.0/24".parse().unwrap(),
                gateway4: None,
                subnet6: None,
                uplink: Uplink::None,
            },
            &audit("network.create"),
        )
        .unwrap();
    let new = NewVm {
        id: None,
        name: VmName::new("db").unwrap(),
        spec: VmSpecRecord::new(1, 512, 5, "debian-12").unwrap(),
        desired: DesiredState::Running,
    };
    let nic = NewNic {
        network: net.id,
        ipv4: None,
    };
    let (_, nics) = store
        .create_vm_with_nics_within_quota(&tenant.id, &new, &[nic], &audit("vm.create"))
        .unwrap();
    assert_eq!(nics[0].ipv4, Ipv4Addr::new(10, 0, 0, 2));
    drop(store);
    // Reopening a v2 database applies nothing.
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.list_all_nics().unwrap(), nics);
}
