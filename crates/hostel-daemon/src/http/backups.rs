//! A tenant's backups of its volumes' snapshots, and the operator's storage quota of a
//! tenant: requests parsed here, changes made by [`crate::service::backups`] and the store.

use super::volumes::{volume_name, volume_view};
use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, Operator, TenantQuery};
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::VolumeView;

fn backup_view(b: crate::service::backups::BackupMeta) -> hostel_api::BackupView {
    hostel_api::BackupView {
        name: b.name,
        volume: b.volume,
        snapshot: b.snapshot,
        base: b.base,
        size_bytes: b.size_bytes,
        file_bytes: b.file_bytes,
    }
}

#[utoipa::path(post, path = "/v1/volumes/{name}/backups", request_body = hostel_api::CreateBackup,
    responses((status = 201, body = hostel_api::BackupView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 404, body = hostel_api::ApiErrorBody, description = "no such volume or snapshot"),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the backup name is taken")))]
pub async fn create_backup(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<hostel_api::CreateBackup>,
) -> ApiResult<(StatusCode, Json<hostel_api::BackupView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let run = |entry| async {
        let v = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
        let bk = volume_name("name", &body.name)?;
        let snap = volume_name("snapshot", &body.snapshot)?;
        let base = body
            .base
            .as_deref()
            .map(|b| volume_name("base", b))
            .transpose()?;
        crate::service::backups::export(&state.ctx, tenant, v, snap, base, bk, entry)
            .await
            .map_err(ApiError::from)
    };
    let b = state
        .audited(&auth, Some(tenant), "volume.backup", &name, run)
        .await?;
    Ok((StatusCode::CREATED, Json(backup_view(b))))
}

#[utoipa::path(get, path = "/v1/backups", responses((status = 200, body = [hostel_api::BackupView])))]
pub async fn list_backups(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<hostel_api::BackupView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let ctx = state.ctx.clone();
    let list = tokio::task::spawn_blocking(move || crate::service::backups::list(&ctx, tenant))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(list.into_iter().map(backup_view).collect()))
}

#[utoipa::path(delete, path = "/v1/backups/{name}", responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn delete_backup(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let run = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("backup", &name))?;
        crate::service::backups::delete(&state.ctx, tenant, n, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "backup.delete", &name, run)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/backups/{name}/restore", request_body = hostel_api::RestoreBackup,
    responses((status = 201, body = VolumeView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody, description = "the volume name is taken, or quota")))]
pub async fn restore_backup(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<hostel_api::RestoreBackup>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let run = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("backup", &name))?;
        let into = volume_name("volume", &body.volume)?;
        crate::service::backups::restore(&state.ctx, tenant, n, into, entry)
            .await
            .map_err(ApiError::from)
    };
    let v = state
        .audited(&auth, Some(tenant), "backup.restore", &name, run)
        .await?;
    Ok((StatusCode::CREATED, Json(volume_view(v))))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/storage_quota",
    responses((status = 200, body = hostel_api::StorageQuotaBody), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn storage_quota(
    State(state): State<AppState>,
    Operator(_): Operator,
    ApiPath(tenant): ApiPath<String>,
) -> ApiResult<Json<hostel_api::StorageQuotaBody>> {
    let t = crate::service::tenants::Tenants::new(&state.ctx.store)
        .find(None, &tenant)
        .await?;
    let q = state.db(move |s| Ok(s.get_storage_quota(&t.id)?)).await?;
    Ok(Json(hostel_api::StorageQuotaBody {
        max_volume_bytes: q.max_volume_bytes,
        max_volume_allocated_bytes: q.max_volume_allocated_bytes,
    }))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/storage_quota", request_body = hostel_api::StorageQuotaBody,
    responses((status = 200, body = hostel_api::StorageQuotaBody), (status = 400, body = hostel_api::ApiErrorBody), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn set_storage_quota(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<hostel_api::StorageQuotaBody>,
) -> ApiResult<Json<hostel_api::StorageQuotaBody>> {
    let set = |entry| async {
        for (field, v) in [
            ("max_volume_bytes", body.max_volume_bytes),
            (
                "max_volume_allocated_bytes",
                body.max_volume_allocated_bytes,
            ),
        ] {
            if v > i64::MAX as u64 {
                return Err(ApiError::invalid(field, "at most 2^63 - 1"));
            }
        }
        let t = crate::service::tenants::Tenants::new(&state.ctx.store)
            .find(None, &tenant)
            .await?;
        let q = hostel_state::StorageQuota {
            max_volume_bytes: body.max_volume_bytes,
            max_volume_allocated_bytes: body.max_volume_allocated_bytes,
        };
        state
            .db(move |s| Ok(s.set_storage_quota(&t.id, q, &entry)?))
            .await
    };
    let q = state
        .audited(&auth, None, "quota.storage.set", &tenant, set)
        .await?;
    Ok(Json(hostel_api::StorageQuotaBody {
        max_volume_bytes: q.max_volume_bytes,
        max_volume_allocated_bytes: q.max_volume_allocated_bytes,
    }))
}
