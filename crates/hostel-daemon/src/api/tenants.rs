//! Tenants, their quotas and API tokens (operator only).

use super::{views, ApiJson, AppState, Auth};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateTenant, CreateToken, QuotaBody, TenantView, TokenIssued};
use hostel_state::{Quota, Tenant, TenantName};

const DEFAULT_QUOTA: Quota = Quota {
    max_vcpus: 4,
    max_memory_mib: 4096,
    max_disk_gib: 50,
    max_vms: 4,
};

fn find(state: &AppState, name: &str) -> ApiResult<Tenant> {
    let n = TenantName::new(name).map_err(|_| ApiError::not_found("tenant", name))?;
    Ok(state.ctx.store.get_tenant_by_name(&n)?)
}

fn view(state: &AppState, t: &Tenant) -> ApiResult<TenantView> {
    Ok(views::tenant(t, &state.ctx.store.tenant_usage(&t.id)?))
}

#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    auth.operator()?;
    let result = (|| {
        let name = TenantName::new(&body.name)?;
        let quota = body
            .quota
            .as_ref()
            .map(views::quota)
            .unwrap_or(DEFAULT_QUOTA);
        let t = state.ctx.store.create_tenant(&name, quota)?;
        view(&state, &t)
    })();
    state.audit(&auth, None, "tenant.create", &body.name, &result);
    Ok((StatusCode::CREATED, Json(result?)))
}

#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Vec<TenantView>>> {
    auth.operator()?;
    let tenants = state.ctx.store.list_tenants()?;
    let views = tenants
        .iter()
        .map(|t| view(&state, t))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", responses((status = 200, body = TenantView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<TenantView>> {
    let t = find(&state, &name)?;
    // A tenant may read its own record (usage against quota); nobody else's.
    if auth.tenant.is_some_and(|own| own != t.id) {
        return Err(ApiError::not_found("tenant", &name));
    }
    Ok(Json(view(&state, &t)?))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/quota", request_body = QuotaBody,
    responses((status = 200, body = TenantView)))]
pub async fn set_quota(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QuotaBody>,
) -> ApiResult<Json<TenantView>> {
    auth.operator()?;
    let result = (|| {
        let t = find(&state, &name)?;
        let t = state.ctx.store.set_quota(&t.id, views::quota(&body))?;
        view(&state, &t)
    })();
    state.audit(&auth, None, "quota.set", &name, &result);
    Ok(Json(result?))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", request_body = CreateToken,
    responses((status = 201, body = TokenIssued)))]
pub async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenIssued>)> {
    auth.operator()?;
    let label = body.name.unwrap_or_else(|| "default".into());
    let result = (|| {
        let t = find(&state, &name)?;
        let issued = state.ctx.store.issue_token(Some(&t.id), &label)?;
        Ok(TokenIssued {
            id: issued.token.id.to_string(),
            tenant: Some(t.name.to_string()),
            name: label.clone(),
            secret: issued.secret.expose().to_string(),
        })
    })();
    state.audit(&auth, None, "token.create", &name, &result);
    Ok((StatusCode::CREATED, Json(result?)))
}
