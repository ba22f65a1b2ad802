//! Read latency with a realistic host's worth of records: the API serves
//! list/show from the store on every request, so they must stay well under
//! 5 ms with 1,000 VMs recorded (here: 10 tenants × 100 VMs).

mod common;

use std::time::{Duration, Instant};

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{Store, VmName};

const TENANTS: usize = 10;
const VMS_PER_TENANT: usize = 100;
const RUNS: usize = 101;
const BUDGET: Duration = Duration::from_millis(5);

fn median(mut f: impl FnMut()) -> Duration {
    f(); // warm the statement cache and page cache
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[RUNS / 2]
}

#[test]
fn list_and_get_are_fast_with_1000_vms() {
    let (_d, store) = common::open();
    let started = Instant::now();
    let mut tenants = Vec::new();
    let mut last_vm = None;
    for t in 0..TENANTS {
        let tenant = tenant(&store, &format!("tenant-{t}"), big_quota());
        for v in 0..VMS_PER_TENANT {
            let vm = store
                .create_vm_within_quota(&tenant.id, &new_vm(&format!("vm-{v}"), spec(2, 2048, 20)))
                .unwrap();
            last_vm = Some(vm);
        }
        tenants.push(tenant);
    }
    let insert_time = started.elapsed();
    let vm = last_vm.unwrap();
    let tenant_id = tenants[TENANTS / 2].id;
    assert_eq!(
        store.list_all_vms().unwrap().len(),
        TENANTS * VMS_PER_TENANT
    );

    let list = median(|| assert_eq!(store.list_vms(&tenant_id).unwrap().len(), VMS_PER_TENANT));
    let get = median(|| assert_eq!(store.get_vm(&vm.id).unwrap().id, vm.id));
    let name = VmName::new("vm-42").unwrap();
    let get_by_name = median(|| {
        store.get_vm_by_name(&tenant_id, &name).unwrap();
    });
    let list_all = median(|| {
        store.list_all_vms().unwrap();
    });
    eprintln!(
        "1000 VMs: inserted in {insert_time:?}; medians: list one tenant ({VMS_PER_TENANT}) {list:?}, \
         get by id {get:?}, get by name {get_by_name:?}, list all {list_all:?}"
    );
    assert!(list < BUDGET, "list_vms median {list:?}");
    assert!(get < BUDGET, "get_vm median {get:?}");
    assert!(
        get_by_name < BUDGET,
        "get_vm_by_name median {get_by_name:?}"
    );
}
