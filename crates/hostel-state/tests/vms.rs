//! VM lifecycle, naming rules, optimistic concurrency and tenant isolation.

mod common;

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{
    DesiredState, EntityKind, ObservedState, ObservedStatus, RestartPolicy, Store, StoreError,
    TenantId, Timestamp, VmId, VmName,
};

#[test]
fn create_get_list_update_delete() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let s = spec(2, 2048, 20)
        .with_cmdline(Some("console=ttyS0".into()))
        .unwrap()
        .with_restart_policy(RestartPolicy::OnFailure);
    let vm = store.create_vm(&t.id, &new_vm("web", s.clone())).unwrap();
    assert_eq!(vm.generation, 1);
    assert_eq!(vm.observed.state, ObservedState::Creating);
    assert_eq!(vm.tenant, t.id);

    // Round-trips through the database unchanged.
    assert_eq!(store.get_vm(&vm.id).unwrap(), vm);
    let by_name = store
        .get_vm_by_name(&t.id, &VmName::new("web").unwrap())
        .unwrap();
    assert_eq!(by_name, vm);
    assert_eq!(store.list_vms(&t.id).unwrap(), vec![vm.clone()]);
    assert_eq!(store.list_all_vms().unwrap(), vec![vm.clone()]);

    let bigger = s.resized(4, 4096, 40).unwrap();
    let v2 = store.update_vm_spec(&vm.id, &bigger, Some(1)).unwrap();
    assert_eq!((v2.generation, v2.spec.vcpus()), (2, 4));
    let v3 = store
        .set_vm_desired(&vm.id, DesiredState::Stopped, None)
        .unwrap();
    assert_eq!(v3.generation, 3);
    let observed = ObservedStatus {
        state: ObservedState::Crashed,
        pid: None,
        since: Timestamp::now(),
        last_exit: Some("killed by SIGKILL".into()),
        restart_count: 2,
    };
    let v4 = store.set_vm_observed(&vm.id, &observed).unwrap();
    assert_eq!((v4.generation, &v4.observed), (4, &observed));
    assert_eq!(store.get_vm(&vm.id).unwrap(), v4);

    let deleted = store.delete_vm(&vm.id, Some(4), &common::audit()).unwrap();
    assert_eq!(deleted, v4);
    assert!(matches!(
        store.get_vm(&vm.id),
        Err(StoreError::NotFound {
            kind: EntityKind::Vm,
            ..
        })
    ));
    assert!(store.list_vms(&t.id).unwrap().is_empty());
}

#[test]
fn duplicate_name_in_tenant_is_a_conflict_but_other_tenants_may_reuse_it() {
    let (_d, store) = common::open();
    let a = tenant(&store, "a", big_quota());
    let b = tenant(&store, "b", big_quota());
    store
        .create_vm(&a.id, &new_vm("web", spec(1, 512, 1)))
        .unwrap();
    let err = store
        .create_vm_within_quota(&a.id, &new_vm("web", spec(1, 512, 1)))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { kind: EntityKind::Vm, name, .. } if name == "web"),
        "{err}"
    );
    store
        .create_vm(&b.id, &new_vm("web", spec(1, 512, 1)))
        .unwrap();
    assert_eq!(store.list_all_vms().unwrap().len(), 2);
}

#[test]
fn duplicate_tenant_name_is_a_conflict() {
    let (_d, store) = common::open();
    tenant(&store, "acme", big_quota());
    let err = store
        .create_tenant(&"acme".parse().unwrap(), big_quota(), &common::audit())
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            kind: EntityKind::Tenant,
            ..
        }
    ));
}

#[test]
fn stale_generation_is_rejected() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let vm = store
        .create_vm(&t.id, &new_vm("web", spec(1, 512, 1)))
        .unwrap();
    store
        .set_vm_desired(&vm.id, DesiredState::Stopped, Some(1))
        .unwrap();
    let err = store
        .set_vm_desired(&vm.id, DesiredState::Running, Some(1))
        .unwrap_err();
    assert!(err.to_string().contains("expected 1, current 2"), "{err}");
    assert!(store.delete_vm(&vm.id, Some(1), &common::audit()).is_err());
    assert_eq!(store.get_vm(&vm.id).unwrap().desired, DesiredState::Stopped);
}

#[test]
fn unchanged_writes_do_not_bump_generation() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let vm = store
        .create_vm(&t.id, &new_vm("web", spec(1, 512, 1)))
        .unwrap();
    let same = store.set_vm_observed(&vm.id, &vm.observed).unwrap();
    assert_eq!(same.generation, 1);
    let same = store
        .set_vm_desired(&vm.id, DesiredState::Running, None)
        .unwrap();
    assert_eq!(same.generation, 1);
}

#[test]
fn queries_are_isolated_by_tenant() {
    let (_d, store) = common::open();
    let a = tenant(&store, "a", big_quota());
    let b = tenant(&store, "b", big_quota());
    for i in 0..3 {
        store
            .create_vm(&a.id, &new_vm(&format!("a{i}"), spec(1, 512, 1)))
            .unwrap();
    }
    let b_vm = store
        .create_vm(&b.id, &new_vm("only-b", spec(2, 512, 1)))
        .unwrap();

    let listed_a = store.list_vms(&a.id).unwrap();
    assert_eq!(listed_a.len(), 3);
    assert!(listed_a.iter().all(|v| v.tenant == a.id));
    assert_eq!(
        listed_a.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["a0", "a1", "a2"]
    );
    assert_eq!(store.list_vms(&b.id).unwrap(), vec![b_vm.clone()]);
    // A's name lookup cannot reach B's VM.
    assert!(matches!(
        store.get_vm_by_name(&a.id, &VmName::new("only-b").unwrap()),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.tenant_usage(&a.id).unwrap().vcpus, 3);
    assert_eq!(store.tenant_usage(&b.id).unwrap().vcpus, 2);
    // Unknown tenant: empty list, NotFound on usage.
    let ghost = TenantId::new_random();
    assert!(store.list_vms(&ghost).unwrap().is_empty());
    assert!(store.tenant_usage(&ghost).is_err());
}

#[test]
fn vm_for_unknown_tenant_or_id_is_not_found() {
    let (_d, store) = common::open();
    let err = store
        .create_vm(&TenantId::new_random(), &new_vm("web", spec(1, 1, 1)))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            kind: EntityKind::Tenant,
            ..
        }
    ));
    let id = VmId::new_random();
    assert!(store.get_vm(&id).is_err());
    assert!(store
        .set_vm_desired(&id, DesiredState::Stopped, None)
        .is_err());
    assert!(store.delete_vm(&id, None, &common::audit()).is_err());
}

#[test]
fn tenant_with_vms_cannot_be_deleted() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    store
        .issue_token(Some(&t.id), "ci", &common::audit())
        .unwrap();
    let vm = store
        .create_vm(&t.id, &new_vm("web", spec(1, 1, 1)))
        .unwrap();
    assert!(matches!(
        store.delete_tenant(&t.id),
        Err(StoreError::Conflict { .. })
    ));
    store.delete_vm(&vm.id, None, &common::audit()).unwrap();
    store.delete_tenant(&t.id).unwrap();
    assert!(store.get_tenant(&t.id).is_err());
    // Its tokens went with it.
    assert!(store.list_tokens(None).unwrap().is_empty());
}

#[test]
fn records_serialize_to_json() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let vm = store
        .create_vm(&t.id, &new_vm("web", spec(1, 1, 1)))
        .unwrap();
    let json = serde_json::to_value(&vm).unwrap();
    assert_eq!(json["desired"], "running");
    assert_eq!(json["observed"]["state"], "creating");
    assert_eq!(json["spec"]["restart_policy"], "never");
    let back: hostel_state::Vm = serde_json::from_value(json).unwrap();
    assert_eq!(back, vm);
}

#[test]
fn a_vm_may_be_created_with_the_id_it_was_booted_under() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let id = VmId::new_random();
    let mut new = new_vm("shop", spec(1, 1024, 2));
    new.id = Some(id);
    let vm = store.create_vm(&t.id, &new).unwrap();
    assert_eq!(vm.id, id);
    assert_eq!(store.get_vm(&id).unwrap().name.as_str(), "shop");
    // The id is the VM's alone: a second record under it is refused and nothing is added.
    let mut again = new_vm("other", spec(1, 1024, 2));
    again.id = Some(id);
    assert!(store.create_vm(&t.id, &again).is_err());
    assert_eq!(store.list_vms(&t.id).unwrap().len(), 1);
}

/// A stop or delete is on record (with its deadline) in the same write as the desired state,
/// survives a reopen of the database, and clears.
#[test]
fn intent_is_written_with_the_desired_state_and_survives_a_reopen() {
    use hostel_state::{IntentOp, VmIntent};
    let (dir, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let vm = store
        .create_vm(&t.id, &new_vm("web", spec(1, 64, 1)))
        .unwrap();
    assert_eq!(vm.intent, None);
    let intent = VmIntent {
        op: IntentOp::Delete,
        deadline: Timestamp::from_unix_millis(1_700_000_000_123),
    };
    let v = store
        .set_vm_intent(&vm.id, DesiredState::Stopped, Some(&intent), None)
        .unwrap();
    assert_eq!((v.desired, v.intent), (DesiredState::Stopped, Some(intent)));
    assert_eq!(v.generation, vm.generation + 1);
    drop(store);
    let store = hostel_state::SqliteStore::open(dir.path()).unwrap();
    let back = store.get_vm(&vm.id).unwrap();
    assert_eq!(back.intent, Some(intent));
    assert_eq!(back.desired, DesiredState::Stopped);
    // A finished stop does not wipe the delete.
    let kept = store.clear_vm_intent(&vm.id, IntentOp::Stop).unwrap();
    assert_eq!(kept.intent, Some(intent));
    let cleared = store.clear_vm_intent(&vm.id, IntentOp::Delete).unwrap();
    assert_eq!(cleared.intent, None);
    assert_eq!(store.get_vm(&vm.id).unwrap().intent, None);
    // Only a delete on record may be finished without an audit entry of its own.
    assert!(matches!(
        store.finish_vm_delete(&vm.id),
        Err(StoreError::Conflict { .. })
    ));
    store
        .set_vm_intent(&vm.id, DesiredState::Stopped, Some(&intent), None)
        .unwrap();
    store.finish_vm_delete(&vm.id).unwrap();
    assert!(matches!(
        store.get_vm(&vm.id),
        Err(StoreError::NotFound { .. })
    ));
}
