//! API tokens: listing and revoking, parsed here and done by [`crate::service::tokens`].
//! Issuing is the operator's (`POST /v1/tenants/{tenant}/tokens`).

use super::{ApiPath, ApiQuery, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::tokens::Tokens;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::TokenView;

#[utoipa::path(get, path = "/v1/tokens",
    description = "The caller's tenant's tokens; for the operator every token, or the \
        named tenant's.",
    responses((status = 200, body = [TokenView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    let listed = Tokens::new(&state.ctx.store)
        .list(auth.tenant, q.tenant)
        .await?;
    let views = listed
        .tokens
        .iter()
        .map(|t| TokenView {
            id: t.id.to_string(),
            tenant: t
                .tenant
                .and_then(|id| listed.tenant_names.get(&id).cloned()),
            name: t.name.clone(),
            created_at: t.created_at.to_string(),
        })
        .collect();
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
    let tokens = Tokens::new(&state.ctx.store);
    let lookup = tokens.find(auth.tenant, &id).await;
    // Filed under the token's tenant, so that tenant's trail shows its revocations.
    let tenant = lookup.as_ref().ok().and_then(|t| t.tenant).or(auth.tenant);
    let revoke = |entry| async { tokens.revoke(lookup?, entry).await.map_err(ApiError::from) };
    state
        .audited(&auth, tenant, "token.delete", &id, revoke)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
