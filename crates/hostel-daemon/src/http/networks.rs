//! A tenant's virtual networks, and their ports with the switch's counters: requests
//! parsed here, changes made by [`crate::service::networks`].

use super::{ApiJson, AppState, Auth, TenantQuery};
use super::{ApiPath, ApiQuery};
use crate::adapters::networking;
use crate::error::{ApiError, ApiResult};
use crate::service::networks::Networks;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{CreateNetwork, NetworkView, PortView, UplinkView};
use hostel_state::{slaac_address, Network, NetworkName, NewNetwork, Store, Uplink};
use hostel_switch_proto::SwitchStats;

/// The API view of networks, with their ports and the switch's counters.
async fn views(state: &AppState, nets: Vec<Network>) -> ApiResult<Vec<NetworkView>> {
    // Counters are the switch's; without a switch the ports are still listed.
    let stats = state.ctx.switch.stats().await.unwrap_or_default();
    state
        .db(move |store| nets.iter().map(|n| view(store, &stats, n)).collect())
        .await
}

/// One network's view; `views` answers for one or many with a single switch query.
pub(super) async fn view_one(state: &AppState, net: Network) -> ApiResult<NetworkView> {
    let mut views = views(state, vec![net]).await?;
    views
        .pop()
        .ok_or_else(|| ApiError::internal("network view missing"))
}

fn view(store: &dyn Store, stats: &SwitchStats, net: &Network) -> ApiResult<NetworkView> {
    let mut ports = Vec::new();
    for nic in store.list_nics_of_network(&net.id)? {
        let vm = store.get_vm(&nic.vm)?;
        let live = stats.ports.get(&networking::port_id(&nic.vm, nic.idx));
        let s = live.map(|p| p.stats.clone()).unwrap_or_default();
        ports.push(PortView {
            vm: vm.name.to_string(),
            nic: nic.idx,
            mac: nic.mac.to_string(),
            ipv4: Some(nic.ipv4.to_string()),
            ipv6: net.subnet6.map(|p| slaac_address(&p, &nic.mac).to_string()),
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
    let external = store
        .list_network_edges()?
        .into_iter()
        .find(|e| e.network == net.id)
        .map(|e| -> ApiResult<_> {
            let outside = store
                .list_public_addresses(Some(&net.tenant))?
                .into_iter()
                .find(|a| a.kind == hostel_state::AddressKind::Outside)
                .map(|a| a.address.to_string())
                .unwrap_or_default();
            Ok(hostel_api::NetworkExternalView {
                snat: e.snat,
                routed: e.routed,
                outside,
            })
        })
        .transpose()?;
    let appliance = store
        .list_appliances()?
        .into_iter()
        .find(|a| a.network == net.id)
        .map(|a| -> ApiResult<_> {
            let Some((vm, idx)) = a.nic else {
                return Ok(hostel_api::ApplianceView {
                    vm: None,
                    nic: None,
                    state: "down: the appliance's VM was deleted; the network's outside \
                            traffic is stopped until another appliance (or none) is set"
                        .into(),
                });
            };
            let v = store.get_vm(&vm)?;
            let connected = stats
                .ports
                .get(&networking::port_id(&vm, idx))
                .is_some_and(|p| p.connected);
            let state = if external.is_none() {
                "inactive: the network is not attached to the external network".to_string()
            } else if connected {
                "up".to_string()
            } else {
                format!(
                    "down: the appliance VM {} is {} (its NIC is not connected); the \
                     network's outside traffic is stopped",
                    v.name,
                    v.observed.state.as_str()
                )
            };
            Ok(hostel_api::ApplianceView {
                vm: Some(v.name.to_string()),
                nic: Some(idx),
                state,
            })
        })
        .transpose()?;
    Ok(NetworkView {
        appliance,
        external,
        id: net.id.to_string(),
        name: net.name.to_string(),
        subnet: net.subnet4.to_string(),
        gateway: net.gateway4.to_string(),
        subnet6: net.subnet6.map(|p| p.to_string()),
        uplink,
        ports,
    })
}

#[utoipa::path(post, path = "/v1/networks", request_body = CreateNetwork,
    responses((status = 201, body = NetworkView), (status = 400, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the name is taken, or the tenant's network or uplink quota is used up"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the network")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<CreateNetwork>,
) -> ApiResult<(StatusCode, Json<NetworkView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let create = |entry| async {
        let name =
            NetworkName::new(&body.name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
        let gateway4 = body
            .gateway
            .as_deref()
            .map(|g| {
                g.parse().map_err(|_| {
                    ApiError::invalid("gateway", format!("{g:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        let new = NewNetwork {
            name,
            subnet4: body.subnet.parse()?,
            gateway4,
            subnet6: body.subnet6.as_deref().map(str::parse).transpose()?,
            uplink: if body.uplink {
                Uplink::Tap
            } else {
                Uplink::None
            },
        };
        let net = Networks::new(&state.ctx.store, state.ctx.as_ref())
            .create(tenant, new, entry)
            .await?;
        view_one(&state, net).await
    };
    let view = state
        .audited(&auth, Some(tenant), "network.create", &body.name, create)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/networks", responses((status = 200, body = [NetworkView])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<NetworkView>>> {
    let tenant = state.scope(&auth, &q).await?;
    let nets = state
        .db(move |store| Ok(store.list_networks(&tenant)?))
        .await?;
    Ok(Json(views(&state, nets).await?))
}

#[utoipa::path(get, path = "/v1/networks/{name}", responses((status = 200, body = NetworkView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<NetworkView>> {
    let tenant = state.scope(&auth, &q).await?;
    let net = state.find::<Network>(tenant, &name).await?;
    Ok(Json(view_one(&state, net).await?))
}

#[utoipa::path(delete, path = "/v1/networks/{name}", responses((status = 204),
    (status = 409, body = hostel_api::ApiErrorBody, description = "VMs still use it"), (status = 422, body = hostel_api::ApiErrorBody, description = "the engine could not do it; `message` says why")))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let delete = |state: AppState, net: Network, entry| async move {
        Networks::new(&state.ctx.store, state.ctx.as_ref())
            .delete(net.id, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .on_named(&auth, tenant, "network.delete", &name, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
