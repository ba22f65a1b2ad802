//! A tenant's virtual networks, and their ports with the switch's counters.

use super::{ApiJson, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::networking;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateNetwork, NetworkView, PortView, UplinkView};
use hostel_state::{Ipv4Net, Network, NetworkName, TenantId, Uplink};

pub fn find(state: &AppState, tenant: &TenantId, name: &str) -> ApiResult<Network> {
    let n = NetworkName::new(name).map_err(|_| ApiError::not_found("network", name))?;
    Ok(state.ctx.store.get_network_by_name(tenant, &n)?)
}

async fn view(state: &AppState, net: &Network) -> ApiResult<NetworkView> {
    let store = &state.ctx.store;
    // Counters are the switch's; without a switch the ports are still listed.
    let stats = state.ctx.switch.stats().await.unwrap_or_default();
    let mut ports = Vec::new();
    for nic in store.list_nics_of_network(&net.id)? {
        let vm = store.get_vm(&nic.vm)?;
        let live = stats.ports.get(&networking::port_id(&nic.vm, nic.idx));
        let s = live.map(|p| p.stats.clone()).unwrap_or_default();
        ports.push(PortView {
            vm: vm.name.to_string(),
            nic: nic.idx,
            mac: nic.mac.clone(),
            ipv4: Some(nic.ipv4.to_string()),
            connected: live.is_some_and(|p| p.connected),
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            drops: s.drops,
        });
    }
    // The uplink's own counters: from its point of view the host is the sender
    // ("tx") of what enters the network.
    let uplink = net.uplink_ifname().map(|interface| {
        let live = stats.uplinks.get(&net.id.to_string());
        let s = live.cloned().unwrap_or_default();
        UplinkView {
            interface,
            attached: live.is_some(),
            from_host_packets: s.tx_packets,
            to_host_packets: s.rx_packets,
            drops: s.drops,
        }
    });
    Ok(NetworkView {
        id: net.id.to_string(),
        name: net.name.to_string(),
        subnet: net.subnet4.to_string(),
        gateway: net.gateway4.to_string(),
        uplink,
        ports,
    })
}

#[utoipa::path(post, path = "/v1/networks", request_body = CreateNetwork,
    responses((status = 201, body = NetworkView), (status = 400, body = hostel_api::ApiErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<TenantQuery>,
    ApiJson(body): ApiJson<CreateNetwork>,
) -> ApiResult<(StatusCode, Json<NetworkView>)> {
    let tenant = state.scope(&auth, &q)?;
    let result = async {
        let name =
            NetworkName::new(&body.name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
        let subnet: Ipv4Net = body.subnet.parse()?;
        let gateway = body
            .gateway
            .as_deref()
            .map(|g| {
                g.parse().map_err(|_| {
                    ApiError::invalid("gateway", format!("{g:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        let uplink = if body.uplink {
            Uplink::Tap
        } else {
            Uplink::None
        };
        let net = state
            .ctx
            .store
            .create_network(&tenant, &name, subnet, gateway, uplink)?;
        networking::sync(&state.ctx)
            .await
            .map_err(ApiError::engine)?;
        view(&state, &net).await
    }
    .await;
    state.audit(&auth, Some(tenant), "network.create", &body.name, &result);
    Ok((StatusCode::CREATED, Json(result?)))
}

#[utoipa::path(get, path = "/v1/networks", responses((status = 200, body = [NetworkView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Vec<NetworkView>>> {
    let tenant = state.scope(&auth, &q)?;
    let mut out = Vec::new();
    for net in state.ctx.store.list_networks(&tenant)? {
        out.push(view(&state, &net).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/v1/networks/{name}", responses((status = 200, body = NetworkView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<NetworkView>> {
    let tenant = state.scope(&auth, &q)?;
    let net = find(&state, &tenant, &name)?;
    Ok(Json(view(&state, &net).await?))
}

#[utoipa::path(delete, path = "/v1/networks/{name}", responses((status = 204), (status = 409, body = hostel_api::ApiErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q)?;
    let result = async {
        let net = find(&state, &tenant, &name)?;
        state.ctx.store.delete_network(&net.id)?;
        networking::sync(&state.ctx).await.map_err(ApiError::engine)
    }
    .await;
    state.audit(&auth, Some(tenant), "network.delete", &name, &result);
    result.map(|()| StatusCode::NO_CONTENT)
}
