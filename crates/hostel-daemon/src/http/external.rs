//! The host's external network (operator: set-up, pools, usage, edges) and tenant networks
//! attached to it: requests parsed here, changes made by [`crate::service::edge`].

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, Operator, TenantQuery};
use crate::adapters::edge::edge_id;
use crate::error::{ApiError, ApiResult};
use crate::service::edge::Edge;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{
    AttachExternal, EdgeView, ExternalSetupBody, ExternalView, HeldAddressView, NetworkView,
    SetAppliance,
};
use hostel_state::{AddressKind, ExternalSetup, MacAddr, Network};
use hostel_switch_proto::external::DEFAULT_CONNTRACK_LIMIT;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Where the host's interfaces are listed.
const SYS_NET: &str = "/sys/class/net";

fn parse<T: std::str::FromStr>(field: &str, s: &str, what: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::invalid(field, format!("{s:?} is not {what}")))
}

/// The body as the store keeps it; each malformed field named.
fn setup(b: &ExternalSetupBody) -> ApiResult<ExternalSetup> {
    let mac = match &b.mac {
        Some(m) => parse::<MacAddr>("mac", m, "a MAC address")?,
        None => MacAddr::derived(&format!("external:{}", b.interface), 0),
    };
    let mut pools = Vec::with_capacity(b.pools.len());
    for (i, p) in b.pools.iter().enumerate() {
        pools.push(parse(&format!("pools[{i}]"), p, "an IPv4 CIDR")?);
    }
    let mut routed_pools4 = Vec::with_capacity(b.routed_pools.len());
    for (i, p) in b.routed_pools.iter().enumerate() {
        routed_pools4.push(parse(&format!("routed_pools[{i}]"), p, "an IPv4 CIDR")?);
    }
    let mut routed_pools6 = Vec::with_capacity(b.routed_pools6.len());
    for (i, p) in b.routed_pools6.iter().enumerate() {
        routed_pools6.push(parse(&format!("routed_pools6[{i}]"), p, "an IPv6 CIDR")?);
    }
    if routed_pools4.len() > 64 || routed_pools6.len() > 64 {
        return Err(ApiError::invalid("routed_pools", "at most 64 each"));
    }
    Ok(ExternalSetup {
        routed_pools4,
        routed_pools6,
        interface: b.interface.clone(),
        mac,
        subnet4: parse("subnet", &b.subnet, "an IPv4 CIDR")?,
        gateway4: parse("gateway", &b.gateway, "an IPv4 address")?,
        subnet6: b
            .subnet6
            .as_deref()
            .map(|s| parse("subnet6", s, "an IPv6 CIDR"))
            .transpose()?,
        gateway6: b
            .gateway6
            .as_deref()
            .map(|s| parse("gateway6", s, "an IPv6 address"))
            .transpose()?,
        pools,
        conntrack_limit: b.conntrack_limit.unwrap_or(DEFAULT_CONNTRACK_LIMIT),
    })
}

async fn view(state: &AppState) -> ApiResult<ExternalView> {
    let stats = state.ctx.switch.stats().await.unwrap_or_default();
    state
        .db(move |store| {
            let setup = store
                .get_external()?
                .ok_or_else(|| ApiError::not_found("external network", "external"))?;
            let tenants: HashMap<_, _> = store
                .list_tenants()?
                .into_iter()
                .map(|t| (t.id, t.name.to_string()))
                .collect();
            let name_of = |t: &hostel_state::TenantId| tenants.get(t).cloned().unwrap_or_default();
            let held = store.list_public_addresses(None)?;
            let mut addresses = Vec::new();
            for a in &held {
                let vm = match a.attached {
                    Some((vm, _)) => Some(store.get_vm(&vm)?.name.to_string()),
                    None => None,
                };
                addresses.push(HeldAddressView {
                    address: a.address.to_string(),
                    tenant: name_of(&a.tenant),
                    kind: a.kind.to_string(),
                    vm,
                    nic: a.attached.map(|(_, i)| i),
                });
            }
            let mut nets: BTreeMap<_, Vec<String>> = BTreeMap::new();
            for e in store.list_network_edges()? {
                nets.entry(e.tenant)
                    .or_default()
                    .push(store.get_network(&e.network)?.name.to_string());
            }
            let edges = nets
                .into_iter()
                .map(|(t, networks)| {
                    let fw = stats
                        .firewalls
                        .get(&edge_id(&t))
                        .cloned()
                        .unwrap_or_default();
                    EdgeView {
                        tenant: name_of(&t),
                        outside: held
                            .iter()
                            .find(|a| a.tenant == t && a.kind == AddressKind::Outside)
                            .map(|a| a.address.to_string())
                            .unwrap_or_default(),
                        networks,
                        conntrack: fw.conntrack as u64,
                        conntrack_limit: fw.conntrack_limit as u64,
                        accepted: fw.accepted,
                        drops: fw.drops,
                    }
                })
                .collect();
            let wire = stats.external.clone().unwrap_or_default();
            Ok(ExternalView {
                interface: setup.interface.clone(),
                mac: setup.mac.to_string(),
                subnet: setup.subnet4.to_string(),
                gateway: setup.gateway4.to_string(),
                subnet6: setup.subnet6.map(|s| s.to_string()),
                gateway6: setup.gateway6.map(|s| s.to_string()),
                pools: setup.pools.iter().map(|p| p.to_string()).collect(),
                routed_pools: setup.routed_pools4.iter().map(|p| p.to_string()).collect(),
                routed_pools6: setup.routed_pools6.iter().map(|p| p.to_string()).collect(),
                conntrack_limit: setup.conntrack_limit,
                pool_size: setup.pool_addresses().count() as u64,
                pool_used: held.len() as u64,
                addresses,
                edges,
                wire_rx_packets: wire.rx_packets,
                wire_tx_packets: wire.tx_packets,
                wire_drops: wire.drops,
            })
        })
        .await
}

#[utoipa::path(put, path = "/v1/external", request_body = ExternalSetupBody,
    responses((status = 200, body = ExternalView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "a tenant holds an address the new pools leave out"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn set(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<ExternalSetupBody>,
) -> ApiResult<Json<ExternalView>> {
    let save = |entry| async {
        let s = setup(&body)?;
        Edge::new(&state.ctx.store, state.ctx.as_ref())
            .set_external(s, Path::new(SYS_NET), entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, None, "external.set", &body.interface, save)
        .await?;
    Ok(Json(view(&state).await?))
}

#[utoipa::path(get, path = "/v1/external", responses((status = 200, body = ExternalView)))]
pub async fn show(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> ApiResult<Json<ExternalView>> {
    Ok(Json(view(&state).await?))
}

#[utoipa::path(put, path = "/v1/networks/{name}/external", request_body = AttachExternal,
    responses((status = 200, body = NetworkView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "no external network, the network has an uplink, or the pools are used up"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn attach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<AttachExternal>,
) -> ApiResult<Json<NetworkView>> {
    let tenant = state.scope(&auth, &q).await?;
    let attach = |state: AppState, net: Network, entry| async move {
        Edge::new(&state.ctx.store, state.ctx.as_ref())
            .attach_network(net.id, body.snat, body.routed, entry)
            .await?;
        Ok(net)
    };
    let net = state
        .on_named(&auth, tenant, "network.attach", &name, attach)
        .await?;
    Ok(Json(super::networks::view_one(&state, net).await?))
}

#[utoipa::path(put, path = "/v1/networks/{name}/appliance", request_body = SetAppliance,
    responses((status = 200, body = NetworkView),
              (status = 400, body = hostel_api::ApiErrorBody, description = "a malformed VM name, or a NIC the VM lacks or that is on another network (`field`: `vm`, `nic`)"),
              (status = 404, body = hostel_api::ApiErrorBody, description = "no such network or VM"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn set_appliance(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<SetAppliance>,
) -> ApiResult<Json<NetworkView>> {
    let tenant = state.scope(&auth, &q).await?;
    let vm =
        hostel_state::VmName::new(&body.vm).map_err(|e| ApiError::invalid("vm", e.to_string()))?;
    let set = |state: AppState, net: Network, entry| async move {
        Edge::new(&state.ctx.store, state.ctx.as_ref())
            .set_appliance(tenant, net.id, Some((vm, body.nic)), entry)
            .await?;
        Ok(net)
    };
    let net = state
        .on_named(&auth, tenant, "network.appliance.set", &name, set)
        .await?;
    Ok(Json(super::networks::view_one(&state, net).await?))
}

#[utoipa::path(delete, path = "/v1/networks/{name}/appliance", responses((status = 204),
    (status = 404, body = hostel_api::ApiErrorBody, description = "no such network"),
    (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn clear_appliance(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let clear = |state: AppState, net: Network, entry| async move {
        Edge::new(&state.ctx.store, state.ctx.as_ref())
            .set_appliance(tenant, net.id, None, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .on_named(&auth, tenant, "network.appliance.clear", &name, clear)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/networks/{name}/external", responses((status = 204),
    (status = 409, body = hostel_api::ApiErrorBody, description = "the network is not attached"),
    (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn detach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let detach = |state: AppState, net: Network, entry| async move {
        Edge::new(&state.ctx.store, state.ctx.as_ref())
            .detach_network(net.id, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .on_named(&auth, tenant, "network.detach", &name, detach)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
