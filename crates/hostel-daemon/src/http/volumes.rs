//! The host's storage pool (operator: its devices) and the tenants' volumes: requests
//! parsed here, changes made by [`crate::service::volumes`].

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, Operator, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::volumes::{
    self as svc, DeviceView as SvcDevice, SnapshotOp, VolumeView as SvcVolume,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{
    AddDevice, AttachVolume, CreateSnapshot, CreateVolume, DeviceView, ResizeVolume, VolumeView,
};
use hostel_state::{VmName, VolumeName};

fn device_view(d: SvcDevice) -> DeviceView {
    DeviceView {
        path: d.device.path,
        state: d.device.state.to_string(),
        uuid: d.pool.as_ref().map(|p| p.uuid.clone()),
        failed: d.pool.as_ref().is_some_and(|p| p.failed),
        bytes: d.pool.as_ref().map_or(0, |p| p.bytes),
        free_bytes: d.pool.as_ref().map_or(0, |p| p.free_bytes),
    }
}

pub(super) fn volume_view(v: SvcVolume) -> VolumeView {
    let degraded_clusters = v.pool.as_ref().map_or(0, |p| p.degraded_clusters);
    VolumeView {
        name: v.volume.name.to_string(),
        size_bytes: v.volume.size_bytes,
        copies: v.volume.copies,
        vm: v.vm_name,
        state: v.volume.state.to_string(),
        allocated_bytes: v.pool.as_ref().map(|p| p.allocated),
        degraded: degraded_clusters > 0,
        degraded_clusters,
        snapshots: v.pool.map(|p| p.snapshots).unwrap_or_default(),
    }
}

pub(super) fn volume_name(field: &str, s: &str) -> ApiResult<VolumeName> {
    VolumeName::new(s).map_err(|e| ApiError::invalid(field, e.to_string()))
}

#[utoipa::path(post, path = "/v1/storage/devices", request_body = AddDevice,
    responses((status = 201, body = DeviceView), (status = 400, body = hostel_api::ApiErrorBody, description = "no such device, or the pool refused it (`field`: `path`)"),
              (status = 409, body = hostel_api::ApiErrorBody, description = "already in the pool")))]
pub async fn add_device(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<AddDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    let add = |entry| async {
        svc::add_device(&state.ctx, &body.path, entry)
            .await
            .map_err(ApiError::from)
    };
    let dev = state
        .audited(&auth, None, "storage.device.add", &body.path, add)
        .await?;
    let views = svc::list_devices(&state.ctx).await?;
    let view = views
        .into_iter()
        .find(|d| d.device.path == dev.path)
        .map(device_view)
        .ok_or_else(|| ApiError::internal("device vanished"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/storage/devices", responses((status = 200, body = [DeviceView])))]
pub async fn list_devices(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> ApiResult<Json<Vec<DeviceView>>> {
    let views = svc::list_devices(&state.ctx).await?;
    Ok(Json(views.into_iter().map(device_view).collect()))
}

#[utoipa::path(post, path = "/v1/storage/devices/remove", request_body = AddDevice,
    responses((status = 200, body = [DeviceView], description = "the devices left"),
              (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody, description = "the device holds pool data")))]
pub async fn remove_device(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<AddDevice>,
) -> ApiResult<Json<Vec<DeviceView>>> {
    let remove = |entry| async {
        svc::remove_device(&state.ctx, &body.path, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, None, "storage.device.remove", &body.path, remove)
        .await?;
    let views = svc::list_devices(&state.ctx).await?;
    Ok(Json(views.into_iter().map(device_view).collect()))
}

#[utoipa::path(post, path = "/v1/volumes", request_body = CreateVolume,
    responses((status = 201, body = VolumeView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "name taken, quota used up, or no pool on this host"),
              (status = 507, body = hostel_api::ApiErrorBody, description = "the pool is out of space")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateVolume>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let create = |entry| async {
        let name = volume_name("name", &body.name)?;
        svc::create(
            &state.ctx,
            tenant,
            name,
            body.size_bytes,
            body.copies,
            entry,
        )
        .await
        .map_err(ApiError::from)
    };
    let v = state
        .audited(&auth, Some(tenant), "volume.create", &body.name, create)
        .await?;
    Ok((StatusCode::CREATED, Json(volume_view(v))))
}

#[utoipa::path(get, path = "/v1/volumes", responses((status = 200, body = [VolumeView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<VolumeView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let vols = svc::list(&state.ctx, tenant).await?;
    Ok(Json(vols.into_iter().map(volume_view).collect()))
}

#[utoipa::path(get, path = "/v1/volumes/{name}", responses((status = 200, body = VolumeView), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VolumeView>> {
    let tenant = state.scope(&auth, &q).await?;
    let name = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
    Ok(Json(volume_view(
        svc::show(&state.ctx, tenant, name).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody),
    (status = 409, body = hostel_api::ApiErrorBody, description = "attached to a VM")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let delete = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
        svc::delete(&state.ctx, tenant, n, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "volume.delete", &name, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/attach", request_body = AttachVolume,
    responses((status = 200, body = VolumeView), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "attached already, or the VM is running (`field` says which)")))]
pub async fn attach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<AttachVolume>,
) -> ApiResult<Json<VolumeView>> {
    let tenant = state.scope(&auth, &q).await?;
    let attach = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
        let vm = VmName::new(&body.vm).map_err(|_| ApiError::not_found("vm", &body.vm))?;
        svc::attach(&state.ctx, tenant, n, vm, entry)
            .await
            .map_err(ApiError::from)
    };
    let v = state
        .audited(&auth, Some(tenant), "volume.attach", &name, attach)
        .await?;
    Ok(Json(volume_view(v)))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/detach",
    responses((status = 200, body = VolumeView), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "not attached, or the VM is running")))]
pub async fn detach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VolumeView>> {
    let tenant = state.scope(&auth, &q).await?;
    let detach = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
        svc::detach(&state.ctx, tenant, n, entry)
            .await
            .map_err(ApiError::from)
    };
    let v = state
        .audited(&auth, Some(tenant), "volume.detach", &name, detach)
        .await?;
    Ok(Json(volume_view(v)))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/resize", request_body = ResizeVolume,
    responses((status = 200, body = VolumeView), (status = 400, body = hostel_api::ApiErrorBody), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "quota, or the VM is running")))]
pub async fn resize(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<ResizeVolume>,
) -> ApiResult<Json<VolumeView>> {
    let tenant = state.scope(&auth, &q).await?;
    let resize = |entry| async {
        let n = volume_name("name", &name).map_err(|_| ApiError::not_found("volume", &name))?;
        svc::resize(&state.ctx, tenant, n, body.size_bytes, entry)
            .await
            .map_err(ApiError::from)
    };
    let v = state
        .audited(&auth, Some(tenant), "volume.resize", &name, resize)
        .await?;
    Ok(Json(volume_view(v)))
}

async fn snapshot_op(
    state: &AppState,
    auth: &Auth,
    q: &TenantQuery,
    name: &str,
    snap: &str,
    op: SnapshotOp,
    action: &str,
) -> ApiResult<VolumeView> {
    let tenant = state.scope(auth, q).await?;
    let target = format!("{name}@{snap}");
    let run = |entry| async {
        let n = volume_name("name", name).map_err(|_| ApiError::not_found("volume", name))?;
        let s = volume_name("snapshot", snap)?;
        svc::snapshot(&state.ctx, tenant, n, s, op, entry)
            .await
            .map_err(ApiError::from)
    };
    let v = state
        .audited(auth, Some(tenant), action, &target, run)
        .await?;
    Ok(volume_view(v))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", request_body = CreateSnapshot,
    responses((status = 201, body = VolumeView), (status = 400, body = hostel_api::ApiErrorBody), (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let v = snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &body.name,
        SnapshotOp::Create,
        "volume.snapshot.create",
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots/{snapshot}/restore",
    responses((status = 200, body = VolumeView), (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is running")))]
pub async fn restore_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, snap)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VolumeView>> {
    let v = snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &snap,
        SnapshotOp::Restore,
        "volume.snapshot.restore",
    )
    .await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}/snapshots/{snapshot}",
    responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, snap)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &snap,
        SnapshotOp::Delete,
        "volume.snapshot.delete",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn vm_snapshot_op(
    state: &AppState,
    auth: &Auth,
    q: &TenantQuery,
    vm: &str,
    snap: &str,
    op: crate::service::vm_snapshot::VmSnapshotOp,
    action: &str,
) -> ApiResult<Vec<VolumeView>> {
    let tenant = state.scope(auth, q).await?;
    let target = format!("{vm}@{snap}");
    let run = |entry| async {
        let name = VmName::new(vm).map_err(|_| ApiError::not_found("vm", vm))?;
        let s = volume_name("snapshot", snap)?;
        crate::service::vm_snapshot::vm_snapshot(
            &state.ctx,
            &state.supervisor,
            &state.agent(),
            (tenant, name),
            s,
            op,
            entry,
        )
        .await
        .map_err(ApiError::from)
    };
    let vols = state
        .audited(auth, Some(tenant), action, &target, run)
        .await?;
    Ok(vols.into_iter().map(volume_view).collect())
}

#[utoipa::path(post, path = "/v1/vms/{name}/snapshots", request_body = CreateSnapshot,
    responses((status = 201, body = [VolumeView], description = "the VM's volumes, each with the new snapshot"),
              (status = 400, body = hostel_api::ApiErrorBody), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "no pool volumes, or the name is taken")))]
pub async fn create_vm_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<Vec<VolumeView>>)> {
    let v = vm_snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &body.name,
        crate::service::vm_snapshot::VmSnapshotOp::Create,
        "vm.snapshot.create",
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(post, path = "/v1/vms/{name}/snapshots/{snapshot}/restore",
    responses((status = 200, body = [VolumeView]), (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is running")))]
pub async fn restore_vm_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, snap)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<VolumeView>>> {
    let v = vm_snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &snap,
        crate::service::vm_snapshot::VmSnapshotOp::Restore,
        "vm.snapshot.restore",
    )
    .await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/vms/{name}/snapshots/{snapshot}",
    responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn delete_vm_snapshot(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, snap)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    vm_snapshot_op(
        &state,
        &auth,
        &q,
        &name,
        &snap,
        crate::service::vm_snapshot::VmSnapshotOp::Delete,
        "vm.snapshot.delete",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
