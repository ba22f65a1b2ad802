//! Tenants, their quotas and the tokens the operator issues them: each change commits in
//! the store with its audit entry, in one transaction.

use super::{blocking, DaemonError};
use hostel_state::{
    EntityKind, IssuedToken, NewAuditEntry, Quota, Store, StoreError, Tenant, TenantId, TenantName,
    Usage,
};
use std::sync::Arc;

/// The quota of a tenant created without one.
pub const DEFAULT_QUOTA: Quota = Quota {
    max_vcpus: 4,
    max_memory_mib: 4096,
    max_disk_gib: 50,
    max_vms: 4,
    max_networks: hostel_api::DEFAULT_MAX_NETWORKS,
    max_uplinks: hostel_api::DEFAULT_MAX_UPLINKS,
    max_public_addresses: hostel_api::DEFAULT_MAX_PUBLIC_ADDRESSES,
};

/// A tenant with its usage against its quota.
pub type TenantUsage = (Tenant, Usage);

pub struct Tenants<'a> {
    store: &'a Arc<dyn Store>,
}

impl<'a> Tenants<'a> {
    pub fn new(store: &'a Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates the tenant (`quota`, or [`DEFAULT_QUOTA`]) with `audit` in the same
    /// transaction. A malformed or taken name changes nothing.
    pub async fn create(
        &self,
        name: &str,
        quota: Option<Quota>,
        audit: NewAuditEntry,
    ) -> Result<TenantUsage, DaemonError> {
        let name = TenantName::new(name)?;
        let quota = quota.unwrap_or(DEFAULT_QUOTA);
        Ok(blocking(self.store, move |store| {
            with_usage(store, store.create_tenant(&name, quota, &audit)?)
        })
        .await?)
    }

    /// Every tenant, with its usage.
    pub async fn list(&self) -> Result<Vec<TenantUsage>, DaemonError> {
        Ok(blocking(self.store, |store| {
            store
                .list_tenants()?
                .into_iter()
                .map(|t| with_usage(store, t))
                .collect()
        })
        .await?)
    }

    /// The tenant `name` as the caller sees it: any for the operator (`own` is `None`),
    /// itself only for a tenant. A malformed name, a missing tenant and another tenant
    /// are all the same not-found: a caller must not learn which tenants exist.
    pub async fn find(&self, own: Option<TenantId>, name: &str) -> Result<Tenant, DaemonError> {
        let name = name.to_owned();
        Ok(blocking(self.store, move |store| visible(store, own, &name)).await?)
    }

    /// [`Tenants::find`] with the tenant's usage.
    pub async fn show(
        &self,
        own: Option<TenantId>,
        name: &str,
    ) -> Result<TenantUsage, DaemonError> {
        let name = name.to_owned();
        Ok(blocking(self.store, move |store| {
            with_usage(store, visible(store, own, &name)?)
        })
        .await?)
    }

    /// Replaces the tenant's quota (validated by the store), with `audit`.
    pub async fn set_quota(
        &self,
        tenant: TenantId,
        quota: Quota,
        audit: NewAuditEntry,
    ) -> Result<TenantUsage, DaemonError> {
        Ok(blocking(self.store, move |store| {
            with_usage(store, store.set_quota(&tenant, quota, &audit)?)
        })
        .await?)
    }

    /// Issues the tenant a token named `label`; its secret is in the answer only.
    pub async fn issue_token(
        &self,
        tenant: TenantId,
        label: String,
        audit: NewAuditEntry,
    ) -> Result<IssuedToken, DaemonError> {
        Ok(blocking(self.store, move |store| {
            store.issue_token(Some(&tenant), &label, &audit)
        })
        .await?)
    }
}

fn with_usage(store: &dyn Store, t: Tenant) -> Result<TenantUsage, StoreError> {
    let usage = store.tenant_usage(&t.id)?;
    Ok((t, usage))
}

fn visible(store: &dyn Store, own: Option<TenantId>, name: &str) -> Result<Tenant, StoreError> {
    let missing = || StoreError::NotFound {
        kind: EntityKind::Tenant,
        name: name.to_string(),
    };
    let n = TenantName::new(name).map_err(|_| missing())?;
    let t = store.get_tenant_by_name(&n)?;
    if own.is_some_and(|own| own != t.id) {
        return Err(missing());
    }
    Ok(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostel_state::{Actor, AuditQuery, AuditResult, SqliteStore};

    pub(crate) struct Fixture {
        pub _dir: tempfile::TempDir,
        pub store: Arc<dyn Store>,
    }

    pub(crate) fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        Fixture { _dir: dir, store }
    }

    pub(crate) fn entry(action: &str, target: &str) -> NewAuditEntry {
        NewAuditEntry::ok(Actor::System, None, action, target)
    }

    pub(crate) fn audit(f: &Fixture) -> Vec<(String, String, AuditResult)> {
        let q = AuditQuery {
            limit: 100,
            tenant: None,
            before_seq: None,
        };
        f.store
            .list_audit(&q)
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.target, e.result))
            .collect()
    }

    #[tokio::test]
    async fn create_commits_the_tenant_with_its_audit_entry() {
        let f = fixture();
        let svc = Tenants::new(&f.store);
        let (t, usage) = svc
            .create("acme", None, entry("tenant.create", "acme"))
            .await
            .unwrap();
        assert_eq!(t.name.to_string(), "acme");
        assert_eq!(t.quota, DEFAULT_QUOTA);
        assert_eq!(usage.vms, 0);
        assert_eq!(
            audit(&f),
            vec![("tenant.create".into(), "acme".into(), AuditResult::Ok)]
        );
        let listed = svc.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0.id, t.id);
    }

    #[tokio::test]
    async fn a_duplicate_name_is_a_conflict_and_changes_nothing() {
        let f = fixture();
        let svc = Tenants::new(&f.store);
        let small = Quota {
            max_vms: 1,
            ..DEFAULT_QUOTA
        };
        let (first, _) = svc
            .create("acme", Some(small), entry("tenant.create", "acme"))
            .await
            .unwrap();
        let err = svc
            .create("acme", None, entry("tenant.create", "acme"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::Conflict { .. })),
            "{err:?}"
        );
        let listed = svc.list().await.unwrap();
        assert_eq!(listed.len(), 1, "no second tenant");
        assert_eq!(listed[0].0.id, first.id);
        assert_eq!(listed[0].0.quota, small, "the first tenant's quota is kept");
        assert_eq!(audit(&f).len(), 1, "the refusal committed no success entry");
    }

    #[tokio::test]
    async fn a_malformed_name_is_invalid_and_changes_nothing() {
        let f = fixture();
        let svc = Tenants::new(&f.store);
        let err = svc
            .create("Not A Name!", None, entry("tenant.create", "x"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::Invalid { .. })),
            "{err:?}"
        );
        assert!(svc.list().await.unwrap().is_empty());
        assert!(audit(&f).is_empty());
    }

    #[tokio::test]
    async fn a_tenant_sees_itself_only() {
        let f = fixture();
        let svc = Tenants::new(&f.store);
        let (a, _) = svc
            .create("a", None, entry("tenant.create", "a"))
            .await
            .unwrap();
        svc.create("b", None, entry("tenant.create", "b"))
            .await
            .unwrap();
        assert_eq!(svc.show(Some(a.id), "a").await.unwrap().0.id, a.id);
        assert_eq!(svc.show(None, "b").await.unwrap().0.name.to_string(), "b");
        for name in ["b", "nobody", "Bad Name"] {
            let err = svc.show(Some(a.id), name).await.unwrap_err();
            assert!(
                matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
                "{name}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn set_quota_validates_and_audits() {
        let f = fixture();
        let svc = Tenants::new(&f.store);
        let (t, _) = svc
            .create("acme", None, entry("tenant.create", "acme"))
            .await
            .unwrap();
        let bigger = Quota {
            max_vms: 9,
            ..DEFAULT_QUOTA
        };
        let (t2, _) = svc
            .set_quota(t.id, bigger, entry("quota.set", "acme"))
            .await
            .unwrap();
        assert_eq!(t2.quota.max_vms, 9);
        assert_eq!(audit(&f).len(), 2);
    }
}
