//! VPS routes, scoped to one tenant like VMs' (another tenant's VPS is not found): the
//! request is a [`CreateVm`], the answer a [`VmView`]; the operations are
//! [`crate::service::vps`]'s.

use super::{views, ApiJson, AppState, Auth, TenantQuery};
use super::{ApiPath, ApiQuery};
use crate::error::ApiResult;
use crate::service::vps::Vpss;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateVm, ExecVps, ExecVpsResult, VmView};
use hostel_state::{slaac_address, Store, Vm};

/// The most of a VPS's console log one request returns (its tail).
const CONSOLE_TAIL: u64 = 1 << 20;

fn view(store: &dyn Store, vm: &Vm) -> ApiResult<VmView> {
    let tenant = store.get_tenant(&vm.tenant)?;
    let mut view = views::vm(vm, tenant.name.as_str());
    for nic in store.list_nics_of_vm(&vm.id)? {
        let net = store.get_network(&nic.network)?;
        view.nics.push(hostel_api::NicView {
            network: net.name.to_string(),
            ipv4: Some(nic.ipv4.to_string()),
            ipv6: net.subnet6.map(|p| slaac_address(&p, &nic.mac).to_string()),
            mac: nic.mac.to_string(),
        });
    }
    Ok(view)
}

async fn view_of(state: &AppState, vm: Vm) -> ApiResult<VmView> {
    state.db(move |store| view(store, &vm)).await
}

#[utoipa::path(post, path = "/v1/vpss", request_body = CreateVm,
    responses((status = 201, body = VmView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the name is taken (by a VM or a VPS) or a quota is used up"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the host could not make or start the container (nothing of it is kept)")))]
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
            "vps.create",
            &body.name,
            |entry| async { Ok(Vpss::new(&state.ctx).create(tenant, &body, entry).await?) },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view_of(&state, vm).await?)))
}

#[utoipa::path(get, path = "/v1/vpss", responses((status = 200, body = [VmView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<VmView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let views = state
        .db(move |store| {
            store
                .list_vpss(&tenant)?
                .iter()
                .map(|r| view(store, &r.vm))
                .collect()
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/v1/vpss/{name}", responses((status = 200, body = VmView), (status = 404, body = hostel_api::ApiErrorBody), (status = 422, body = hostel_api::ApiErrorBody, description = "runc could not be asked for its state")))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<VmView>> {
    let tenant = state.scope(&auth, &q).await?;
    let svc = Vpss::new(&state.ctx);
    let rec = svc.find(tenant, &name).await?;
    let vm = svc.refresh(rec.vm).await?;
    Ok(Json(view_of(&state, vm).await?))
}

macro_rules! lifecycle {
    ($fn:ident, $path:literal, $action:literal) => {
        #[utoipa::path(post, path = $path, responses((status = 200, body = VmView), (status = 404, body = hostel_api::ApiErrorBody), (status = 422, body = hostel_api::ApiErrorBody, description = "the host could not do it; `message` says why")))]
        pub async fn $fn(
            State(state): State<AppState>,
            auth: Auth,
            ApiPath(name): ApiPath<String>,
            ApiQuery(q): ApiQuery<TenantQuery>,
        ) -> ApiResult<Json<VmView>> {
            let tenant = state.scope(&auth, &q).await?;
            let vm = state
                .audited(&auth, Some(tenant), $action, &name, |entry| async {
                    Ok(Vpss::new(&state.ctx).$fn(tenant, &name, entry).await?)
                })
                .await?;
            Ok(Json(view_of(&state, vm).await?))
        }
    };
}

lifecycle!(start, "/v1/vpss/{name}/start", "vps.start");
lifecycle!(stop, "/v1/vpss/{name}/stop", "vps.stop");
lifecycle!(restart, "/v1/vpss/{name}/restart", "vps.restart");

#[utoipa::path(delete, path = "/v1/vpss/{name}", responses((status = 204), (status = 404, body = hostel_api::ApiErrorBody), (status = 422, body = hostel_api::ApiErrorBody, description = "the host could not remove it; `message` says why")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    state
        .audited(&auth, Some(tenant), "vps.delete", &name, |entry| async {
            Ok(Vpss::new(&state.ctx).delete(tenant, &name, entry).await?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/vpss/{name}/exec", request_body = ExecVps, responses((status = 200, body = ExecVpsResult), (status = 400, body = hostel_api::ApiErrorBody), (status = 404, body = hostel_api::ApiErrorBody), (status = 409, body = hostel_api::ApiErrorBody, description = "the VPS is not running"), (status = 422, body = hostel_api::ApiErrorBody, description = "runc could not run it")))]
pub async fn exec(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<ExecVps>,
) -> ApiResult<Json<ExecVpsResult>> {
    let tenant = state.scope(&auth, &q).await?;
    let out = state
        .audited(&auth, Some(tenant), "vps.exec", &name, |entry| async {
            Ok(Vpss::new(&state.ctx)
                .exec(tenant, &name, &body, entry)
                .await?)
        })
        .await?;
    Ok(Json(out))
}

#[utoipa::path(get, path = "/v1/vpss/{name}/console", responses((status = 200, body = String, description = "the tail of PID 1's output"), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn console(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<String> {
    use std::io::{Read, Seek, SeekFrom};
    let tenant = state.scope(&auth, &q).await?;
    let rec = Vpss::new(&state.ctx).find(tenant, &name).await?;
    let log = crate::adapters::vps::VpsHost::new(&state.ctx.layout)
        .paths(&rec.vm.id)
        .log;
    let text = tokio::task::spawn_blocking(move || {
        let Ok(mut f) = std::fs::File::open(&log) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL)));
        let mut buf = Vec::new();
        let _ = f.take(CONSOLE_TAIL).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap_or_default();
    Ok(text)
}
