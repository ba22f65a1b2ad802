//! Per-NIC rate limits: each change is checked and committed in the store with its audit
//! entry (a tenant's limit above the ceiling in force is refused there and changes nothing),
//! then the switch gets the effective limits in place.

use super::{blocking, DaemonError};
use crate::adapters::SwitchAdapter;
use hostel_state::{NewAuditEntry, NicLimits, NicLimitsRecord, Store, TenantId, VmId};
use std::sync::Arc;

/// What a change to one NIC writes.
#[derive(Debug, Clone, Copy)]
pub enum NicChange {
    /// The tenant's own limits, within the ceiling in force.
    Own(NicLimits),
    /// The operator's ceiling on this NIC (`None`: back to the tenant's default).
    Ceiling(Option<NicLimits>),
}

pub struct NicLimitsService<'a, S> {
    store: &'a Arc<dyn Store>,
    switch: &'a S,
}

impl<'a, S: SwitchAdapter> NicLimitsService<'a, S> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a S) -> Self {
        Self { store, switch }
    }

    /// Changes NIC `idx` of `vm`, then re-syncs the switch. A refusal leaves the switch
    /// alone; a switch failure leaves the change committed (the watchdog retries).
    pub async fn change(
        &self,
        vm: VmId,
        idx: u32,
        change: NicChange,
        audit: NewAuditEntry,
    ) -> Result<NicLimitsRecord, DaemonError> {
        let rec = blocking(self.store, move |store| match change {
            NicChange::Own(l) => store.set_nic_limits(&vm, idx, &l, &audit),
            NicChange::Ceiling(c) => store.set_nic_ceiling(&vm, idx, c.as_ref(), &audit),
        })
        .await?;
        self.switch.sync().await?;
        Ok(rec)
    }

    /// Sets (or with `None` clears) the tenant's default ceiling, then re-syncs the switch.
    pub async fn set_tenant_ceiling(
        &self,
        tenant: TenantId,
        ceiling: Option<NicLimits>,
        audit: NewAuditEntry,
    ) -> Result<Option<NicLimits>, DaemonError> {
        let c = blocking(self.store, move |store| {
            store.set_tenant_nic_ceiling(&tenant, ceiling.as_ref(), &audit)
        })
        .await?;
        self.switch.sync().await?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::fakes::FakeSwitch;
    use hostel_state::{
        Actor, DesiredState, NetworkName, NewNetwork, NewNic, NewVm, Quota, SqliteStore,
        StoreError, TenantName, VmName, VmSpecRecord,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        tenant: TenantId,
        vm: VmId,
        switch: FakeSwitch,
    }

    /// A tenant with one VM on one network: NIC 0 exists.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let quota = Quota {
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_disk_gib: 10,
            max_vms: 4,
            max_networks: 2,
            max_uplinks: 0,
            max_public_addresses: 0,
        };
        let sys = |action: &str| NewAuditEntry::ok(Actor::System, None, action, "t");
        let name = TenantName::new("acme").unwrap();
        let tenant = store
            .create_tenant(&name, quota, &sys("tenant.create"))
            .unwrap()
            .id;
        let lan = NewNetwork::ipv4(
            NetworkName::new("lan").unwrap(),
            "10.0.0.0/24".parse().unwrap(),
        );
        let net = store
            .create_network(&tenant, &lan, &sys("network.create"))
            .unwrap();
        let new = NewVm {
            id: None,
            name: VmName::new("web").unwrap(),
            spec: VmSpecRecord::new(1, 128, 1, "busybox").unwrap(),
            desired: DesiredState::Stopped,
        };
        let nic = NewNic {
            network: net.id,
            ipv4: None,
        };
        let (vm, _) = store
            .create_vm_with_nics_within_quota(&tenant, &new, &[nic], &sys("vm.create"))
            .unwrap();
        Fixture {
            _dir: dir,
            store,
            tenant,
            vm: vm.id,
            switch: FakeSwitch::default(),
        }
    }

    fn pps(n: u64) -> NicLimits {
        let mut l = NicLimits::default();
        l.total.packets_per_sec = Some(n);
        l
    }

    fn entry(f: &Fixture) -> NewAuditEntry {
        NewAuditEntry::ok(Actor::System, Some(f.tenant), "vm.nic_limits", "web/nics/0")
    }

    #[tokio::test]
    async fn a_limit_within_the_ceiling_is_stored_and_reaches_the_switch() {
        let f = fixture();
        let svc = NicLimitsService::new(&f.store, &f.switch);
        let c = NicChange::Ceiling(Some(pps(1000)));
        svc.change(f.vm, 0, c, entry(&f)).await.unwrap();
        let rec = svc
            .change(f.vm, 0, NicChange::Own(pps(500)), entry(&f))
            .await
            .unwrap();
        assert_eq!(rec.effective().total.packets_per_sec, Some(500));
        assert_eq!(f.switch.syncs(), 2, "each change reaches the switch");
    }

    #[tokio::test]
    async fn a_limit_above_the_ceiling_changes_nothing_and_leaves_the_switch_alone() {
        let f = fixture();
        let svc = NicLimitsService::new(&f.store, &f.switch);
        let c = NicChange::Ceiling(Some(pps(1000)));
        svc.change(f.vm, 0, c, entry(&f)).await.unwrap();
        let err = svc
            .change(f.vm, 0, NicChange::Own(pps(2000)), entry(&f))
            .await
            .unwrap_err();
        match &err {
            DaemonError::Store(StoreError::Invalid { field, .. }) => {
                assert_eq!(*field, "limits.total.packets_per_sec")
            }
            other => panic!("{other:?}"),
        }
        let rec = f.store.get_nic_limits(&f.vm, 0).unwrap();
        assert_eq!(
            rec.limits,
            NicLimits::default(),
            "the refused limit was kept"
        );
        assert_eq!(f.switch.syncs(), 1, "a refusal does not touch the switch");
    }

    #[tokio::test]
    async fn a_tenant_ceiling_reaches_the_switch_and_a_missing_nic_is_not_found() {
        let f = fixture();
        let svc = NicLimitsService::new(&f.store, &f.switch);
        let c = svc
            .set_tenant_ceiling(f.tenant, Some(pps(10)), entry(&f))
            .await
            .unwrap();
        assert_eq!(c, Some(pps(10)));
        assert_eq!(f.switch.syncs(), 1);
        let err = svc
            .change(f.vm, 7, NicChange::Own(pps(1)), entry(&f))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        assert_eq!(f.switch.syncs(), 1);
    }
}
