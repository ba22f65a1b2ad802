//! Quota enforcement, including under concurrency.

mod common;

use std::sync::{Arc, Barrier};

use common::{new_vm, spec, tenant};
use hostel_state::{
    Quota, QuotaResource, QuotaViolation, SqliteStore, Store, StoreError, TenantId,
};

fn quota(vcpus: u32, mem: u64, disk: u64, vms: u32) -> Quota {
    Quota {
        max_vcpus: vcpus,
        max_memory_mib: mem,
        max_disk_gib: disk,
        max_vms: vms,
        max_networks: 4,
        max_uplinks: 1,
        max_public_addresses: 1,
    }
}

#[test]
fn create_reports_which_limit_with_numbers() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", quota(8, 8192, 100, 10));
    store
        .create_vm_within_quota(&t.id, &new_vm("a", spec(4, 1024, 10)))
        .unwrap();
    let err = store
        .create_vm_within_quota(&t.id, &new_vm("b", spec(6, 1024, 10)))
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::QuotaExceeded(QuotaViolation {
            resource: QuotaResource::Vcpus,
            requested: 6,
            in_use: 4,
            limit: 8
        })
    );
    assert_eq!(
        err.to_string(),
        "quota exceeded: vcpus: 6 requested + 4 in use > quota 8"
    );
    let err = store
        .create_vm_within_quota(&t.id, &new_vm("c", spec(1, 8000, 10)))
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("memory_mib: 8000 requested + 1024 in use > quota 8192"));
    let err = store
        .create_vm_within_quota(&t.id, &new_vm("d", spec(1, 1, 91)))
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("disk_gib: 91 requested + 10 in use > quota 100"));
    // Nothing was written by the refused requests.
    assert_eq!(store.list_vms(&t.id).unwrap().len(), 1);
}

#[test]
fn vm_count_limit() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", quota(100, 100_000, 1000, 2));
    for n in ["a", "b"] {
        store
            .create_vm_within_quota(&t.id, &new_vm(n, spec(1, 1, 1)))
            .unwrap();
    }
    let err = store
        .create_vm_within_quota(&t.id, &new_vm("c", spec(1, 1, 1)))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota exceeded: vms: 1 requested + 2 in use > quota 2"
    );
}

#[test]
fn resize_within_quota() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", quota(8, 8192, 100, 10));
    let a = store
        .create_vm_within_quota(&t.id, &new_vm("a", spec(4, 1024, 10)))
        .unwrap();
    store
        .create_vm_within_quota(&t.id, &new_vm("b", spec(2, 1024, 10)))
        .unwrap();
    // a may grow into the 2 free vcpus, not beyond.
    let grown = store
        .resize_vm_within_quota(
            &a.id,
            &a.spec.resized(6, 1024, 10).unwrap(),
            None,
            &common::audit(),
        )
        .unwrap();
    assert_eq!(grown.spec.vcpus(), 6);
    let err = store
        .resize_vm_within_quota(
            &a.id,
            &a.spec.resized(7, 1024, 10).unwrap(),
            None,
            &common::audit(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota exceeded: vcpus: 7 requested + 2 in use > quota 8"
    );
    assert_eq!(store.get_vm(&a.id).unwrap().spec.vcpus(), 6);

    // After the operator lowers the quota, shrinking still works.
    store
        .set_quota(&t.id, quota(1, 8192, 100, 10), &common::audit())
        .unwrap();
    let shrunk = store
        .resize_vm_within_quota(
            &a.id,
            &grown.spec.resized(2, 1024, 10).unwrap(),
            None,
            &common::audit(),
        )
        .unwrap();
    assert_eq!(shrunk.spec.vcpus(), 2);
}

/// Runs `threads` concurrent creates of 2-vcpu VMs against a 10-vcpu quota,
/// each thread using the store `pick` hands it.
fn race(threads: usize, pick: impl Fn(usize) -> Arc<SqliteStore>, tenant: TenantId) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = pick(i);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.create_vm_within_quota(&tenant, &new_vm(&format!("vm-{i}"), spec(2, 256, 1)))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::QuotaExceeded(v) if v.resource == QuotaResource::Vcpus),
                "unexpected error: {e}"
            );
        }
    }
    let store = pick(0);
    let usage = store.tenant_usage(&tenant).unwrap();
    assert_eq!(ok, 5, "exactly quota/2 creates must succeed");
    assert_eq!(usage.vms, 5);
    assert_eq!(usage.vcpus, 10);
    assert_eq!(store.list_vms(&tenant).unwrap().len(), 5);
}

#[test]
fn concurrent_creates_cannot_exceed_quota_shared_store() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", quota(10, 1 << 20, 1 << 20, 100));
    let store = Arc::new(store);
    race(20, |_| store.clone(), t.id);
}

/// Separate store instances have separate writer mutexes, so only SQLite's
/// BEGIN IMMEDIATE locking keeps this correct — as with two processes.
#[test]
fn concurrent_creates_cannot_exceed_quota_separate_connections() {
    let (dir, store) = common::open();
    let t = tenant(&store, "acme", quota(10, 1 << 20, 1 << 20, 100));
    let stores: Vec<_> = (0..20)
        .map(|_| Arc::new(SqliteStore::open(dir.path()).unwrap()))
        .collect();
    race(20, |i| stores[i].clone(), t.id);
}
