//! The steps tenant-scoped routes share, so each handler says only what is specific to it:
//! whom a call acts for, finding the entity its path names (404 when it is not there or
//! not the caller's), and recording a state-changing call with its outcome in the audit log.
//! Store calls go through [`AppState::db`], off the async workers.

use super::{AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use hostel_state::{
    AuditResult, Network, NetworkName, NewAuditEntry, Store, Tenant, TenantId, TenantName, Vm,
    VmName,
};
use std::future::Future;

/// Something a route names in its path and looks up within a scope.
pub trait Named: Sized + Send + 'static {
    /// Whom the lookup is confined to; also the tenant an audit entry about the call is
    /// filed under (`None`: the operator, acting for the host).
    type Scope: Copy + Send + Into<Option<TenantId>> + 'static;

    /// Finds the entity, answering 404 for a name that is malformed, missing or outside
    /// `scope`: a caller must not learn what other tenants have.
    fn find(store: &dyn Store, scope: Self::Scope, name: &str) -> ApiResult<Self>;
}

/// VMs live in one tenant.
impl Named for Vm {
    type Scope = TenantId;

    fn find(store: &dyn Store, tenant: TenantId, name: &str) -> ApiResult<Self> {
        let n = VmName::new(name).map_err(|_| ApiError::not_found("vm", name))?;
        Ok(store.get_vm_by_name(&tenant, &n)?)
    }
}

/// Networks live in one tenant.
impl Named for Network {
    type Scope = TenantId;

    fn find(store: &dyn Store, tenant: TenantId, name: &str) -> ApiResult<Self> {
        let n = NetworkName::new(name).map_err(|_| ApiError::not_found("network", name))?;
        Ok(store.get_network_by_name(&tenant, &n)?)
    }
}

/// A tenant is visible to the operator (scope `None`) and to itself only.
impl Named for Tenant {
    type Scope = Option<TenantId>;

    fn find(store: &dyn Store, own: Option<TenantId>, name: &str) -> ApiResult<Self> {
        let n = TenantName::new(name).map_err(|_| ApiError::not_found("tenant", name))?;
        let t = store.get_tenant_by_name(&n)?;
        if own.is_some_and(|own| own != t.id) {
            return Err(ApiError::not_found("tenant", name));
        }
        Ok(t)
    }
}

impl AppState {
    /// Runs `f` with the store off the async workers; see [`crate::Ctx::db`].
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.ctx.db(f).await
    }

    /// The tenant a tenant-scoped route acts for: the token's own, or the one the operator
    /// names (a tenant naming another tenant finds nothing).
    pub async fn scope(&self, auth: &Auth, q: &TenantQuery) -> ApiResult<TenantId> {
        match (auth.tenant, q.tenant.clone()) {
            (Some(own), None) => Ok(own),
            (own, Some(name)) => {
                self.db(move |store| {
                    TenantName::new(&name)
                        .ok()
                        .and_then(|n| store.get_tenant_by_name(&n).ok())
                        .filter(|t| own.is_none_or(|o| o == t.id))
                        .map(|t| t.id)
                        .ok_or_else(|| ApiError::not_found("tenant", &name))
                })
                .await
            }
            (None, None) => Err(ApiError::invalid(
                "tenant",
                "the operator must name the tenant to act for (`tenant` query parameter; CLI: --tenant)",
            )),
        }
    }

    /// The entity `name` within `scope`, or 404.
    pub async fn find<E: Named>(&self, scope: E::Scope, name: &str) -> ApiResult<E> {
        let name = name.to_owned();
        self.db(move |store| E::find(store, scope, &name)).await
    }

    /// Runs a state-changing operation and records it in the audit log before answering
    /// (so a client that reads the log next finds the entry).
    ///
    /// `op` gets the entry describing its success and hands it to the store write that
    /// makes its change: both commit in one transaction. A call refused or failed is
    /// recorded here with its reason, unless the failure was committed already with the
    /// undo of what the call had changed ([`ApiError::recorded`]).
    pub async fn audited<T, Fut>(
        &self,
        auth: &Auth,
        tenant: Option<TenantId>,
        action: &str,
        target: &str,
        op: impl FnOnce(NewAuditEntry) -> Fut,
    ) -> ApiResult<T>
    where
        Fut: Future<Output = ApiResult<T>>,
    {
        let ok = NewAuditEntry::ok(auth.actor, tenant, action, target);
        let result = op(ok.clone()).await;
        if let Err(e) = &result {
            if !e.recorded {
                let entry = ok.with_result(AuditResult::Error(e.message.clone()));
                let written = self.db(move |store| Ok(store.append_audit(&entry)?)).await;
                if let Err(e) = written {
                    tracing::error!(error = %e, action, "audit log write failed");
                }
            }
        }
        result
    }

    /// The shape of every state-changing route on one named entity: find `name` within
    /// `scope` (404 otherwise), run `op` on it with the entry to commit with its change,
    /// and audit the call as `action`, filed under the scope's tenant (see
    /// [`AppState::audited`]). `op` gets its own handle on the state, so it can own its
    /// future.
    pub async fn on_named<E, T, Fut>(
        &self,
        auth: &Auth,
        scope: E::Scope,
        action: &str,
        name: &str,
        op: impl FnOnce(AppState, E, NewAuditEntry) -> Fut,
    ) -> ApiResult<T>
    where
        E: Named,
        Fut: Future<Output = ApiResult<T>>,
    {
        self.audited(auth, scope.into(), action, name, |entry| async move {
            let entity = self.find::<E>(scope, name).await?;
            op(self.clone(), entity, entry).await
        })
        .await
    }

    /// Records a call that changes nothing in the store (image files, a console session)
    /// with its outcome, blocking on the store write: for code already off the async
    /// workers, or with nothing to commit the entry with.
    pub fn audit<T>(
        &self,
        auth: &Auth,
        tenant: Option<TenantId>,
        action: &str,
        target: &str,
        result: &ApiResult<T>,
    ) {
        let entry = audit_entry(auth, tenant, action, target, result);
        if let Err(e) = self.ctx.store.append_audit(&entry) {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }
}

impl AppState {
    /// [`AppState::audit`] from async code: the store write runs on the blocking pool.
    pub async fn audit_async<T>(
        &self,
        auth: &Auth,
        tenant: Option<TenantId>,
        action: &str,
        target: &str,
        result: &ApiResult<T>,
    ) {
        let entry = audit_entry(auth, tenant, action, target, result);
        let written = self.db(move |store| Ok(store.append_audit(&entry)?)).await;
        if let Err(e) = written {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }
}

fn audit_entry<T>(
    auth: &Auth,
    tenant: Option<TenantId>,
    action: &str,
    target: &str,
    result: &ApiResult<T>,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: auth.actor,
        tenant,
        action: action.to_string(),
        target: target.to_string(),
        result: match result {
            Ok(_) => hostel_state::AuditResult::Ok,
            Err(e) => hostel_state::AuditResult::Error(e.message.clone()),
        },
    }
}
