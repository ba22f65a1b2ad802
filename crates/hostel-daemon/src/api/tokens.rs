//! API tokens: listing and revoking. The operator sees and revokes any tenant's; a tenant
//! its own (another tenant's token is not found). Issuing is the operator's
//! (`POST /v1/tenants/{tenant}/tokens`).

use super::{ApiPath, ApiQuery, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::TokenView;
use hostel_state::{ApiToken, Store, StoreError, TenantId, TenantName, TokenId};
use std::collections::HashMap;

fn view(t: &ApiToken, names: &HashMap<TenantId, String>) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        tenant: t.tenant.and_then(|id| names.get(&id).cloned()),
        name: t.name.clone(),
        created_at: t.created_at.to_string(),
    }
}

#[utoipa::path(get, path = "/v1/tokens",
    description = "The caller's tenant's tokens; for the operator every token, or the \
        named tenant's.",
    responses((status = 200, body = [TokenView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let own = auth.tenant;
    let views = state
        .db(move |store| {
            let names: HashMap<TenantId, String> = store
                .list_tenants()?
                .into_iter()
                .map(|t| (t.id, t.name.to_string()))
                .collect();
            let filter = match (own, &q.tenant) {
                (Some(own), None) => Some(own),
                (own, Some(name)) => {
                    let t = TenantName::new(name)
                        .ok()
                        .and_then(|n| store.get_tenant_by_name(&n).ok())
                        .filter(|t| own.is_none_or(|o| o == t.id))
                        .ok_or_else(|| ApiError::not_found("tenant", name))?;
                    Some(t.id)
                }
                (None, None) => None,
            };
            let tokens = match filter {
                Some(t) => store.list_tokens(Some(&t))?,
                None => store.list_tokens(None)?,
            };
            Ok(tokens.iter().map(|t| view(t, &names)).collect())
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}",
    description = "Revoke a token: the next call presenting its secret is unauthorized. \
        A tenant may revoke its own tokens (the one it calls with included); the \
        operator's own token is the daemon's to manage (`operator.token`).",
    responses((status = 204, description = "revoked"),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the operator's token")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let own = auth.tenant;
    let lookup = {
        let id = id.clone();
        state.db(move |store| Ok(visible(store, own, &id))).await?
    };
    // Filed under the token's tenant, so that tenant's trail shows its revocations.
    let tenant = lookup.as_ref().ok().and_then(|t| t.tenant).or(own);
    let st = state.clone();
    st.audited(&auth, tenant, "token.delete", &id, |entry| async move {
        let token = lookup?;
        if token.tenant.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the operator's token is the daemon's own (operator.token): delete \
                     that file and restart the daemon to replace it",
            ));
        }
        state
            .db(move |store| Ok(store.delete_token(&token.id, &entry)?))
            .await?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The token `id` if the caller may see it: any for the operator, its own for a tenant.
fn visible(store: &dyn Store, own: Option<TenantId>, id: &str) -> ApiResult<ApiToken> {
    let missing = || ApiError::not_found("token", id);
    let id: TokenId = id.parse().map_err(|_| missing())?;
    let token = store
        .get_token(&id)
        .map_err(|e| not_found_only(e, missing))?;
    if own.is_some() && token.tenant != own {
        return Err(missing());
    }
    Ok(token)
}

/// A token that is not there is a 404; any other store failure stays what it is (a 500),
/// not a 404 that would tell the caller the token does not exist.
fn not_found_only(e: StoreError, missing: impl FnOnce() -> ApiError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => missing(),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_token_is_a_404() {
        let missing = || ApiError::not_found("token", "t");
        let nf = not_found_only(
            StoreError::NotFound {
                kind: hostel_state::EntityKind::Token,
                name: "t".into(),
            },
            missing,
        );
        assert_eq!(nf.status, StatusCode::NOT_FOUND);
        let backend = not_found_only(StoreError::Backend("disk I/O error".into()), missing);
        assert_eq!(backend.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
