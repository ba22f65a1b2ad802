//! VM routes, scoped to one tenant: a name outside it is simply not found.

use super::images::VmImage;
use super::revert::Revert;
use super::standby::Claim;
use super::{views, ApiJson, AppState, Auth, Named, TenantQuery};
use super::{ApiPath, ApiQuery};
use crate::actor::grow_disk;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hostel_api::{CreateVm, NicRequest, NicView, ResizeVm, StopVm, VmView};
use hostel_state::{
    slaac_address, AuditResult, DesiredState, Network, NewAuditEntry, NewNic, NewVm, RestartPolicy,
    Store, TenantId, Vm, VmId, VmName, VmSpecRecord,
};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
use crate::supervisor::MAX_STOP_GRACE;
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

/// The requested NICs, resolved within the tenant (another tenant's network is not found).
fn nics_from(
    store: &dyn Store,
    tenant: TenantId,
    requests: &[NicRequest],
) -> ApiResult<Vec<NewNic>> {
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("networks[{i}]");
            let net = Network::find(store, tenant, &r.network)
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

/// The VM as it is now: after an operation, its record has moved on from the one found.
async fn fresh(state: &AppState, id: VmId) -> ApiResult<VmView> {
    state
        .db(move |store| view(store, &store.get_vm(&id)?))
        .await
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

/// What every VM shape must be, at create and at resize alike: one the engine can boot
/// (a VM recorded with a shape no start can launch would only fail later, every time).
fn check_shape(vcpus: u32, memory_mib: u64, disk_gib: u64) -> ApiResult<()> {
    use hostel_engine::spec::{MAX_VCPUS, MIN_MEMORY_MIB};
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(ApiError::invalid(
            "vcpus",
            format!("{vcpus} is out of range (1-{MAX_VCPUS})"),
        ));
    }
    if memory_mib < MIN_MEMORY_MIB {
        return Err(ApiError::invalid(
            "memory",
            format!("{memory_mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB"),
        ));
    }
    if disk_gib == 0 {
        return Err(ApiError::invalid("disk_gib", "must be at least 1"));
    }
    // The upper bounds the store can hold are checked by `VmSpecRecord`.
    Ok(())
}

fn spec_from(state: &AppState, body: &CreateVm) -> ApiResult<(VmSpecRecord, VmImage)> {
    let image = super::images::resolve_for_vm(state, body)?;
    let memory = match &body.memory {
        None => image.default_memory_mib(),
        Some(m) => m.to_mib().map_err(|e| ApiError::invalid("memory", e))?,
    };
    let vcpus = body.vcpus.unwrap_or(1);
    let disk_gib = body.disk_gib.unwrap_or(image.default_disk_gib());
    check_shape(vcpus, memory, disk_gib)?;
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
              (status = 409, body = hostel_api::ApiErrorBody, description = "the name is taken, a quota or the host's capacity is used up, or an address is taken"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not start the VM (nothing of it is kept)")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateVm>,
) -> ApiResult<(StatusCode, Json<VmView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let view = state
        .audited(&auth, Some(tenant), "vm.create", &body.name, |entry| {
            create_vm(&state, tenant, &body, entry)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Records the VM (with `entry`), makes its disks and seed, gives the switch its ports
/// and starts it. A failure after the record exists undoes all of it through one
/// [`Revert`]: no record, disks, ports or quota usage are left, and the audit log gets
/// the failure in the same transaction as the record's removal.
async fn create_vm(
    state: &AppState,
    tenant: TenantId,
    body: &CreateVm,
    entry: NewAuditEntry,
) -> ApiResult<VmView> {
    let name = VmName::new(&body.name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    let (spec, image) = spec_from(state, body)?;
    // A standby of this shape, if the host keeps one: the VM gets its id and its boot.
    let standby = image
        .os
        .as_ref()
        .and_then(|_| super::standby::wanted_shape(body, &spec))
        .and_then(|shape| state.ctx.standby.take(&shape));
    let new = NewVm {
        id: standby.as_ref().map(|s| s.id),
        name,
        spec,
        desired: DesiredState::Stopped,
    };
    let requests = body.networks.clone();
    let record_entry = entry.clone();
    let created = state
        .db(move |store| {
            let nics = nics_from(store, tenant, &requests)?;
            let (vm, _) =
                store.create_vm_with_nics_within_quota(&tenant, &new, &nics, &record_entry)?;
            Ok(vm)
        })
        .await;
    let vm = match created {
        Ok(vm) => vm,
        Err(e) => {
            if let Some(sb) = standby {
                state.ctx.standby.put_back(sb);
            }
            return Err(e);
        }
    };
    let mut revert = Revert::new();
    {
        let (state, vm) = (state.clone(), vm.clone());
        revert.add("record", move |reason| async move {
            unmake(&state, &vm, entry, reason).await;
        });
    }
    match make_and_start(state, &vm, body, &image, standby, &mut revert).await {
        Ok(()) => {
            revert.success();
            fresh(state, vm.id).await
        }
        Err(mut e) => {
            revert.fail(&e.message).await;
            e.recorded = true;
            Err(e)
        }
    }
}

/// The part of a create after its record: disks (or a standby's), then the start.
async fn make_and_start(
    state: &AppState,
    vm: &Vm,
    body: &CreateVm,
    image: &VmImage,
    standby: Option<crate::standby::Standby>,
    revert: &mut Revert,
) -> ApiResult<()> {
    let mut running = false;
    match (&image.os, standby) {
        (Some(os), Some(sb)) => match super::standby::claim(state, vm, body, os, sb).await? {
            Claim::Taken => running = true,
            Claim::Declined => super::images::make_vm_disks(state, vm, body, os).await?,
        },
        (Some(os), None) => super::images::make_vm_disks(state, vm, body, os).await?,
        (None, _) => {
            let disk = state.ctx.layout.vm_root_disk(&vm.tenant, &vm.id);
            let gib = vm.spec.disk_gib();
            tokio::task::spawn_blocking(move || {
                grow_disk(&disk, gib).map_err(|e| {
                    ApiError::internal(format!("creating disk {}: {e}", disk.display()))
                })
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        }
    }
    if running || body.start.unwrap_or(true) {
        // A QEMU that runs it (a standby's, or one a start launched before failing) goes
        // before the record does.
        let (s, v) = (state.clone(), vm.clone());
        revert.add("qemu", move |_| async move {
            if let Err(e) = s.supervisor.remove(&v).await {
                tracing::warn!(vm = %v.id, error = %e, "stopping a failed create's VM");
            }
        });
    }
    if !running && body.start.unwrap_or(true) {
        state.supervisor.start(vm, None).await?;
    } else if !running {
        state.supervisor.created(vm).await?;
        // A start gives the switch the VM's ports; a VM created stopped gets them now (the
        // watchdog compares switch generations, not tables, so it would not notice them).
        if let Err(e) = crate::adapters::networking::sync(&state.ctx).await {
            tracing::warn!(vm = %vm.id, error = %e, "switch ports of a VM created stopped; the watchdog retries");
        }
    }
    Ok(())
}

/// Undoes a create's record: removes it (committing the failure to the audit log with
/// the removal), its disk and run directories, and its switch ports.
async fn unmake(state: &AppState, vm: &Vm, entry: NewAuditEntry, reason: String) {
    let (id, disks, run) = (
        vm.id,
        state.ctx.layout.vm_disk_dir(&vm.tenant, &vm.id),
        state.ctx.layout.vm_run_dir(&vm.id),
    );
    let failed = entry.with_result(AuditResult::Error(format!("{reason} (undone)")));
    let removed = state
        .ctx
        .db(move |store| {
            let removed = store.delete_vm(&id, None, &failed);
            let _ = std::fs::remove_dir_all(disks);
            let _ = std::fs::remove_dir_all(run);
            removed
        })
        .await;
    if let Err(e) = removed {
        tracing::error!(vm = %id, error = %e, "removing the record of a failed create");
    }
    if let Err(e) = crate::adapters::networking::sync(&state.ctx).await {
        tracing::warn!(vm = %id, error = %e, "switch ports of a failed create");
    }
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
    let resize = |state: AppState, vm: Vm, entry| async move {
        let memory = match &body.memory {
            None => vm.spec.memory_mib(),
            Some(m) => m.to_mib().map_err(|e| ApiError::invalid("memory", e))?,
        };
        let disk = body.disk_gib.unwrap_or(vm.spec.disk_gib());
        let vcpus = body.vcpus.unwrap_or(vm.spec.vcpus());
        check_shape(vcpus, memory, disk)?;
        if disk < vm.spec.disk_gib() {
            return Err(ApiError::invalid(
                "disk_gib",
                format!("a disk cannot shrink ({} GiB now)", vm.spec.disk_gib()),
            ));
        }
        let spec = vm.spec.resized(vcpus, memory, disk)?;
        state
            .db(move |store| {
                view(
                    store,
                    &store.resize_vm_within_quota(&vm.id, &spec, None, &entry)?,
                )
            })
            .await
    };
    let view = state
        .on_named(&auth, tenant, "vm.resize", &name, resize)
        .await?;
    Ok(Json(view))
}

#[utoipa::path(delete, path = "/v1/vms/{name}", responses((status = 204), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    // The delete is on record (with its audit entry) before anything is done; the
    // supervisor kills QEMU (over a stop under way) and removes disks, record and ports. A
    // daemon killed meanwhile finishes it at its next start.
    let delete = |state: AppState, vm: Vm, entry| async move {
        Ok::<_, ApiError>(state.supervisor.delete(&vm, entry).await?)
    };
    state
        .on_named(&auth, tenant, "vm.delete", &name, delete)
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
    let start = |state: AppState, vm: Vm, entry| async move {
        state.supervisor.start(&vm, Some(entry)).await?;
        fresh(&state, vm.id).await
    };
    let view = state
        .on_named(&auth, tenant, "vm.start", &name, start)
        .await?;
    Ok(Json(view))
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
    let grace = match body.timeout_secs {
        None => DEFAULT_STOP_GRACE,
        Some(t) if t > MAX_STOP_GRACE.as_secs() => {
            return Err(ApiError::invalid(
                "timeout_secs",
                format!("{t} is more than {} seconds", MAX_STOP_GRACE.as_secs()),
            ))
        }
        Some(t) => Duration::from_secs(t),
    };
    let stop = |state: AppState, vm: Vm, entry| async move {
        state
            .supervisor
            .stop(&vm, body.force, grace, Some(entry))
            .await?;
        fresh(&state, vm.id).await
    };
    let view = state
        .on_named(&auth, tenant, "vm.stop", &name, stop)
        .await?;
    Ok(Json(view))
}

#[utoipa::path(post, path = "/v1/vms/{name}/restart", responses((status = 200, body = VmView), (status = 409, body = hostel_api::ApiErrorBody, description = "the host has no room for it (host_capacity)"), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn restart(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let restart = |state: AppState, vm: Vm, entry| async move {
        // The entry goes with the call's one change on record (wanted running, a stop
        // pending): a restart cut anywhere is finished at the next start.
        state
            .supervisor
            .restart(&vm, DEFAULT_STOP_GRACE, entry)
            .await?;
        fresh(&state, vm.id).await
    };
    let view = state
        .on_named(&auth, tenant, "vm.restart", &name, restart)
        .await?;
    Ok(Json(view))
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
