//! API tokens: listing and revoking. The operator sees and revokes any tenant's; a tenant
//! its own (another tenant's token is not found, as is one that does not exist).

use super::{blocking, DaemonError};
use hostel_state::{
    ApiToken, EntityKind, NewAuditEntry, Store, StoreError, TenantId, TenantName, TokenId,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The tokens a listing returns, with the names of the tenants they belong to.
pub struct TokenList {
    pub tokens: Vec<ApiToken>,
    pub tenant_names: HashMap<TenantId, String>,
}

pub struct Tokens<'a> {
    store: &'a Arc<dyn Store>,
}

impl<'a> Tokens<'a> {
    pub fn new(store: &'a Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The tokens `own` may see: a tenant its own; the operator (`own` is `None`) every
    /// token, or those of the tenant named in `filter`. A tenant naming another tenant
    /// finds nothing (not found, as for a tenant that does not exist).
    pub async fn list(
        &self,
        own: Option<TenantId>,
        filter: Option<String>,
    ) -> Result<TokenList, DaemonError> {
        Ok(blocking(self.store, move |store| {
            let tenant_names: HashMap<TenantId, String> = store
                .list_tenants()?
                .into_iter()
                .map(|t| (t.id, t.name.to_string()))
                .collect();
            let scope = match (own, &filter) {
                (Some(own), None) => Some(own),
                (own, Some(name)) => {
                    let t = TenantName::new(name)
                        .ok()
                        .and_then(|n| store.get_tenant_by_name(&n).ok())
                        .filter(|t| own.is_none_or(|o| o == t.id))
                        .ok_or_else(|| StoreError::NotFound {
                            kind: EntityKind::Tenant,
                            name: name.clone(),
                        })?;
                    Some(t.id)
                }
                (None, None) => None,
            };
            let tokens = store.list_tokens(scope.as_ref())?;
            Ok::<_, StoreError>(TokenList {
                tokens,
                tenant_names,
            })
        })
        .await?)
    }

    /// The token `id` if `own` may see it: any for the operator, its own for a tenant.
    /// A malformed id, a missing token and another tenant's are the same not-found; any
    /// other store failure stays what it is, not a not-found that would mislead.
    pub async fn find(&self, own: Option<TenantId>, id: &str) -> Result<ApiToken, DaemonError> {
        let id = id.to_owned();
        Ok(blocking(self.store, move |store| visible(store, own, &id)).await?)
    }

    /// Revokes `token` (found with [`Tokens::find`]), with `audit` in the same
    /// transaction: the next call presenting its secret is unauthorized. The operator's
    /// own token is the daemon's to manage and is refused.
    pub async fn revoke(&self, token: ApiToken, audit: NewAuditEntry) -> Result<(), DaemonError> {
        if token.tenant.is_none() {
            return Err(DaemonError::OperatorToken);
        }
        blocking(self.store, move |store| {
            store.delete_token(&token.id, &audit)
        })
        .await?;
        Ok(())
    }
}

fn visible(store: &dyn Store, own: Option<TenantId>, id: &str) -> Result<ApiToken, StoreError> {
    let missing = || StoreError::NotFound {
        kind: EntityKind::Token,
        name: id.to_string(),
    };
    let parsed: TokenId = id.parse().map_err(|_| missing())?;
    let token = store.get_token(&parsed).map_err(|e| match e {
        StoreError::NotFound { .. } => missing(),
        e => e,
    })?;
    if own.is_some() && token.tenant != own {
        return Err(missing());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tenants::tests::{audit, entry, fixture};
    use crate::service::tenants::Tenants;
    use hostel_state::AuditResult;

    #[tokio::test]
    async fn issue_list_and_revoke_a_token() {
        let f = fixture();
        let tenants = Tenants::new(&f.store);
        let tokens = Tokens::new(&f.store);
        let (acme, _) = tenants
            .create("acme", None, entry("tenant.create", "acme"))
            .await
            .unwrap();
        let (other, _) = tenants
            .create("other", None, entry("tenant.create", "other"))
            .await
            .unwrap();
        let issued = tenants
            .issue_token(acme.id, "ci".into(), entry("token.create", "acme"))
            .await
            .unwrap();
        let secret = issued.secret.expose().to_string();
        assert!(
            f.store.authenticate(&secret).unwrap().is_some(),
            "the secret works"
        );

        let mine = tokens.list(Some(acme.id), None).await.unwrap();
        assert_eq!(mine.tokens.len(), 1);
        assert_eq!(mine.tokens[0].name, "ci");
        assert_eq!(
            mine.tenant_names.get(&acme.id).map(String::as_str),
            Some("acme")
        );
        assert!(tokens
            .list(Some(other.id), None)
            .await
            .unwrap()
            .tokens
            .is_empty());
        let err = tokens
            .list(Some(other.id), Some("acme".into()))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "another tenant's tokens are not found: {err:?}"
        );

        let id = issued.token.id.to_string();
        let err = tokens.find(Some(other.id), &id).await.unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        let token = tokens.find(Some(acme.id), &id).await.unwrap();
        tokens
            .revoke(token, entry("token.delete", &id))
            .await
            .unwrap();
        assert!(
            f.store.authenticate(&secret).unwrap().is_none(),
            "the secret is revoked"
        );
        assert!(tokens
            .list(None, Some("acme".into()))
            .await
            .unwrap()
            .tokens
            .is_empty());
        let err = tokens.find(None, &id).await.unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
        let actions: Vec<_> = audit(&f).into_iter().map(|(a, _, r)| (a, r)).collect();
        assert!(actions.contains(&("token.create".into(), AuditResult::Ok)));
        assert!(actions.contains(&("token.delete".into(), AuditResult::Ok)));
    }

    #[tokio::test]
    async fn the_operator_token_is_not_revoked() {
        let f = fixture();
        let op = f
            .store
            .issue_token(None, "operator", &entry("token.create", "operator"))
            .unwrap();
        let tokens = Tokens::new(&f.store);
        let token = tokens.find(None, &op.token.id.to_string()).await.unwrap();
        let before = audit(&f).len();
        let err = tokens
            .revoke(token, entry("token.delete", "operator"))
            .await
            .unwrap_err();
        assert!(matches!(err, DaemonError::OperatorToken), "{err:?}");
        assert!(
            f.store.authenticate(op.secret.expose()).unwrap().is_some(),
            "still valid"
        );
        assert_eq!(audit(&f).len(), before, "nothing committed");
    }

    #[tokio::test]
    async fn a_malformed_token_id_is_not_found() {
        let f = fixture();
        let err = Tokens::new(&f.store)
            .find(None, "not-an-id")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DaemonError::Store(StoreError::NotFound { .. })),
            "{err:?}"
        );
    }
}
