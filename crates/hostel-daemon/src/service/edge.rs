//! The host's external network (operator) and tenant networks attached to it: each change
//! commits in the store with its audit entry, then reaches the switch (its tables carry the
//! external network and every tenant's edge).

use super::{blocking, DaemonError};
use crate::adapters::edge::to_config;
use crate::adapters::SwitchAdapter;
use hostel_state::{ExternalSetup, NetworkEdge, NetworkId, NewAuditEntry, Store, MAX_POOLS};
use hostel_switch_proto::external::MAX_CONNTRACK_LIMIT;
use hostel_switch_proto::ConfigError;
use std::path::Path;
use std::sync::Arc;

pub struct Edge<'a, S> {
    store: &'a Arc<dyn Store>,
    switch: &'a S,
}

/// The API's names for the switch's fields.
fn api_field(field: &str) -> String {
    match field {
        "subnet4" => "subnet".into(),
        "gateway4" => "gateway".into(),
        f => f.to_string(),
    }
}

/// Checks a set-up before anything is stored: the switch's own checks, pools inside the
/// subnet, and an interface that exists on this host (`sys_net`: `/sys/class/net`).
pub fn validate_setup(setup: &ExternalSetup, sys_net: &Path) -> Result<(), DaemonError> {
    to_config(setup, Vec::new())
        .validate()
        .map_err(|e| match e {
            ConfigError::External { field, reason } => {
                DaemonError::invalid(api_field(&field), reason)
            }
            other => DaemonError::invalid("external", other.to_string()),
        })?;
    if !sys_net.join(&setup.interface).exists() {
        return Err(DaemonError::invalid(
            "interface",
            format!("no network interface {:?} on this host", setup.interface),
        ));
    }
    if setup.pools.len() > MAX_POOLS {
        return Err(DaemonError::invalid(
            "pools",
            format!("at most {MAX_POOLS} pools"),
        ));
    }
    for (i, p) in setup.pools.iter().enumerate() {
        if p.prefix < setup.subnet4.prefix || !setup.subnet4.contains(p.addr) {
            return Err(DaemonError::invalid(
                format!("pools[{i}]"),
                format!("{p} is not inside the external subnet {}", setup.subnet4),
            ));
        }
    }
    for (i, p) in setup.routed_pools4.iter().enumerate() {
        let s = setup.subnet4;
        if s.contains(p.addr) || p.contains(s.addr) {
            return Err(DaemonError::invalid(
                format!("routed_pools[{i}]"),
                format!("{p} overlaps the external subnet {s}"),
            ));
        }
    }
    if !setup.routed_pools6.is_empty() && setup.subnet6.is_none_or(|p| p.prefix > 96) {
        return Err(DaemonError::invalid(
            "routed_pools6",
            "routed IPv6 needs an external IPv6 prefix of /96 or wider (subnet6)",
        ));
    }
    if setup.conntrack_limit == 0 || setup.conntrack_limit > MAX_CONNTRACK_LIMIT {
        return Err(DaemonError::invalid(
            "conntrack_limit",
            format!("must be 1..={MAX_CONNTRACK_LIMIT}"),
        ));
    }
    Ok(())
}

impl<'a, S: SwitchAdapter> Edge<'a, S> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a S) -> Self {
        Self { store, switch }
    }

    /// Sets up (or changes) the external network; a set-up the switch would refuse, or
    /// one leaving out an address a tenant holds, changes nothing.
    pub async fn set_external(
        &self,
        setup: ExternalSetup,
        sys_net: &Path,
        audit: NewAuditEntry,
    ) -> Result<ExternalSetup, DaemonError> {
        validate_setup(&setup, sys_net)?;
        let saved = blocking(self.store, move |store| store.set_external(&setup, &audit)).await?;
        self.switch.sync().await?;
        Ok(saved)
    }

    /// Attaches a network (the caller found it in the tenant) to the external network.
    pub async fn attach_network(
        &self,
        network: NetworkId,
        snat: bool,
        routed: bool,
        audit: NewAuditEntry,
    ) -> Result<NetworkEdge, DaemonError> {
        if snat && routed {
            return Err(DaemonError::invalid(
                "snat",
                "a routed network's addresses are public already: no source NAT",
            ));
        }
        let edge = blocking(self.store, move |store| {
            store.attach_network_external(&network, snat, routed, &audit)
        })
        .await?;
        self.switch.sync().await?;
        Ok(edge)
    }

    /// Designates NIC `nic` of the tenant's VM as `network`'s security appliance (`None`:
    /// none), then hands the switch the new steering.
    pub async fn set_appliance(
        &self,
        tenant: hostel_state::TenantId,
        network: NetworkId,
        nic: Option<(hostel_state::VmName, u32)>,
        audit: NewAuditEntry,
    ) -> Result<(), DaemonError> {
        blocking(self.store, move |store| {
            let nic = match nic {
                Some((name, idx)) => Some((store.get_vm_by_name(&tenant, &name)?.id, idx)),
                None => None,
            };
            store.set_appliance(&tenant, &network, nic.as_ref(), &audit)
        })
        .await?;
        self.switch.sync().await?;
        Ok(())
    }

    pub async fn detach_network(
        &self,
        network: NetworkId,
        audit: NewAuditEntry,
    ) -> Result<(), DaemonError> {
        blocking(self.store, move |store| {
            store.detach_network_external(&network, &audit)
        })
        .await?;
        self.switch.sync().await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::service::fakes::FakeSwitch;
    use hostel_state::{
        Actor, NetworkName, NewNetwork, Quota, SqliteStore, StoreError, TenantId, TenantName,
    };

    pub struct Fixture {
        pub _dir: tempfile::TempDir,
        pub store: Arc<dyn Store>,
        pub switch: FakeSwitch,
    }

    pub fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        Fixture {
            _dir: dir,
            store,
            switch: FakeSwitch::default(),
        }
    }

    pub fn setup() -> ExternalSetup {
        ExternalSetup {
            interface: "lo".into(),
            mac: "02:00:5e:00:00:01".parse().unwrap(),
            subnet4: "203.0.113.0/24".parse().unwrap(),
            gateway4: "203.0.113.1".parse().unwrap(),
            subnet6: None,
            gateway6: None,
            pools: vec!["203.0.113.8/30".parse().unwrap()],
            routed_pools4: vec![],
            routed_pools6: vec![],
            conntrack_limit: 1024,
        }
    }

    pub fn entry(action: &str) -> NewAuditEntry {
        NewAuditEntry::ok(Actor::System, None, action, "t")
    }

    pub fn tenant(f: &Fixture, name: &str, public: u32) -> TenantId {
        let quota = Quota {
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_disk_gib: 10,
            max_vms: 4,
            max_networks: 4,
            max_uplinks: 1,
            max_public_addresses: public,
        };
        let name = TenantName::new(name).unwrap();
        f.store
            .create_tenant(&name, quota, &entry("tenant.create"))
            .unwrap()
            .id
    }

    pub fn network(f: &Fixture, t: TenantId, name: &str) -> NetworkId {
        let new = NewNetwork::ipv4(
            NetworkName::new(name).unwrap(),
            "10.0.0.0/24".parse().unwrap(),
        );
        f.store
            .create_network(&t, &new, &entry("network.create"))
            .unwrap()
            .id
    }

    #[tokio::test]
    async fn a_bad_set_up_names_the_field_and_changes_nothing() {
        let f = fixture();
        let svc = Edge::new(&f.store, &f.switch);
        let sys = Path::new("/sys/class/net");
        type Spoil = Box<dyn Fn(&mut ExternalSetup)>;
        let cases: [(&str, Spoil); 4] = [
            (
                "gateway",
                Box::new(|s| s.gateway4 = "198.51.100.1".parse().unwrap()),
            ),
            (
                "interface",
                Box::new(|s| s.interface = "no-such-nic0".into()),
            ),
            (
                "pools[0]",
                Box::new(|s| s.pools = vec!["198.51.100.0/29".parse().unwrap()]),
            ),
            ("conntrack_limit", Box::new(|s| s.conntrack_limit = 0)),
        ];
        for (field, spoil) in cases {
            let mut s = setup();
            spoil(&mut s);
            match svc.set_external(s, sys, entry("external.set")).await {
                Err(DaemonError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a refusal, got {other:?}"),
            }
        }
        assert!(f.store.get_external().unwrap().is_none());
        assert_eq!(f.switch.syncs(), 0);
    }

    #[tokio::test]
    async fn attaching_gives_the_edge_an_address_and_the_last_detach_returns_it() {
        let f = fixture();
        let svc = Edge::new(&f.store, &f.switch);
        let t = tenant(&f, "acme", 1);
        let net = network(&f, t, "lan");
        let err = svc
            .attach_network(net, true, false, entry("network.attach"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::Conflict { .. })),
            "no external network yet: {err:?}"
        );
        svc.set_external(setup(), Path::new("/sys/class/net"), entry("external.set"))
            .await
            .unwrap();
        let edge = svc
            .attach_network(net, true, false, entry("network.attach"))
            .await
            .unwrap();
        assert!(edge.snat);
        let held = f.store.list_public_addresses(Some(&t)).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].address.to_string(), "203.0.113.8");
        svc.detach_network(net, entry("network.detach"))
            .await
            .unwrap();
        assert!(f.store.list_public_addresses(Some(&t)).unwrap().is_empty());
        assert_eq!(f.switch.syncs(), 3);
    }
}
