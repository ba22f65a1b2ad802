//! Virtual networks and VM NICs: CRUD, tenant isolation, address and MAC
//! allocation, atomicity with VM creation, concurrency.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{
    EntityKind, Network, NetworkId, NetworkName, NewNetwork, NewNic, Quota, SqliteStore, Store,
    StoreError, TenantId, Uplink, MAX_NICS_PER_VM,
};

fn name(s: &str) -> NetworkName {
    NetworkName::new(s).unwrap()
}

fn network(store: &dyn Store, t: &TenantId, n: &str, cidr: &str) -> Network {
    store
        .create_network(
            t,
            &NewNetwork {
                name: name(n).clone(),
                subnet4: cidr.parse().unwrap(),
                gateway4: None,
                subnet6: None,
                uplink: Uplink::None,
            },
            &common::audit(),
        )
        .unwrap()
}

fn nic(net: &Network) -> NewNic {
    NewNic {
        network: net.id,
        ipv4: None,
    }
}

fn nic_at(net: &Network, a: [u8; 4]) -> NewNic {
    NewNic {
        network: net.id,
        ipv4: Some(Ipv4Addr::from(a)),
    }
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

#[test]
fn network_crud() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let lan = network(&store, &t.id, "lan", "10.0.0.7/24");
    assert_eq!(lan.subnet4.to_string(), "10.0.0.0/24", "normalized");
    assert_eq!(lan.gateway4, ip([10, 0, 0, 1]), "default gateway is .1");
    assert_eq!(lan.tenant, t.id);

    let dmz = store
        .create_network(
            &t.id,
            &NewNetwork {
                name: name("dmz"),
                subnet4: "192.168.5.0/28".parse().unwrap(),
                gateway4: Some(ip([192, 168, 5, 14])),
                subnet6: Some("fd00:5::/64".parse().unwrap()),
                uplink: Uplink::Tap,
            },
            &common::audit(),
        )
        .unwrap();
    assert_eq!(dmz.gateway4, ip([192, 168, 5, 14]));
    assert_eq!(
        dmz.subnet6.map(|p| p.to_string()).as_deref(),
        Some("fd00:5::/64")
    );
    assert_eq!(lan.subnet6, None);
    // The uplink is stored, and its host interface name is stable and fits IFNAMSIZ.
    assert_eq!(lan.uplink_ifname(), None);
    let ifname = dmz.uplink_ifname().expect("tap uplink has an interface");
    assert!(ifname.starts_with("hn-") && ifname.len() <= 15, "{ifname}");
    assert_eq!(
        store.get_network(&dmz.id).unwrap().uplink_ifname(),
        Some(ifname)
    );

    assert_eq!(store.get_network(&lan.id).unwrap(), lan);
    assert_eq!(store.get_network_by_name(&t.id, &name("lan")).unwrap(), lan);
    assert_eq!(
        store.list_networks(&t.id).unwrap(),
        vec![dmz.clone(), lan.clone()]
    );
    assert_eq!(store.list_all_networks().unwrap().len(), 2);

    match store.create_network(
        &t.id,
        &NewNetwork {
            name: name("lan").clone(),
            subnet4: "10.9.0.0/24".parse().unwrap(),
            gateway4: None,
            subnet6: None,
            uplink: Uplink::None,
        },
        &common::audit(),
    ) {
        Err(StoreError::Conflict { kind, .. }) => assert_eq!(kind, EntityKind::Network),
        other => panic!("duplicate name: {other:?}"),
    }
    for bad_gw in [[10, 1, 0, 0], [10, 1, 0, 255], [10, 2, 0, 1]] {
        match store.create_network(
            &t.id,
            &NewNetwork {
                name: name("x").clone(),
                subnet4: "10.1.0.0/24".parse().unwrap(),
                gateway4: Some(ip(bad_gw)),
                subnet6: None,
                uplink: Uplink::None,
            },
            &common::audit(),
        ) {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "gateway4"),
            other => panic!("gateway {bad_gw:?}: {other:?}"),
        }
    }
    match store.create_network(
        &TenantId::new_random(),
        &NewNetwork {
            name: name("x").clone(),
            subnet4: "10.1.0.0/24".parse().unwrap(),
            gateway4: None,
            subnet6: None,
            uplink: Uplink::None,
        },
        &common::audit(),
    ) {
        Err(StoreError::NotFound { kind, .. }) => assert_eq!(kind, EntityKind::Tenant),
        other => panic!("unknown tenant: {other:?}"),
    }

    assert_eq!(
        store.delete_network(&dmz.id, &common::audit()).unwrap(),
        dmz
    );
    assert!(matches!(
        store.get_network(&dmz.id),
        Err(StoreError::NotFound {
            kind: EntityKind::Network,
            ..
        })
    ));
    assert!(store.delete_network(&dmz.id, &common::audit()).is_err());
    assert_eq!(store.list_networks(&t.id).unwrap(), vec![lan]);
}

#[test]
fn networks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (lan, nics) = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let t = tenant(&store, "acme", big_quota());
        let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
        let (_, nics) = store
            .create_vm_with_nics_within_quota(
                &t.id,
                &new_vm("web", spec(1, 128, 1)),
                &[nic(&lan)],
                &common::audit(),
            )
            .unwrap();
        (lan, nics)
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.get_network(&lan.id).unwrap(), lan);
    assert_eq!(store.list_all_nics().unwrap(), nics);
}

#[test]
fn tenants_are_isolated() {
    let (_d, store) = common::open();
    let a = tenant(&store, "acme", big_quota());
    let b = tenant(&store, "bobco", big_quota());
    // Same name and subnet in two tenants: separate L2 domains.
    let a_lan = network(&store, &a.id, "lan", "10.0.0.0/24");
    let b_lan = network(&store, &b.id, "lan", "10.0.0.0/24");
    assert_ne!(a_lan.id, b_lan.id);
    assert_eq!(store.list_networks(&a.id).unwrap(), vec![a_lan.clone()]);
    assert!(matches!(
        store.get_network_by_name(&TenantId::new_random(), &name("lan")),
        Err(StoreError::NotFound { .. })
    ));

    // B cannot attach to A's network, and the error is the same as for a
    // network that does not exist — and nothing is created.
    let foreign = store
        .create_vm_with_nics_within_quota(
            &b.id,
            &new_vm("spy", spec(1, 128, 1)),
            &[nic(&a_lan)],
            &common::audit(),
        )
        .unwrap_err();
    let missing = NewNic {
        network: NetworkId::new_random(),
        ipv4: None,
    };
    let unknown = store
        .create_vm_with_nics_within_quota(
            &b.id,
            &new_vm("spy", spec(1, 128, 1)),
            &[missing],
            &common::audit(),
        )
        .unwrap_err();
    for e in [&foreign, &unknown] {
        assert!(
            matches!(
                e,
                StoreError::NotFound {
                    kind: EntityKind::Network,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert!(!foreign.to_string().contains("acme"));
    assert!(store.list_vms(&b.id).unwrap().is_empty());

    // Both tenants get the same first address on their own "lan".
    let (_, na) = store
        .create_vm_with_nics_within_quota(
            &a.id,
            &new_vm("web", spec(1, 128, 1)),
            &[nic(&a_lan)],
            &common::audit(),
        )
        .unwrap();
    let (_, nb) = store
        .create_vm_with_nics_within_quota(
            &b.id,
            &new_vm("web", spec(1, 128, 1)),
            &[nic(&b_lan)],
            &common::audit(),
        )
        .unwrap();
    assert_eq!(na[0].ipv4, nb[0].ipv4);
    assert_eq!(store.list_nics_of_network(&a_lan.id).unwrap(), na);
    assert_eq!(store.list_nics_of_network(&b_lan.id).unwrap(), nb);
}

#[test]
fn allocation_lowest_free_explicit_and_refusals() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
    let mk = |vm: &str, nics: &[NewNic]| {
        store.create_vm_with_nics_within_quota(
            &t.id,
            &new_vm(vm, spec(1, 128, 1)),
            nics,
            &common::audit(),
        )
    };

    // Gateway .1 is skipped; allocation starts at .2.
    let (v1, n1) = mk("a", &[nic(&lan)]).unwrap();
    assert_eq!(n1[0].ipv4, ip([10, 0, 0, 2]));
    assert_eq!((n1[0].vm, n1[0].idx, n1[0].network), (v1.id, 0, lan.id));
    // Explicit address, then allocation fills the gap below it first.
    let (_, n2) = mk("b", &[nic_at(&lan, [10, 0, 0, 10])]).unwrap();
    assert_eq!(n2[0].ipv4, ip([10, 0, 0, 10]));
    let (_, n3) = mk("c", &[nic(&lan)]).unwrap();
    assert_eq!(n3[0].ipv4, ip([10, 0, 0, 3]));

    // Duplicate explicit address: Conflict naming the address; nothing created.
    match mk("d", &[nic_at(&lan, [10, 0, 0, 10])]) {
        Err(e @ StoreError::Conflict { .. }) => {
            assert!(e.to_string().contains("10.0.0.10"), "{e}");
            assert!(e.to_string().contains("lan"), "{e}");
        }
        other => panic!("duplicate address: {other:?}"),
    }
    assert!(store.get_vm_by_name(&t.id, &"d".parse().unwrap()).is_err());

    // Gateway, network, broadcast and outside addresses are invalid.
    for bad in [[10, 0, 0, 1], [10, 0, 0, 0], [10, 0, 0, 255], [10, 0, 1, 5]] {
        match mk("d", &[nic_at(&lan, bad)]) {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "ipv4", "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }

    // Several NICs in one VM: indexes in order, distinct addresses and MACs.
    let dmz = network(&store, &t.id, "dmz", "172.16.0.0/29");
    let (v, nics) = mk("multi", &[nic(&lan), nic(&dmz), nic(&lan)]).unwrap();
    let idx: Vec<u32> = nics.iter().map(|n| n.idx).collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(nics[0].ipv4, ip([10, 0, 0, 4]));
    assert_eq!(nics[1].ipv4, ip([172, 16, 0, 2]));
    assert_eq!(nics[2].ipv4, ip([10, 0, 0, 5]));
    assert_eq!(store.list_nics_of_vm(&v.id).unwrap(), nics);
    let macs: HashSet<_> = nics.iter().map(|n| n.mac).collect();
    assert_eq!(macs.len(), 3);
    for n in &nics {
        let bytes = n.mac.0;
        assert_eq!(&bytes[..3], &[0x52, 0x54, 0x00], "{}", n.mac);
        assert_eq!(bytes[0] & 0x03, 0x02, "locally administered unicast");
    }

    // Network ports listed by address.
    let addrs: Vec<Ipv4Addr> = store
        .list_nics_of_network(&lan.id)
        .unwrap()
        .iter()
        .map(|n| n.ipv4)
        .collect();
    assert_eq!(
        addrs,
        vec![
            ip([10, 0, 0, 2]),
            ip([10, 0, 0, 3]),
            ip([10, 0, 0, 4]),
            ip([10, 0, 0, 5]),
            ip([10, 0, 0, 10])
        ]
    );
    assert_eq!(store.list_all_nics().unwrap().len(), 6);

    // Too many NICs is refused up front.
    let many = vec![nic(&lan); MAX_NICS_PER_VM + 1];
    assert!(matches!(
        mk("many", &many),
        Err(StoreError::Invalid { field: "nics", .. })
    ));
    // create_vm_within_quota still works and yields a VM without NICs.
    let plain = store
        .create_vm_within_quota(&t.id, &new_vm("plain", spec(1, 128, 1)))
        .unwrap();
    assert!(store.list_nics_of_vm(&plain.id).unwrap().is_empty());
}

#[test]
fn exhausted_subnet_is_a_typed_conflict_and_rolls_back() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    // /29: hosts .1-.6, gateway .1 → 5 addresses.
    let tiny = network(&store, &t.id, "tiny", "10.9.9.0/29");
    for i in 0..5 {
        store
            .create_vm_with_nics_within_quota(
                &t.id,
                &new_vm(&format!("vm-{i}"), spec(1, 1, 1)),
                &[nic(&tiny)],
                &common::audit(),
            )
            .unwrap();
    }
    let err = store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("late", spec(1, 1, 1)),
            &[nic(&tiny)],
            &common::audit(),
        )
        .unwrap_err();
    match &err {
        StoreError::Conflict { kind, name, reason } => {
            assert_eq!(*kind, EntityKind::Network);
            assert_eq!(name, "tiny");
            assert!(reason.contains("no free address"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "network \"tiny\": no free address in 10.9.9.0/29"
    );
    // The VM insert was rolled back with the failed NIC.
    assert_eq!(store.list_vms(&t.id).unwrap().len(), 5);

    // A failing second NIC also undoes the first NIC's allocation.
    let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
    assert!(store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("late", spec(1, 1, 1)),
            &[nic(&lan), nic(&tiny)],
            &common::audit()
        )
        .is_err());
    assert!(store.list_nics_of_network(&lan.id).unwrap().is_empty());
}

#[test]
fn quota_is_checked_before_addresses_are_taken() {
    let (_d, store) = common::open();
    let q = Quota {
        max_vms: 1,
        ..big_quota()
    };
    let t = tenant(&store, "acme", q);
    let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
    store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("a", spec(1, 1, 1)),
            &[nic(&lan)],
            &common::audit(),
        )
        .unwrap();
    assert!(matches!(
        store.create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("b", spec(1, 1, 1)),
            &[nic(&lan)],
            &common::audit()
        ),
        Err(StoreError::QuotaExceeded(_))
    ));
    assert_eq!(store.list_nics_of_network(&lan.id).unwrap().len(), 1);
}

#[test]
fn vm_delete_frees_address_and_network_delete_waits_for_nics() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
    let (a, na) = store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("a", spec(1, 1, 1)),
            &[nic(&lan)],
            &common::audit(),
        )
        .unwrap();
    store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("b", spec(1, 1, 1)),
            &[nic(&lan)],
            &common::audit(),
        )
        .unwrap();

    // Network and tenant deletion are refused while in use.
    match store.delete_network(&lan.id, &common::audit()) {
        Err(StoreError::Conflict { kind, reason, .. }) => {
            assert_eq!(kind, EntityKind::Network);
            assert!(reason.contains("2 NIC"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    store.delete_vm(&a.id, None, &common::audit()).unwrap();
    assert!(store.list_nics_of_vm(&a.id).unwrap().is_empty());
    // The freed .2 is the lowest free address again.
    let (_, nc) = store
        .create_vm_with_nics_within_quota(
            &t.id,
            &new_vm("c", spec(1, 1, 1)),
            &[nic(&lan)],
            &common::audit(),
        )
        .unwrap();
    assert_eq!(nc[0].ipv4, na[0].ipv4);

    for vm in store.list_vms(&t.id).unwrap() {
        store.delete_vm(&vm.id, None, &common::audit()).unwrap();
    }
    assert!(store.list_all_nics().unwrap().is_empty());
    // Tenant deletion waits for its networks, then succeeds.
    match store.delete_tenant(&t.id) {
        Err(StoreError::Conflict { reason, .. }) => assert!(reason.contains("network"), "{reason}"),
        other => panic!("{other:?}"),
    }
    store.delete_network(&lan.id, &common::audit()).unwrap();
    store.delete_tenant(&t.id).unwrap();
}

#[test]
fn concurrent_creates_never_share_an_address() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    // /28: hosts .1-.14, gateway .1 → 13 addresses for 20 contenders.
    let net = network(&store, &t.id, "lan", "10.0.0.0/28");
    let store: Arc<dyn Store> = Arc::new(store);
    let start = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (store, start, net_id) = (store.clone(), start.clone(), net.id);
            std::thread::spawn(move || {
                start.wait();
                let n = NewNic {
                    network: net_id,
                    ipv4: None,
                };
                store.create_vm_with_nics_within_quota(
                    &t.id,
                    &new_vm(&format!("vm-{i}"), spec(1, 1, 1)),
                    &[n],
                    &common::audit(),
                )
            })
        })
        .collect();
    let mut addrs = HashSet::new();
    let mut macs = HashSet::new();
    let mut full = 0;
    for h in handles {
        match h.join().unwrap() {
            Ok((_, nics)) => {
                assert!(addrs.insert(nics[0].ipv4), "duplicate {}", nics[0].ipv4);
                assert!(macs.insert(nics[0].mac));
            }
            Err(StoreError::Conflict { reason, .. }) if reason.contains("no free address") => {
                full += 1
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((addrs.len(), full), (13, 7));
    let expected: HashSet<Ipv4Addr> = (2..=14).map(|h| ip([10, 0, 0, h])).collect();
    assert_eq!(addrs, expected);
    assert_eq!(store.list_vms(&t.id).unwrap().len(), 13);
    assert_eq!(store.list_nics_of_network(&net.id).unwrap().len(), 13);
}

#[test]
fn concurrent_stores_on_one_file_never_share_an_address() {
    // Two store instances stand in for two processes (daemon + admin CLI):
    // only SQLite's IMMEDIATE locking keeps them apart.
    let (dir, first) = common::open();
    let t = tenant(&first, "acme", big_quota());
    let net = network(&first, &t.id, "lan", "10.0.0.0/24");
    let second = SqliteStore::open(dir.path()).unwrap();
    let stores: Vec<Arc<dyn Store>> = vec![Arc::new(first), Arc::new(second)];
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let store = stores[i % 2].clone();
            let net_id = net.id;
            std::thread::spawn(move || {
                let n = NewNic {
                    network: net_id,
                    ipv4: None,
                };
                store
                    .create_vm_with_nics_within_quota(
                        &t.id,
                        &new_vm(&format!("vm-{i}"), spec(1, 1, 1)),
                        &[n],
                        &common::audit(),
                    )
                    .unwrap()
                    .1[0]
                    .ipv4
            })
        })
        .collect();
    let addrs: HashSet<Ipv4Addr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let expected: HashSet<Ipv4Addr> = (2..=21).map(|h| ip([10, 0, 0, h])).collect();
    assert_eq!(addrs, expected);
}

#[test]
fn a_nic_gets_the_mac_a_standby_was_booted_with() {
    let (_d, store) = common::open();
    let t = tenant(&store, "acme", big_quota());
    let lan = network(&store, &t.id, "lan", "10.0.0.0/24");
    let id = hostel_state::VmId::new_random();
    let mut new = new_vm("shop", spec(1, 1024, 2));
    new.id = Some(id);
    let (vm, nics) = store
        .create_vm_with_nics_within_quota(&t.id, &new, &[nic(&lan)], &common::audit())
        .unwrap();
    assert_eq!(vm.id, id);
    assert_eq!(nics[0].mac, hostel_state::first_choice_mac(&id, 0));
}

/// Issue 14 (11): networks count against a quota of their own, uplinks against a smaller
/// one, checked in the create's transaction; a network's subnet may not be loopback,
/// multicast, link-local, unspecified or broadcast.
#[test]
fn networks_and_uplinks_are_bounded_by_quota_and_special_subnets_refused() {
    let (_d, store) = common::open();
    let q = Quota {
        max_networks: 2,
        max_uplinks: 1,
        max_public_addresses: 1,
        ..big_quota()
    };
    let t = tenant(&store, "acme", q);
    let with_uplink = |n: &str, cidr: &str, uplink: Uplink| {
        store.create_network(
            &t.id,
            &NewNetwork {
                name: name(n),
                subnet4: cidr.parse().unwrap(),
                gateway4: None,
                subnet6: None,
                uplink,
            },
            &common::audit(),
        )
    };
    with_uplink("a", "10.0.0.0/24", Uplink::Tap).unwrap();
    let err = with_uplink("b", "10.0.1.0/24", Uplink::Tap).unwrap_err();
    assert!(
        err.to_string()
            .contains("uplinks: 1 requested + 1 in use > quota 1"),
        "{err}"
    );
    with_uplink("b", "10.0.1.0/24", Uplink::None).unwrap();
    let err = with_uplink("c", "10.0.2.0/24", Uplink::None).unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err}");
    let usage = store.tenant_usage(&t.id).unwrap();
    assert_eq!((usage.networks, usage.uplinks), (2, 1));

    let roomy = tenant(&store, "roomy", big_quota());
    for (cidr, what) in [
        ("127.0.0.0/24", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("0.0.0.0/8", "unspecified"),
        ("255.255.255.0/24", "broadcast"),
    ] {
        let err = store
            .create_network(
                &roomy.id,
                &NewNetwork::ipv4(name("x"), cidr.parse().unwrap()),
                &common::audit(),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    field: "subnet",
                    ..
                }
            ) && err.to_string().contains(what),
            "{cidr}: {err}"
        );
    }
    assert!(store.list_networks(&roomy.id).unwrap().is_empty());
}
