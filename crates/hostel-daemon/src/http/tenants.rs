//! Tenants, their quotas and API tokens (operator only): requests parsed here, changes
//! made by [`crate::service::tenants`].

use super::ApiPath;
use super::{views, ApiJson, AppState, Auth, Operator};
use crate::error::{ApiError, ApiResult};
use crate::service::tenants::{TenantUsage, Tenants};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateTenant, CreateToken, QuotaBody, TenantView, TokenIssued};

fn view((t, usage): &TenantUsage) -> TenantView {
    views::tenant(t, usage)
}

#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    let quota = body.quota.as_ref().map(views::quota);
    let create = |entry| async {
        Tenants::new(&state.ctx.store)
            .create(&body.name, quota, entry)
            .await
            .map_err(ApiError::from)
    };
    let created = state
        .audited(&auth, None, "tenant.create", &body.name, create)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&created))))
}

#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
pub async fn list(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> ApiResult<Json<Vec<TenantView>>> {
    let tenants = Tenants::new(&state.ctx.store).list().await?;
    Ok(Json(tenants.iter().map(view).collect()))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", responses((status = 200, body = TenantView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    // A tenant may read its own record (usage against quota); nobody else's.
    let shown = Tenants::new(&state.ctx.store)
        .show(auth.tenant, &name)
        .await?;
    Ok(Json(view(&shown)))
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
    let set = |entry| async {
        let tenants = Tenants::new(&state.ctx.store);
        let t = tenants.find(None, &name).await?;
        Ok(tenants.set_quota(t.id, quota, entry).await?)
    };
    let updated = state.audited(&auth, None, "quota.set", &name, set).await?;
    Ok(Json(view(&updated)))
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
    let issue = |entry| async {
        let tenants = Tenants::new(&state.ctx.store);
        let t = tenants.find(None, &name).await?;
        let issued = tenants.issue_token(t.id, label.clone(), entry).await?;
        Ok::<_, ApiError>(TokenIssued {
            id: issued.token.id.to_string(),
            tenant: Some(t.name.to_string()),
            name: label.clone(),
            secret: issued.secret.expose().to_string(),
        })
    };
    let issued = state
        .audited(&auth, None, "token.create", &name, issue)
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
