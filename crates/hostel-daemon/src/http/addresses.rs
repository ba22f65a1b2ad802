//! A tenant's public addresses: requests parsed here, changes made by
//! [`crate::service::addresses`]. Another tenant's address is not found, like one that
//! does not exist.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::addresses::Addresses;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{AddressView, AllocateAddress, AttachAddress};
use hostel_state::{PublicAddress, Store, Vm};
use std::net::Ipv4Addr;

fn view(store: &dyn Store, a: &PublicAddress) -> ApiResult<AddressView> {
    let (vm, private) = match a.attached {
        Some((vm, idx)) => {
            let name = store.get_vm(&vm)?.name.to_string();
            let nic = store
                .list_nics_of_vm(&vm)?
                .into_iter()
                .find(|n| n.idx == idx);
            (Some(name), nic.map(|n| n.ipv4.to_string()))
        }
        None => (None, None),
    };
    Ok(AddressView {
        address: a.address.to_string(),
        kind: a.kind.to_string(),
        vm,
        nic: a.attached.map(|(_, i)| i),
        private,
    })
}

async fn view_async(state: &AppState, a: PublicAddress) -> ApiResult<AddressView> {
    state.db(move |store| view(store, &a)).await
}

/// An address in a path: anything that is not an IPv4 address names nothing (404).
fn path_address(s: &str) -> ApiResult<Ipv4Addr> {
    s.parse().map_err(|_| ApiError::not_found("address", s))
}

#[utoipa::path(post, path = "/v1/addresses", request_body = AllocateAddress,
    responses((status = 201, body = AddressView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the quota of public addresses is used up, the address is held, the pools are used up, or there is no external network"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn allocate(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<AllocateAddress>,
) -> ApiResult<(StatusCode, Json<AddressView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let target = body.address.clone().unwrap_or_else(|| "any".into());
    let allocate = |entry| async {
        let requested = body
            .address
            .as_deref()
            .map(|a| {
                a.parse::<Ipv4Addr>().map_err(|_| {
                    ApiError::invalid("address", format!("{a:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        let a = Addresses::new(&state.ctx.store, state.ctx.as_ref())
            .allocate(tenant, requested, entry)
            .await?;
        view_async(&state, a).await
    };
    let v = state
        .audited(&auth, Some(tenant), "address.allocate", &target, allocate)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/v1/addresses", responses((status = 200, body = [AddressView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<AddressView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let views = state
        .db(move |store| {
            store
                .list_public_addresses(Some(&tenant))?
                .iter()
                .map(|a| view(store, a))
                .collect()
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(post, path = "/v1/addresses/{address}/attach", request_body = AttachAddress,
    responses((status = 200, body = AddressView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the address is attached already (named), the NIC has one, or its network is not attached to the external network"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn attach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(address): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<AttachAddress>,
) -> ApiResult<Json<AddressView>> {
    let tenant = state.scope(&auth, &q).await?;
    let attach = |entry| async {
        let a = path_address(&address)?;
        let vm = state.find::<Vm>(tenant, &body.vm).await?;
        let p = Addresses::new(&state.ctx.store, state.ctx.as_ref())
            .attach(tenant, a, vm.id, body.nic, entry)
            .await?;
        view_async(&state, p).await
    };
    let v = state
        .audited(&auth, Some(tenant), "address.attach", &address, attach)
        .await?;
    Ok(Json(v))
}

#[utoipa::path(post, path = "/v1/addresses/{address}/detach",
    responses((status = 200, body = AddressView),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn detach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(address): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<AddressView>> {
    let tenant = state.scope(&auth, &q).await?;
    let detach = |entry| async {
        let a = path_address(&address)?;
        let p = Addresses::new(&state.ctx.store, state.ctx.as_ref())
            .detach(tenant, a, entry)
            .await?;
        view_async(&state, p).await
    };
    let v = state
        .audited(&auth, Some(tenant), "address.detach", &address, detach)
        .await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/addresses/{address}", responses((status = 204),
    (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn release(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(address): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let release = |entry| async {
        let a = path_address(&address)?;
        Addresses::new(&state.ctx.store, state.ctx.as_ref())
            .release(tenant, a, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "address.release", &address, release)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
