//! The IDS service against a real store in a temporary directory and a fake switch.

use super::*;
use crate::adapters::switch_link::LinkError;
use hostel_state::{Actor, NetworkName, NewNetwork, Quota, SqliteStore, StoreError, TenantName};
use std::sync::Mutex;

#[derive(Default)]
struct FakeIds {
    specs: Mutex<Vec<(String, Option<IdsSpec>)>>,
    no_edge: bool,
}

impl IdsAdapter for FakeIds {
    async fn set_ids(
        &self,
        tenant: &str,
        spec: Option<IdsSpec>,
    ) -> Result<IdsLoadReport, LinkError> {
        let active = spec.is_some() && !self.no_edge;
        self.specs.lock().unwrap().push((tenant.to_string(), spec));
        Ok(IdsLoadReport {
            active,
            ..IdsLoadReport::default()
        })
    }
    async fn ids_alerts(&self, _: &str, _: u64) -> Result<IdsAlerts, LinkError> {
        Ok(IdsAlerts::default())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    tenant: TenantId,
    other: TenantId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let quota = Quota {
        max_vcpus: 1,
        max_memory_mib: 128,
        max_disk_gib: 1,
        max_vms: 1,
        max_networks: 2,
        max_uplinks: 0,
        max_public_addresses: 0,
    };
    let sys = |a: &str| NewAuditEntry::ok(Actor::System, None, a, "t");
    let mut ids = Vec::new();
    for (name, subnet) in [("acme", "10.0.0.0/24"), ("other", "10.9.0.0/24")] {
        let t = store
            .create_tenant(
                &TenantName::new(name).unwrap(),
                quota,
                &sys("tenant.create"),
            )
            .unwrap()
            .id;
        let lan = NewNetwork::ipv4(NetworkName::new("lan").unwrap(), subnet.parse().unwrap());
        store
            .create_network(&t, &lan, &sys("network.create"))
            .unwrap();
        ids.push(t);
    }
    Fixture {
        _dir: dir,
        store,
        tenant: ids[0],
        other: ids[1],
    }
}

fn audit(f: &Fixture, action: &str) -> NewAuditEntry {
    NewAuditEntry::ok(Actor::System, Some(f.tenant), action, "ids")
}

const RULES: &str = "alert tcp any any -> $HOME_NET 80 (msg:\"a\"; content:\"x\"; sid:1;)\n\
                     alert tcp any any -> any 80 (msg:\"b\"; http.uri; content:\"y\"; sid:2;)\n";

#[tokio::test]
async fn rules_are_stored_audited_and_refusals_named() {
    let f = fixture();
    let sw = FakeIds::default();
    let svc = IdsService::new(&f.store, &sw, String::new());
    let st = svc
        .change(
            f.tenant,
            IdsChange::Rules(RULES.into()),
            audit(&f, "ids.rules"),
        )
        .await
        .unwrap();
    assert_eq!(st.tenant_rules.loaded, 1);
    assert_eq!(st.tenant_rules.refused.len(), 1);
    assert_eq!(
        (
            st.tenant_rules.refused[0].sid,
            st.tenant_rules.refused[0].keyword.as_str()
        ),
        (2, "http.uri")
    );
    assert_eq!(st.switch, "off", "no network watched yet");
    assert_eq!(f.store.get_ids(&f.tenant).unwrap().rules, RULES);
    let log = f
        .store
        .list_audit(&hostel_state::AuditQuery::newest(10))
        .unwrap();
    assert_eq!(log[0].action, "ids.rules");
}

#[tokio::test]
async fn watching_a_network_installs_operator_and_tenant_rules_with_home_net() {
    let f = fixture();
    let sw = FakeIds::default();
    let op = "alert ip any any -> any any (msg:\"op\"; sid:9000;)\n".to_string();
    let svc = IdsService::new(&f.store, &sw, op);
    svc.change(
        f.tenant,
        IdsChange::Rules(RULES.into()),
        audit(&f, "ids.rules"),
    )
    .await
    .unwrap();
    let st = svc
        .change(
            f.tenant,
            IdsChange::Settings {
                mode: IdsMode::Prevent,
                overload: IdsOverload::FailClosed,
                networks: vec![NetworkName::new("lan").unwrap()],
                intra_networks: vec![NetworkName::new("lan").unwrap()],
            },
            audit(&f, "ids.set"),
        )
        .await
        .unwrap();
    assert_eq!(st.switch, "applied");
    assert_eq!(st.operator_rules_loaded, 1);
    assert_eq!(st.networks, vec![NetworkName::new("lan").unwrap()]);
    let (tenant, spec) = sw.specs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(tenant, f.tenant.to_string());
    let spec = spec.expect("on");
    assert_eq!(spec.mode, IdsMode::Prevent);
    assert_eq!(spec.overload, IdsOverload::FailClosed);
    assert!(spec.rules.contains("sid:9000") && spec.rules.contains("sid:1;"));
    assert_eq!(
        spec.vars.get("HOME_NET").map(String::as_str),
        Some("[10.0.0.0/24]")
    );
    assert_eq!(st.intra_networks, vec![NetworkName::new("lan").unwrap()]);
    assert_eq!(
        spec.intra_networks, spec.networks,
        "VM-to-VM inspection passed on"
    );
    let installed = spec;

    // A restarted switch has none: `restore_all` installs the same spec again, and a
    // tenant without watched networks is left alone.
    sw.specs.lock().unwrap().clear();
    assert_eq!(svc.restore_all().await.unwrap(), 1);
    let specs = sw.specs.lock().unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].0, f.tenant.to_string());
    assert_eq!(specs[0].1.as_ref(), Some(&installed));
}

#[tokio::test]
async fn another_tenants_network_is_not_found_and_changes_nothing() {
    let f = fixture();
    let sw = FakeIds::default();
    let svc = IdsService::new(&f.store, &sw, String::new());
    // "lan" of `other` exists, but `other` asks by name within its own scope: make the
    // tenant ask for a name only the other tenant has.
    let err = svc
        .change(
            f.tenant,
            IdsChange::Settings {
                mode: IdsMode::Detect,
                overload: IdsOverload::FailOpen,
                networks: vec![NetworkName::new("nope").unwrap()],
                intra_networks: Vec::new(),
            },
            audit(&f, "ids.set"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
        "{err:?}"
    );
    assert_eq!(f.store.get_ids(&f.tenant).unwrap(), IdsSettings::default());
    assert!(
        sw.specs.lock().unwrap().is_empty(),
        "the switch was left alone"
    );
    let _ = f.other;
}

#[tokio::test]
async fn without_an_edge_the_settings_are_kept_and_pending() {
    let f = fixture();
    let sw = FakeIds {
        no_edge: true,
        ..FakeIds::default()
    };
    let svc = IdsService::new(&f.store, &sw, String::new());
    let st = svc
        .change(
            f.tenant,
            IdsChange::Settings {
                mode: IdsMode::Detect,
                overload: IdsOverload::FailOpen,
                networks: vec![NetworkName::new("lan").unwrap()],
                intra_networks: Vec::new(),
            },
            audit(&f, "ids.set"),
        )
        .await
        .unwrap();
    assert!(st.switch.starts_with("pending: "), "{}", st.switch);
    assert!(st.switch.contains("no edge"), "{}", st.switch);
    assert_eq!(
        sw.specs.lock().unwrap().len(),
        1,
        "the switch keeps it for the edge"
    );
    assert_eq!(f.store.get_ids(&f.tenant).unwrap().networks.len(), 1);
}

#[test]
fn operator_rules_come_from_every_rules_file_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = operator_rules_dir(dir.path());
    assert_eq!(read_operator_rules(&d), "", "no directory: no rules");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("b.rules"), "B").unwrap();
    std::fs::write(d.join("a.rules"), "A").unwrap();
    std::fs::write(d.join("notes.txt"), "N").unwrap();
    assert_eq!(read_operator_rules(&d), "A\nB\n");
}
