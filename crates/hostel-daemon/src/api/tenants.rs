//! Tenants, their quotas and API tokens (operator only).

use super::ApiPath;
use super::{views, ApiJson, AppState, Auth, Named, Operator};
use crate::error::ApiResult;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateTenant, CreateToken, QuotaBody, TenantView, TokenIssued};
use hostel_state::{Quota, Store, Tenant, TenantName};

const DEFAULT_QUOTA: Quota = Quota {
    max_vcpus: 4,
    max_memory_mib: 4096,
    max_disk_gib: 50,
    max_vms: 4,
    max_networks: hostel_api::DEFAULT_MAX_NETWORKS,
    max_uplinks: hostel_api::DEFAULT_MAX_UPLINKS,
};

/// The API view of a tenant: its record with its usage against quota.
fn view(store: &dyn Store, t: &Tenant) -> ApiResult<TenantView> {
    Ok(views::tenant(t, &store.tenant_usage(&t.id)?))
}

#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    let create = |entry| async {
        let name = TenantName::new(&body.name)?;
        let quota = body
            .quota
            .as_ref()
            .map(views::quota)
            .unwrap_or(DEFAULT_QUOTA);
        state
            .db(move |store| view(store, &store.create_tenant(&name, quota, &entry)?))
            .await
    };
    let view = state
        .audited(&auth, None, "tenant.create", &body.name, create)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
pub async fn list(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> ApiResult<Json<Vec<TenantView>>> {
    let views = state
        .db(|store| {
            store
                .list_tenants()?
                .iter()
                .map(|t| view(store, t))
                .collect()
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", responses((status = 200, body = TenantView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    // A tenant may read its own record (usage against quota); nobody else's.
    let own = auth.tenant;
    let view = state
        .db(move |store| view(store, &Tenant::find(store, own, &name)?))
        .await?;
    Ok(Json(view))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/quota", request_body = QuotaBody,
    responses((status = 200, body = TenantView)))]
pub async fn set_quota(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<QuotaBody>,
) -> ApiResult<Json<TenantView>> {
    let quota = views::quota(&body);
    let set = |state: AppState, t: Tenant, entry| async move {
        state
            .db(move |store| view(store, &store.set_quota(&t.id, quota, &entry)?))
            .await
    };
    let view = state.on_named(&auth, None, "quota.set", &name, set).await?;
    Ok(Json(view))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", request_body = CreateToken,
    responses((status = 201, body = TokenIssued)))]
pub async fn create_token(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenIssued>)> {
    let label = body.name.unwrap_or_else(|| "default".into());
    let issue = |state: AppState, t: Tenant, entry| async move {
        state
            .db(move |store| {
                let issued = store.issue_token(Some(&t.id), &label, &entry)?;
                Ok(TokenIssued {
                    id: issued.token.id.to_string(),
                    tenant: Some(t.name.to_string()),
                    name: label,
                    secret: issued.secret.expose().to_string(),
                })
            })
            .await
    };
    let issued = state
        .on_named(&auth, None, "token.create", &name, issue)
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
