//! VM routes, scoped to one tenant: a name outside it is simply not found.

use super::images::VmImage;
use super::{views, ApiJson, AppState, Auth, TenantQuery};
use crate::actor::grow_disk;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hostel_api::{CreateVm, NicView, ResizeVm, StopVm, VmView};
use hostel_state::{
    DesiredState, NewNic, NewVm, RestartPolicy, TenantId, Vm, VmName, VmSpecRecord,
};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
/// How often a follow stream looks for new console output: a read per interval is cheap,
/// and at 100 ms it added ~60 ms to every "is it up yet" (BENCHMARKS.md, bench-api).
const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// Idle polls between checks that a followed VM still exists (about one second).
const VM_GONE_CHECK_POLLS: u32 = 50;
/// The most of a console log one request returns (its tail).
const CONSOLE_TAIL: u64 = 1 << 20;

pub(super) fn find(state: &AppState, tenant: &TenantId, name: &str) -> ApiResult<Vm> {
    let n = VmName::new(name).map_err(|_| ApiError::not_found("vm", name))?;
    Ok(state.ctx.store.get_vm_by_name(tenant, &n)?)
}

fn view(state: &AppState, vm: &Vm) -> ApiResult<VmView> {
    let tenant = state.ctx.store.get_tenant(&vm.tenant)?;
    with_nics(state, views::vm(vm, tenant.name.as_str()), vm)
}

fn with_nics(state: &AppState, mut view: VmView, vm: &Vm) -> ApiResult<VmView> {
    for nic in state.ctx.store.list_nics_of_vm(&vm.id)? {
        let net = state.ctx.store.get_network(&nic.network)?;
        view.nics.push(NicView {
            network: net.name.to_string(),
            mac: nic.mac,
            ipv4: Some(nic.ipv4.to_string()),
        });
    }
    Ok(view)
}

/// The requested NICs, resolved within the tenant (another tenant's network is not found).
fn nics_from(state: &AppState, tenant: &TenantId, body: &CreateVm) -> ApiResult<Vec<NewNic>> {
    body.networks
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("networks[{i}]");
            let net = super::networks::find(state, tenant, &r.network)
                .map_err(|_| ApiError::invalid(&field, format!("no network {:?}", r.network)))?;
            let ipv4 =
                r.ip.as_deref()
                    .map(|ip| {
                        ip.parse().map_err(|_| {
                            ApiError::invalid(&field, format!("{ip:?} is not an IPv4 address"))
                        })
                    })
                    .transpose()?;
            Ok(NewNic {
                network: net.id,
                ipv4,
            })
        })
        .collect()
}

fn fresh(state: &AppState, vm: &Vm) -> ApiResult<Json<VmView>> {
    Ok(Json(view(state, &state.ctx.store.get_vm(&vm.id)?)?))
}

fn parse_policy(s: &str) -> ApiResult<RestartPolicy> {
    RestartPolicy::ALL
        .iter()
        .copied()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            ApiError::invalid(
                "restart_policy",
                format!("{s:?} is not never, on_failure or always"),
            )
        })
}

fn spec_from(state: &AppState, body: &CreateVm) -> ApiResult<(VmSpecRecord, VmImage)> {
    let image = super::images::resolve_for_vm(state, body)?;
    let memory = match &body.memory {
        None => image.default_memory_mib(),
        Some(m) => m.to_mib().map_err(|e| ApiError::invalid("memory", e))?,
    };
    let vcpus = body.vcpus.unwrap_or(1);
    if vcpus == 0 {
        return Err(ApiError::invalid("vcpus", "must be at least 1"));
    }
    if memory < hostel_engine::spec::MIN_MEMORY_MIB {
        return Err(ApiError::invalid(
            "memory",
            format!(
                "{memory} MiB is below the minimum of {} MiB",
                hostel_engine::spec::MIN_MEMORY_MIB
            ),
        ));
    }
    let disk_gib = body.disk_gib.unwrap_or(image.default_disk_gib());
    image.check_disk(disk_gib)?;
    let mut spec = VmSpecRecord::new(vcpus, memory, disk_gib, image.name.clone())?
        .with_cmdline(body.cmdline.clone())?;
    if let Some(p) = &body.restart_policy {
        spec = spec.with_restart_policy(parse_policy(p)?);
    }
    Ok((spec, image))
}

#[utoipa::path(post, path = "/v1/vms", request_body = CreateVm,
    responses((status = 201, body = VmView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<TenantQuery>,
    ApiJson(body): ApiJson<CreateVm>,
) -> ApiResult<(StatusCode, Json<VmView>)> {
    let tenant = state.scope(&auth, &q)?;
    let result = create_vm(&state, &tenant, &body).await;
    state.audit(&auth, Some(tenant), "vm.create", &body.name, &result);
    Ok((StatusCode::CREATED, result?))
}

async fn create_vm(
    state: &AppState,
    tenant: &TenantId,
    body: &CreateVm,
) -> ApiResult<Json<VmView>> {
    let name = VmName::new(&body.name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let (spec, image) = spec_from(state, body)?;
    let new = NewVm {
        name,
        spec,
        desired: DesiredState::Stopped,
    };
    let nics = nics_from(state, tenant, body)?;
    let (vm, _) = state
        .ctx
        .store
        .create_vm_with_nics_within_quota(tenant, &new, &nics)?;
    let made = match &image.os {
        Some(os) => super::images::make_vm_disks(state, &vm, body, os).await,
        None => {
            let disk = state.ctx.layout.vm_root_disk(tenant, &vm.id);
            grow_disk(&disk, vm.spec.disk_gib())
                .map_err(|e| ApiError::internal(format!("creating disk {}: {e}", disk.display())))
        }
    };
    if let Err(e) = made {
        // No half-made VM: without its disks the record goes too.
        let _ = state.ctx.store.delete_vm(&vm.id, None);
        let _ = std::fs::remove_dir_all(state.ctx.layout.vm_disk_dir(tenant, &vm.id));
        return Err(e);
    }
    if body.start.unwrap_or(true) {
        state.supervisor.start(&vm).await?;
    }
    fresh(state, &vm)
}

#[utoipa::path(get, path = "/v1/vms", responses((status = 200, body = [VmView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Vec<VmView>>> {
    let tenant = state.scope(&auth, &q)?;
    let name = state.ctx.store.get_tenant(&tenant)?.name;
    let vms = state.ctx.store.list_vms(&tenant)?;
    let views = vms
        .iter()
        .map(|v| with_nics(&state, views::vm(v, name.as_str()), v))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/vms/{name}", responses((status = 200, body = VmView), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q)?;
    Ok(Json(view(&state, &find(&state, &tenant, &name)?)?))
}

#[utoipa::path(patch, path = "/v1/vms/{name}", request_body = ResizeVm, responses((status = 200, body = VmView)))]
pub async fn resize(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
    ApiJson(body): ApiJson<ResizeVm>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q)?;
    let result = (|| {
        let vm = find(&state, &tenant, &name)?;
        let memory = match &body.memory {
            None => vm.spec.memory_mib(),
            Some(m) => m.to_mib().map_err(|e| ApiError::invalid("memory", e))?,
        };
        let disk = body.disk_gib.unwrap_or(vm.spec.disk_gib());
        if disk < vm.spec.disk_gib() {
            return Err(ApiError::invalid(
                "disk_gib",
                format!("a disk cannot shrink ({} GiB now)", vm.spec.disk_gib()),
            ));
        }
        if body.vcpus == Some(0) {
            return Err(ApiError::invalid("vcpus", "must be at least 1"));
        }
        let spec = vm
            .spec
            .resized(body.vcpus.unwrap_or(vm.spec.vcpus()), memory, disk)?;
        let vm = state
            .ctx
            .store
            .resize_vm_within_quota(&vm.id, &spec, None)?;
        view(&state, &vm)
    })();
    state.audit(&auth, Some(tenant), "vm.resize", &name, &result);
    Ok(Json(result?))
}

#[utoipa::path(delete, path = "/v1/vms/{name}", responses((status = 204)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q)?;
    let result = async {
        let vm = find(&state, &tenant, &name)?;
        state.supervisor.remove(&vm).await?;
        state.ctx.store.delete_vm(&vm.id, None)?;
        let _ = std::fs::remove_dir_all(state.ctx.layout.vm_disk_dir(&vm.tenant, &vm.id));
        let _ = std::fs::remove_dir_all(state.ctx.layout.vm_run_dir(&vm.id));
        // Its switch ports go with it.
        crate::networking::sync(&state.ctx)
            .await
            .map_err(ApiError::engine)
    }
    .await;
    state.audit(&auth, Some(tenant), "vm.delete", &name, &result);
    result.map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/vms/{name}/start", responses((status = 200, body = VmView)))]
pub async fn start(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q)?;
    let result = async {
        let vm = find(&state, &tenant, &name)?;
        state.supervisor.start(&vm).await?;
        fresh(&state, &vm)
    }
    .await;
    state.audit(&auth, Some(tenant), "vm.start", &name, &result);
    result
}

#[utoipa::path(post, path = "/v1/vms/{name}/stop", request_body = StopVm, responses((status = 200, body = VmView)))]
pub async fn stop(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
    ApiJson(body): ApiJson<StopVm>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q)?;
    let grace = body
        .timeout_secs
        .map_or(DEFAULT_STOP_GRACE, Duration::from_secs);
    let result = async {
        let vm = find(&state, &tenant, &name)?;
        state.supervisor.stop(&vm, body.force, grace).await?;
        fresh(&state, &vm)
    }
    .await;
    state.audit(&auth, Some(tenant), "vm.stop", &name, &result);
    result
}

#[utoipa::path(post, path = "/v1/vms/{name}/restart", responses((status = 200, body = VmView)))]
pub async fn restart(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q)?;
    let result = async {
        let vm = find(&state, &tenant, &name)?;
        state
            .supervisor
            .stop(&vm, false, DEFAULT_STOP_GRACE)
            .await?;
        state.supervisor.start(&vm).await?;
        fresh(&state, &vm)
    }
    .await;
    state.audit(&auth, Some(tenant), "vm.restart", &name, &result);
    result
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
    Path(name): Path<String>,
    Query(p): Query<ConsoleParams>,
) -> ApiResult<Response> {
    let tenant = state.scope(&auth, &TenantQuery { tenant: p.tenant })?;
    let vm = find(&state, &tenant, &name)?;
    let path =
        hostel_engine::RunDir::new(state.ctx.layout.vm_run_dir(&vm.id)).default_console_log();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ApiError::internal(format!("console log: {e}"))),
    };
    if let Some(f) = file.as_mut() {
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let _ = f
            .seek(std::io::SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL)))
            .await;
    }
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
        store: state.ctx.store.clone(),
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
            if f.idle_polls % VM_GONE_CHECK_POLLS == 0 && f.vm_deleted() {
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
    store: std::sync::Arc<dyn hostel_state::Store>,
    vm: hostel_state::VmId,
    idle_polls: u32,
}

impl Follow {
    fn vm_deleted(&self) -> bool {
        matches!(
            self.store.get_vm(&self.vm),
            Err(hostel_state::StoreError::NotFound { .. })
        )
    }
}
