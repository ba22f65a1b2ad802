//! Shared fixtures: every test gets a real SQLite file in its own temp dir.
#![allow(dead_code)] // each test binary uses a different subset

use hostel_state::{
    Actor, DesiredState, NewAuditEntry, NewVm, Quota, SqliteStore, Store, Tenant, TenantName,
    VmName, VmSpecRecord,
};
use tempfile::TempDir;

pub fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

pub fn big_quota() -> Quota {
    Quota {
        max_vcpus: 1_000_000,
        max_memory_mib: 1 << 40,
        max_disk_gib: 1 << 30,
        max_vms: 1_000_000,
        max_networks: 1_000_000,
        max_uplinks: 1_000_000,
        max_public_addresses: 1_000_000,
    }
}

pub fn tenant(store: &dyn Store, name: &str, quota: Quota) -> Tenant {
    store
        .create_tenant(&TenantName::new(name).unwrap(), quota, &audit())
        .unwrap()
}

pub fn spec(vcpus: u32, memory_mib: u64, disk_gib: u64) -> VmSpecRecord {
    VmSpecRecord::new(vcpus, memory_mib, disk_gib, "debian-12").unwrap()
}

pub fn new_vm(name: &str, spec: VmSpecRecord) -> NewVm {
    NewVm {
        id: None,
        name: VmName::new(name).unwrap(),
        spec,
        desired: DesiredState::Running,
    }
}

/// An entry for the writes that take one; tests that check the log build their own.
pub fn audit() -> NewAuditEntry {
    NewAuditEntry::ok(Actor::Operator, None, "test.write", "test")
}
