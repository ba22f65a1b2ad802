//! A tenant's public addresses: floating addresses allocated from the external network's
//! pools within the tenant's quota, attached 1:1 to a VM NIC. Each change commits with its
//! audit entry, then reaches the switch (the edge answers for the address on the wire and
//! its firewall translates it).

use super::{blocking, DaemonError};
use crate::adapters::SwitchAdapter;
use hostel_state::{NewAuditEntry, PublicAddress, Store, TenantId, VmId};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub struct Addresses<'a, S> {
    store: &'a Arc<dyn Store>,
    switch: &'a S,
}

impl<'a, S: SwitchAdapter> Addresses<'a, S> {
    pub fn new(store: &'a Arc<dyn Store>, switch: &'a S) -> Self {
        Self { store, switch }
    }

    /// Every change here is one store transaction (with its audit entry), then the switch
    /// brought in line with the store.
    async fn commit_and_sync<F>(&self, change: F) -> Result<PublicAddress, DaemonError>
    where
        F: FnOnce(&dyn Store) -> Result<PublicAddress, hostel_state::StoreError> + Send + 'static,
    {
        let a = blocking(self.store, change).await?;
        self.switch.sync().await?;
        Ok(a)
    }

    pub async fn allocate(
        &self,
        tenant: TenantId,
        requested: Option<Ipv4Addr>,
        audit: NewAuditEntry,
    ) -> Result<PublicAddress, DaemonError> {
        self.commit_and_sync(move |store| store.allocate_public_address(&tenant, requested, &audit))
            .await
    }

    /// Attaches to NIC `idx` of `vm`, a VM the caller found in the tenant.
    pub async fn attach(
        &self,
        tenant: TenantId,
        address: Ipv4Addr,
        vm: VmId,
        idx: u32,
        audit: NewAuditEntry,
    ) -> Result<PublicAddress, DaemonError> {
        self.commit_and_sync(move |store| {
            store.attach_public_address(&tenant, address, &vm, idx, &audit)
        })
        .await
    }

    pub async fn detach(
        &self,
        tenant: TenantId,
        address: Ipv4Addr,
        audit: NewAuditEntry,
    ) -> Result<PublicAddress, DaemonError> {
        self.commit_and_sync(move |store| store.detach_public_address(&tenant, address, &audit))
            .await
    }

    pub async fn release(
        &self,
        tenant: TenantId,
        address: Ipv4Addr,
        audit: NewAuditEntry,
    ) -> Result<PublicAddress, DaemonError> {
        self.commit_and_sync(move |store| store.release_public_address(&tenant, address, &audit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::edge::tests::{entry, fixture, network, setup, tenant};
    use crate::service::edge::Edge;
    use hostel_state::{
        DesiredState, NewNic, NewVm, QuotaResource, StoreError, VmName, VmSpecRecord,
    };
    use std::path::Path;

    #[tokio::test]
    async fn quota_cross_tenant_and_double_attach_are_refused_and_change_nothing() {
        let f = fixture();
        let edge = Edge::new(&f.store, &f.switch);
        edge.set_external(setup(), Path::new("/sys/class/net"), entry("external.set"))
            .await
            .unwrap();
        let acme = tenant(&f, "acme", 1);
        let other = tenant(&f, "other", 1);
        let lan = network(&f, acme, "lan");
        edge.attach_network(lan, false, false, entry("network.attach"))
            .await
            .unwrap();
        let svc = Addresses::new(&f.store, &f.switch);
        let a = svc
            .allocate(acme, None, entry("address.allocate"))
            .await
            .unwrap();
        let err = svc
            .allocate(acme, None, entry("address.allocate"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DaemonError::Store(StoreError::QuotaExceeded(v)) if v.resource == QuotaResource::PublicAddresses),
            "{err:?}"
        );
        // Another tenant cannot see, attach or release it.
        let err = svc
            .release(other, a.address, entry("address.release"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        let vm = NewVm {
            id: None,
            name: VmName::new("web").unwrap(),
            spec: VmSpecRecord::new(1, 128, 1, "busybox").unwrap(),
            desired: DesiredState::Stopped,
        };
        let (vm, _) = f
            .store
            .create_vm_with_nics_within_quota(
                &acme,
                &vm,
                &[NewNic {
                    network: lan,
                    ipv4: None,
                }],
                &entry("vm.create"),
            )
            .unwrap();
        svc.attach(acme, a.address, vm.id, 0, entry("address.attach"))
            .await
            .unwrap();
        let err = svc
            .attach(acme, a.address, vm.id, 0, entry("address.attach"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&a.address.to_string()),
            "the conflict names the address: {err}"
        );
        let held = f.store.list_public_addresses(Some(&acme)).unwrap();
        let floating = held.iter().find(|h| h.address == a.address).unwrap();
        assert_eq!(floating.attached, Some((vm.id, 0)));
        assert!(f
            .store
            .list_public_addresses(Some(&other))
            .unwrap()
            .is_empty());
    }
}
