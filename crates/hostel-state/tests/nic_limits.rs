//! Per-NIC rate limits: the tenant's limits within the operator's ceiling (per NIC, else
//! the tenant's default), refusals that change nothing, the audit entry committed with each
//! write, and the effective limits the switch gets.

mod common;

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{
    Actor, AuditQuery, CeilingSource, EntityKind, NetworkName, NewAuditEntry, NewNetwork, NewNic,
    NicLimits, RateLimit, SqliteStore, Store, StoreError, TenantId, Uplink, Vm, VmId,
};

fn pps(n: u64) -> NicLimits {
    NicLimits {
        total: RateLimit {
            packets_per_sec: Some(n),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A tenant with one VM holding one NIC.
fn vm_with_nic(store: &SqliteStore, name: &str) -> (TenantId, Vm) {
    let t = tenant(store, name, big_quota());
    let net = store
        .create_network(
            &t.id,
            &NewNetwork {
                name: NetworkName::new("lan").unwrap(),
                subnet4: "10.0.0.0/24".parse().unwrap(),
                gateway4: None,
                subnet6: None,
                uplink: Uplink::None,
            },
            &common::audit(),
        )
        .unwrap();
    let (vm, _) = store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("vm1", spec(1, 128, 1)),
            &[NewNic {
                network: net.id,
                ipv4: None,
            }],
            &common::audit(),
        )
        .unwrap();
    (t.id, vm)
}

fn entry(action: &str) -> NewAuditEntry {
    NewAuditEntry::ok(Actor::Operator, None, action, "vm1")
}

fn actions(store: &SqliteStore) -> Vec<String> {
    store
        .list_audit(&AuditQuery::newest(100))
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[test]
fn tenant_limits_stay_within_the_ceiling_and_refusals_change_nothing() {
    let (_d, store) = common::open();
    let (_, vm) = vm_with_nic(&store, "acme");
    let fresh = store.get_nic_limits(&vm.id, 0).unwrap();
    assert!(fresh.limits.is_unlimited() && fresh.effective().is_unlimited());
    assert_eq!(fresh.ceiling().1, CeilingSource::None);

    store
        .set_nic_ceiling(&vm.id, 0, Some(&pps(1000)), &entry("nic.ceiling"))
        .unwrap();
    let before = actions(&store);
    match store.set_nic_limits(&vm.id, 0, &pps(1001), &entry("nic.limits")) {
        Err(StoreError::Invalid { field, reason }) => {
            assert_eq!(field, "limits.total.packets_per_sec");
            assert!(reason.contains("ceiling"), "{reason}");
        }
        other => panic!("above the ceiling was taken: {other:?}"),
    }
    match store.set_nic_limits(&vm.id, 0, &pps(0), &entry("nic.limits")) {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "limits.total.packets_per_sec"),
        other => panic!("zero was taken: {other:?}"),
    }
    assert!(store
        .get_nic_limits(&vm.id, 0)
        .unwrap()
        .limits
        .is_unlimited());
    assert_eq!(
        actions(&store),
        before,
        "a refused write left an audit entry"
    );

    let rec = store
        .set_nic_limits(&vm.id, 0, &pps(400), &entry("nic.limits"))
        .unwrap();
    assert_eq!(rec.effective().total.packets_per_sec, Some(400));
    assert_eq!(
        actions(&store)[0],
        "nic.limits",
        "the audit entry commits with the write"
    );
    assert_eq!(store.get_nic_limits(&vm.id, 0).unwrap(), rec);

    // Lowering the ceiling keeps the tenant's setting but caps what is enforced.
    store
        .set_nic_ceiling(&vm.id, 0, Some(&pps(100)), &entry("nic.ceiling"))
        .unwrap();
    let eff = store.list_effective_nic_limits().unwrap();
    assert_eq!(eff, vec![(vm.id, 0, pps(100))]);
}

#[test]
fn the_tenant_default_ceiling_applies_to_nics_without_their_own() {
    let (_d, store) = common::open();
    let (acme, vm) = vm_with_nic(&store, "acme");
    let (_, other) = vm_with_nic(&store, "umbrella");
    store
        .set_tenant_nic_ceiling(&acme, Some(&pps(50)), &entry("tenant.nic_ceiling"))
        .unwrap();
    assert_eq!(store.get_tenant_nic_ceiling(&acme).unwrap(), Some(pps(50)));
    let rec = store.get_nic_limits(&vm.id, 0).unwrap();
    assert_eq!(rec.ceiling(), (pps(50), CeilingSource::Tenant));
    assert!(store
        .set_nic_limits(&vm.id, 0, &pps(51), &entry("nic.limits"))
        .is_err());
    // Another tenant's NICs are not affected.
    assert!(store
        .get_nic_limits(&other.id, 0)
        .unwrap()
        .effective()
        .is_unlimited());
    // A NIC's own ceiling overrides the default, up or down.
    store
        .set_nic_ceiling(&vm.id, 0, Some(&pps(500)), &entry("nic.ceiling"))
        .unwrap();
    store
        .set_nic_limits(&vm.id, 0, &pps(300), &entry("nic.limits"))
        .unwrap();
    store
        .set_nic_ceiling(&vm.id, 0, None, &entry("nic.ceiling"))
        .unwrap();
    let mut eff = store.list_effective_nic_limits().unwrap();
    eff.sort_by_key(|(v, _, _)| *v != vm.id);
    assert_eq!(eff[0], (vm.id, 0, pps(50)));
    assert!(eff[1].2.is_unlimited());
    // A bad ceiling is refused by name too.
    match store.set_tenant_nic_ceiling(&acme, Some(&pps(0)), &entry("tenant.nic_ceiling")) {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "limits.total.packets_per_sec"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_nics_and_tenants_are_not_found() {
    let (_d, store) = common::open();
    let (_, vm) = vm_with_nic(&store, "acme");
    for r in [
        store.get_nic_limits(&vm.id, 1).map(|_| ()),
        store.get_nic_limits(&VmId::new_random(), 0).map(|_| ()),
        store
            .set_nic_limits(&vm.id, 7, &pps(1), &entry("nic.limits"))
            .map(|_| ()),
    ] {
        assert!(
            matches!(
                r,
                Err(StoreError::NotFound {
                    kind: EntityKind::Nic,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert!(matches!(
        store.set_tenant_nic_ceiling(&TenantId::new_random(), None, &entry("x")),
        Err(StoreError::NotFound {
            kind: EntityKind::Tenant,
            ..
        })
    ));
}

#[test]
fn limits_survive_reopen() {
    let (dir, store) = common::open();
    let (_, vm) = vm_with_nic(&store, "acme");
    let mut l = pps(10);
    l.flood.bytes_per_sec = Some(9000);
    l.flood.burst_bytes = Some(1500);
    store
        .set_nic_limits(&vm.id, 0, &l, &entry("nic.limits"))
        .unwrap();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.get_nic_limits(&vm.id, 0).unwrap().limits, l);
}
