//! VPS records (migration 11): instances of kind `vps` in the VM table, sharing names and
//! quotas with VMs, each with its own slot of host id ranges, invisible to VM queries.

mod common;

use common::{audit, big_quota, new_vm, spec, tenant};
use hostel_state::{Quota, QuotaResource, Store, StoreError};

#[test]
fn vpss_share_names_and_quotas_with_vms_and_get_distinct_slots() {
    let (_d, store) = common::open();
    let t = tenant(
        &store,
        "acme",
        Quota {
            max_vms: 3,
            ..big_quota()
        },
    );
    let other = tenant(&store, "umbrella", big_quota());
    store
        .create_vm_within_quota(&t.id, &new_vm("vm1", spec(1, 128, 1)))
        .unwrap();
    let (a, _) = store
        .create_vps_with_nics_within_quota(&t.id, &new_vm("a", spec(1, 64, 1)), &[], &audit())
        .unwrap();
    let (b, _) = store
        .create_vps_with_nics_within_quota(&t.id, &new_vm("b", spec(1, 64, 1)), &[], &audit())
        .unwrap();
    assert_eq!((a.slot, b.slot), (0, 1));
    // The fourth instance of a tenant allowed three: VMs and VPSs count together.
    let err = store
        .create_vps_with_nics_within_quota(&t.id, &new_vm("c", spec(1, 64, 1)), &[], &audit())
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(v) if v.resource == QuotaResource::Vms));
    // A VM's name is taken for a VPS too.
    let err = store
        .create_vps_with_nics_within_quota(&t.id, &new_vm("vm1", spec(1, 64, 1)), &[], &audit())
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // VM queries never see a VPS, VPS queries never a VM, and tenants only their own.
    let names: Vec<String> = store
        .list_vms(&t.id)
        .unwrap()
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["vm1"]);
    assert!(store
        .list_all_vms()
        .unwrap()
        .iter()
        .all(|v| v.name.as_str() == "vm1"));
    assert_eq!(store.list_vpss(&t.id).unwrap().len(), 2);
    assert!(store.get_vm_by_name(&t.id, &a.vm.name).is_err());
    assert!(store.get_vps_by_name(&other.id, &a.vm.name).is_err());
    assert_eq!(store.get_vps_by_name(&t.id, &a.vm.name).unwrap(), a);
    // A freed slot is reused: the lowest free one.
    store.delete_vm(&a.vm.id, None, &audit()).unwrap();
    let (c, _) = store
        .create_vps_with_nics_within_quota(&other.id, &new_vm("c", spec(1, 64, 1)), &[], &audit())
        .unwrap();
    assert_eq!(c.slot, 0);
    assert_eq!(store.list_all_vpss().unwrap().len(), 2);
}
