//! VM routes, scoped to one tenant (a name outside it is simply not found): requests
//! parsed here, operations done by [`crate::service::vms`], results mapped to views.

use super::{views, ApiJson, AppState, Auth, Named, TenantQuery};
use super::{ApiPath, ApiQuery};
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hostel_api::{CreateVm, NicView, ResizeVm, StopVm, VmView};
use hostel_state::{slaac_address, Store, Vm, VmId};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How often a follow stream looks for new console output: a read per interval is cheap,
/// and at 100 ms it added ~60 ms to every "is it up yet" (BENCHMARKS.md, bench-api).
const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// Idle polls between checks that a followed VM still exists (about one second).
const VM_GONE_CHECK_POLLS: u32 = 50;
/// The most of a console log one request returns (its tail).
const CONSOLE_TAIL: u64 = 1 << 20;

/// The API view of a VM: its tenant's name and its NICs joined in.
fn view(store: &dyn Store, vm: &Vm) -> ApiResult<VmView> {
    let tenant = store.get_tenant(&vm.tenant)?;
    with_nics(store, views::vm(vm, tenant.name.as_str()), vm)
}

fn with_nics(store: &dyn Store, mut view: VmView, vm: &Vm) -> ApiResult<VmView> {
    for nic in store.list_nics_of_vm(&vm.id)? {
        let net = store.get_network(&nic.network)?;
        view.nics.push(NicView {
            network: net.name.to_string(),
            ipv4: Some(nic.ipv4.to_string()),
            ipv6: net.subnet6.map(|p| slaac_address(&p, &nic.mac).to_string()),
            mac: nic.mac.to_string(),
        });
    }
    Ok(view)
}

/// The VM as it is now, as the API shows it.
async fn view_of(state: &AppState, vm: Vm) -> ApiResult<VmView> {
    state.db(move |store| view(store, &vm)).await
}

#[utoipa::path(post, path = "/v1/vms", request_body = CreateVm,
    responses((status = 201, body = VmView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the name is taken, a quota or the host's capacity is used up, or an address is taken"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not start the VM (nothing of it is kept)")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateVm>,
) -> ApiResult<(StatusCode, Json<VmView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let vm = state
        .audited(
            &auth,
            Some(tenant),
            "vm.create",
            &body.name,
            |entry| async { Ok(state.vms().create(tenant, &body, entry).await?) },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view_of(&state, vm).await?)))
}

#[utoipa::path(get, path = "/v1/vms", responses((status = 200, body = [VmView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<VmView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let views = state
        .db(move |store| {
            let name = store.get_tenant(&tenant)?.name;
            store
                .list_vms(&tenant)?
                .iter()
                .map(|v| with_nics(store, views::vm(v, name.as_str()), v))
                .collect()
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/vms/{name}", responses((status = 200, body = VmView), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let view = state
        .db(move |store| view(store, &Vm::find(store, tenant, &name)?))
        .await?;
    Ok(Json(view))
}

#[utoipa::path(patch, path = "/v1/vms/{name}", request_body = ResizeVm, responses((status = 200, body = VmView),
    (status = 409, body = hostel_api::ApiErrorBody, description = "the tenant's quota is used up")))]
pub async fn resize(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<ResizeVm>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let vm = state
        .audited(&auth, Some(tenant), "vm.resize", &name, |entry| async {
            Ok(state.vms().resize(tenant, &name, &body, entry).await?)
        })
        .await?;
    Ok(Json(view_of(&state, vm).await?))
}

#[utoipa::path(delete, path = "/v1/vms/{name}", responses((status = 204), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    state
        .audited(&auth, Some(tenant), "vm.delete", &name, |entry| async {
            Ok(state.vms().delete(tenant, &name, entry).await?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/vms/{name}/start", responses((status = 200, body = VmView), (status = 409, body = hostel_api::ApiErrorBody, description = "the host has no room for it (host_capacity)"), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn start(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let vm = state
        .audited(&auth, Some(tenant), "vm.start", &name, |entry| async {
            Ok(state.vms().start(tenant, &name, entry).await?)
        })
        .await?;
    Ok(Json(view_of(&state, vm).await?))
}

#[utoipa::path(post, path = "/v1/vms/{name}/stop", request_body = StopVm, responses((status = 200, body = VmView), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn stop(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<StopVm>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let vm = state
        .audited(&auth, Some(tenant), "vm.stop", &name, |entry| async {
            let svc = state.vms();
            Ok(svc
                .stop(tenant, &name, body.force, body.timeout_secs, entry)
                .await?)
        })
        .await?;
    Ok(Json(view_of(&state, vm).await?))
}

#[utoipa::path(post, path = "/v1/vms/{name}/restart", responses((status = 200, body = VmView), (status = 409, body = hostel_api::ApiErrorBody, description = "the host has no room for it (host_capacity)"), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn restart(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let vm = state
        .audited(&auth, Some(tenant), "vm.restart", &name, |entry| async {
            Ok(state.vms().restart(tenant, &name, entry).await?)
        })
        .await?;
    Ok(Json(view_of(&state, vm).await?))
}

#[derive(Debug, Deserialize)]
pub struct ConsoleParams {
    tenant: Option<String>,
    #[serde(default)]
    follow: bool,
}

#[utoipa::path(get, path = "/v1/vms/{name}/console",
    params(("follow" = Option<bool>, Query, description = "keep streaming new output")),
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn console(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(p): ApiQuery<ConsoleParams>,
) -> ApiResult<Response> {
    let tenant = state
        .scope(&auth, &TenantQuery { tenant: p.tenant })
        .await?;
    let vm: Vm = state.find(tenant, &name).await?;
    let run = hostel_engine::RunDir::new(state.ctx.layout.vm_run_dir(&vm.id));
    let path = run.default_console_log();
    let mut file = tokio::task::spawn_blocking(move || run.console_tail(CONSOLE_TAIL))
        .await
        .map_err(|e| ApiError::internal(format!("console log: {e}")))?
        .map_err(|e| ApiError::internal(format!("console log: {e}")))?
        .map(tokio::fs::File::from_std);
    let text = |body| {
        Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    if !p.follow {
        let mut buf = Vec::new();
        if let Some(f) = file.as_mut() {
            f.read_to_end(&mut buf)
                .await
                .map_err(|e| ApiError::internal(format!("console log: {e}")))?;
        }
        return text(Body::from(buf));
    }
    // Follow: stream what is there, then whatever the guest writes next. The log is a plain
    // file QEMU appends to, so new output is picked up by re-reading every `FOLLOW_POLL`.
    // The stream ends (after the last output) once the VM is deleted: its log is gone and
    // nothing will ever be appended, so a client must not be left waiting.
    let follow = Follow {
        file,
        path,
        ctx: state.ctx.clone(),
        vm: vm.id,
        idle_polls: 0,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if f.file.is_none() {
                f.file = tokio::fs::File::open(&f.path).await.ok();
            }
            if let Some(file) = f.file.as_mut() {
                match file.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        buf.truncate(n);
                        f.idle_polls = 0;
                        return Some((Ok::<_, std::io::Error>(buf), f));
                    }
                    Err(e) => {
                        f.file = None;
                        return Some((Err(e), f));
                    }
                }
            }
            f.idle_polls += 1;
            if f.idle_polls % VM_GONE_CHECK_POLLS == 0 && f.vm_deleted().await {
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    text(Body::from_stream(stream))
}

/// A console follow stream's position and what it needs to notice the VM going away.
struct Follow {
    file: Option<tokio::fs::File>,
    path: std::path::PathBuf,
    ctx: std::sync::Arc<crate::Ctx>,
    vm: VmId,
    idle_polls: u32,
}

impl Follow {
    async fn vm_deleted(&self) -> bool {
        let vm = self.vm;
        matches!(
            self.ctx.db(move |store| store.get_vm(&vm)).await,
            Err(hostel_state::StoreError::NotFound { .. })
        )
    }
}
