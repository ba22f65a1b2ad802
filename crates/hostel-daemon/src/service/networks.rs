//! A tenant's networks: each change commits in the store (with its audit entry and quota
//! check) and then reaches the switch.

use super::{blocking, DaemonError};
use crate::adapters::SwitchAdapter;
use hostel_state::{Network, NetworkId, NewAuditEntry, NewNetwork, Store, TenantId};
use std::sync::Arc;

pub struct Networks<'a, S> {
    store: &'a Arc<dyn Store>,
    switch: &'a S,
}

impl<'a, S: SwitchAdapter> Networks<'a, S> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a S) -> Self {
        Self { store, switch }
    }

    /// Creates the network (quota and subnet checked in the inserting transaction, `audit`
    /// committed with it), then gives the switch its tables. A store refusal changes
    /// nothing and leaves the switch alone; a switch failure leaves the network recorded
    /// (the watchdog keeps retrying) and is reported.
    pub async fn create(
        &self,
        tenant: TenantId,
        new: NewNetwork,
        audit: NewAuditEntry,
    ) -> Result<Network, DaemonError> {
        let net = blocking(self.store, move |store| {
            store.create_network(&tenant, &new, &audit)
        })
        .await?;
        self.switch.sync().await?;
        Ok(net)
    }

    /// Deletes the network (refused while a NIC is attached), then drops it from the switch.
    pub async fn delete(&self, id: NetworkId, audit: NewAuditEntry) -> Result<(), DaemonError> {
        blocking(self.store, move |store| store.delete_network(&id, &audit)).await?;
        self.switch.sync().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::fakes::FakeSwitch;
    use hostel_state::{
        Actor, AuditQuery, NetworkName, Quota, SqliteStore, StoreError, TenantName,
    };
    use std::sync::atomic::Ordering;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        tenant: TenantId,
        switch: FakeSwitch,
    }

    fn fixture(max_networks: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let quota = Quota {
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_disk_gib: 10,
            max_vms: 4,
            max_networks,
            max_uplinks: 1,
            max_public_addresses: 1,
        };
        let name = TenantName::new("acme").unwrap();
        let entry = NewAuditEntry::ok(Actor::System, None, "tenant.create", "acme");
        let tenant = store.create_tenant(&name, quota, &entry).unwrap().id;
        Fixture {
            _dir: dir,
            store,
            tenant,
            switch: FakeSwitch::default(),
        }
    }

    fn lan(name: &str) -> NewNetwork {
        NewNetwork::ipv4(
            NetworkName::new(name).unwrap(),
            "10.0.0.0/24".parse().unwrap(),
        )
    }

    fn entry(f: &Fixture, action: &str, target: &str) -> NewAuditEntry {
        NewAuditEntry::ok(Actor::System, Some(f.tenant), action, target)
    }

    fn audit_count(f: &Fixture) -> usize {
        let q = AuditQuery {
            limit: 100,
            tenant: Some(f.tenant),
            before_seq: None,
        };
        f.store.list_audit(&q).unwrap().len()
    }

    #[tokio::test]
    async fn create_records_audits_and_syncs_the_switch() {
        let f = fixture(2);
        let svc = Networks::new(&f.store, &f.switch);
        let net = svc
            .create(f.tenant, lan("lan"), entry(&f, "network.create", "lan"))
            .await
            .unwrap();
        assert_eq!(net.name.to_string(), "lan");
        assert_eq!(f.store.list_networks(&f.tenant).unwrap().len(), 1);
        assert_eq!(f.switch.syncs(), 1, "the switch gets the new tables once");
        assert_eq!(audit_count(&f), 1, "one entry, committed with the network");
    }

    #[tokio::test]
    async fn quota_exceeded_changes_nothing_and_leaves_the_switch_alone() {
        let f = fixture(1);
        let svc = Networks::new(&f.store, &f.switch);
        svc.create(f.tenant, lan("a"), entry(&f, "network.create", "a"))
            .await
            .unwrap();
        let err = svc
            .create(f.tenant, lan("b"), entry(&f, "network.create", "b"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::QuotaExceeded(_))),
            "{err:?}"
        );
        assert_eq!(f.store.list_networks(&f.tenant).unwrap().len(), 1);
        assert_eq!(
            f.switch.syncs(),
            1,
            "a refused create does not touch the switch"
        );
        assert_eq!(
            audit_count(&f),
            1,
            "the refusal committed no entry of its own"
        );
    }

    #[tokio::test]
    async fn a_switch_refusal_is_reported_as_the_switch_error() {
        let f = fixture(2);
        f.switch.refuse.store(true, Ordering::SeqCst);
        let svc = Networks::new(&f.store, &f.switch);
        let err = svc
            .create(f.tenant, lan("lan"), entry(&f, "network.create", "lan"))
            .await
            .unwrap_err();
        assert!(matches!(err, DaemonError::Switch(_)), "{err:?}");
        assert!(
            err.to_string().contains("fake switch told to refuse"),
            "{err}"
        );
        // The record stays: the watchdog gives a switch that comes back the whole table.
        assert_eq!(f.store.list_networks(&f.tenant).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn delete_removes_and_syncs_and_a_second_delete_is_not_found() {
        let f = fixture(2);
        let svc = Networks::new(&f.store, &f.switch);
        let net = svc
            .create(f.tenant, lan("lan"), entry(&f, "network.create", "lan"))
            .await
            .unwrap();
        svc.delete(net.id, entry(&f, "network.delete", "lan"))
            .await
            .unwrap();
        assert!(f.store.list_networks(&f.tenant).unwrap().is_empty());
        assert_eq!(f.switch.syncs(), 2);
        let err = svc
            .delete(net.id, entry(&f, "network.delete", "lan"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        assert_eq!(f.switch.syncs(), 2, "nothing deleted, nothing to sync");
    }
}
