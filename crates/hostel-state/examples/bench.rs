//! Micro-benchmark of store latencies with 1,000 VMs recorded.
//!
//! `cargo run --release -p hostel-state --example bench [-- <vms> <tenants>]`
//!
//! Prints the median (and p99) of each operation. Writes include the fsync
//! of `synchronous = FULL`, so they reflect the disk under the temp dir.

use std::time::{Duration, Instant};

use hostel_state::{
    Actor, DesiredState, NewAuditEntry, NewVm, ObservedState, ObservedStatus, Quota, SqliteStore,
    Store, TenantName, Timestamp, VmName, VmSpecRecord,
};

fn stats(label: &str, runs: usize, mut f: impl FnMut(usize)) {
    f(0);
    let mut samples: Vec<Duration> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "{label:<32} median {:>10.1?}   p99 {:>10.1?}   ({runs} runs)",
        samples[runs / 2],
        samples[runs * 99 / 100]
    );
}

fn main() -> hostel_state::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(1000);
    let tenants = args.get(1).copied().unwrap_or(10).max(1);
    let per_tenant = total / tenants;

    let dir = tempfile::tempdir().map_err(|e| hostel_state::StoreError::Backend(e.to_string()))?;
    let store = SqliteStore::open(dir.path())?;
    let quota = Quota {
        max_vcpus: u32::MAX,
        max_memory_mib: 1 << 40,
        max_disk_gib: 1 << 30,
        max_vms: u32::MAX,
        max_networks: 0,
        max_uplinks: 0,
        max_public_addresses: 0,
    };
    let audit = NewAuditEntry::ok(Actor::Operator, None, "tenant.create", "bench");
    let spec = VmSpecRecord::new(2, 2048, 20, "debian-12")?;
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut tenant_ids = Vec::new();
    for t in 0..tenants {
        let tenant =
            store.create_tenant(&TenantName::new(format!("tenant-{t}"))?, quota, &audit)?;
        for v in 0..per_tenant {
            let vm = NewVm {
                id: None,
                name: VmName::new(format!("vm-{v}"))?,
                spec: spec.clone(),
                desired: DesiredState::Running,
            };
            ids.push(store.create_vm_within_quota(&tenant.id, &vm)?.id);
        }
        tenant_ids.push(tenant.id);
    }
    println!(
        "setup: {} VMs in {tenants} tenants inserted in {:.2?} (one fsynced transaction each)",
        ids.len(),
        started.elapsed()
    );

    let tenant = tenant_ids[tenants / 2];
    let name = VmName::new("vm-7")?;
    stats(&format!("list_vms (one tenant, {per_tenant})"), 201, |_| {
        store.list_vms(&tenant).unwrap();
    });
    stats("get_vm (by id)", 1001, |i| {
        store.get_vm(&ids[i % ids.len()]).unwrap();
    });
    stats("get_vm_by_name", 1001, |_| {
        store.get_vm_by_name(&tenant, &name).unwrap();
    });
    stats(&format!("list_all_vms ({})", ids.len()), 51, |_| {
        store.list_all_vms().unwrap();
    });
    stats("tenant_usage", 1001, |_| {
        store.tenant_usage(&tenant).unwrap();
    });
    stats("set_vm_observed (write+fsync)", 201, |i| {
        let status = ObservedStatus {
            state: ObservedState::Running,
            pid: Some(1000 + i as u32),
            since: Timestamp::now(),
            last_exit: None,
            restart_count: 0,
        };
        store.set_vm_observed(&ids[i % ids.len()], &status).unwrap();
    });
    Ok(())
}
