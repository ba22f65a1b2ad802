//! A tenant's firewall: rules with their hit counters, default policies, address sets, VM
//! groups and the log. Requests are parsed here (each malformed field named); changes are
//! made, validated and applied by [`crate::service::firewall`].

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, TenantQuery};
use crate::adapters::edge::edge_id;
use crate::adapters::networking::port_id;
use crate::error::{ApiError, ApiResult};
use crate::service::firewall::{check_name, Firewall};
use crate::service::DaemonError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{
    AddressSetBody, DefaultPolicy, FirewallDefaults, FirewallLogView, FirewallRuleBody,
    FirewallRuleView, FirewallView, RuleAction, RuleDirection, VmGroupBody,
};
use hostel_state::{FirewallDoc, Store, TenantId, Vm, VmId, VmName};
use hostel_switch_proto::firewall::{
    Action, DefaultAction, Direction, PortSpec, ProtocolSpec, RuleSpec, Scope,
};
use hostel_switch_proto::stats::FirewallStats;
use std::collections::BTreeMap;

fn direction(d: RuleDirection) -> Direction {
    match d {
        RuleDirection::Ingress => Direction::Ingress,
        RuleDirection::Egress => Direction::Egress,
    }
}
fn direction_view(d: Direction) -> RuleDirection {
    match d {
        Direction::Ingress => RuleDirection::Ingress,
        Direction::Egress => RuleDirection::Egress,
    }
}
fn action(a: RuleAction) -> Action {
    match a {
        RuleAction::Allow => Action::Allow,
        RuleAction::Drop => Action::Drop,
        RuleAction::Reject => Action::Reject,
    }
}
fn action_view(a: Action) -> RuleAction {
    match a {
        Action::Allow => RuleAction::Allow,
        Action::Drop => RuleAction::Drop,
        Action::Reject => RuleAction::Reject,
    }
}
fn default_action(p: DefaultPolicy) -> DefaultAction {
    match p {
        DefaultPolicy::Allow => DefaultAction::Allow,
        DefaultPolicy::Drop => DefaultAction::Drop,
        DefaultPolicy::Reject => DefaultAction::Reject,
    }
}
fn default_view(a: DefaultAction) -> DefaultPolicy {
    match a {
        DefaultAction::Allow => DefaultPolicy::Allow,
        DefaultAction::Drop => DefaultPolicy::Drop,
        DefaultAction::Reject => DefaultPolicy::Reject,
    }
}

/// `"22"` or `"8000-8080"`; the range of the numbers is the validator's to check (it names
/// the field with the rule).
fn ports(field: &str, list: &[String]) -> ApiResult<Vec<PortSpec>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let bad = || {
                ApiError::invalid(
                    &format!("{field}[{i}]"),
                    format!("{s:?} is not a port or a range like 8000-8080"),
                )
            };
            let n = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
            match s.split_once('-') {
                Some((a, b)) => Ok(PortSpec::Range {
                    from: n(a)?,
                    to: n(b)?,
                }),
                None => Ok(PortSpec::One(n(s)?)),
            }
        })
        .collect()
}

fn port_text(p: &PortSpec) -> String {
    match p {
        PortSpec::One(n) => n.to_string(),
        PortSpec::Range { from, to } => format!("{from}-{to}"),
    }
}

/// The rule as stored; a VM-scoped rule names its NIC by switch port.
fn rule_spec(store: &dyn Store, tenant: TenantId, b: &FirewallRuleBody) -> ApiResult<RuleSpec> {
    let protocol = match b.protocol.as_deref() {
        None => ProtocolSpec::default(),
        Some(p) => match p.parse::<u32>() {
            Ok(n) => ProtocolSpec::Number(n),
            Err(_) => ProtocolSpec::Name(p.to_string()),
        },
    };
    let scope = match (&b.vm, b.nic) {
        (None, None) => Scope::Edge,
        (None, Some(_)) => return Err(ApiError::invalid("nic", "a NIC is named with its vm")),
        (Some(vm), nic) => {
            let vm = Vm::find(store, tenant, vm)?;
            let idx = nic.unwrap_or(0);
            if !store.list_nics_of_vm(&vm.id)?.iter().any(|n| n.idx == idx) {
                return Err(ApiError::invalid(
                    "nic",
                    format!("VM {} has no NIC {idx}", vm.name),
                ));
            }
            Scope::Nic(port_id(&vm.id, idx))
        }
    };
    Ok(RuleSpec {
        id: 0,
        priority: b.priority.unwrap_or(1000),
        direction: direction(b.direction),
        action: action(b.action),
        protocol,
        source: b.source.clone(),
        destination: b.destination.clone(),
        source_ports: ports("source_ports", &b.source_ports)?,
        destination_ports: ports("destination_ports", &b.destination_ports)?,
        icmp_type: b.icmp_type,
        icmp_code: b.icmp_code,
        scope,
        stateless: b.stateless,
        log: b.log,
    })
}

use super::Named;

/// A NIC-scoped rule's VM name and NIC index, from its switch port (`<vm-id>-<index>`).
fn scope_view(store: &dyn Store, scope: &Scope) -> (Option<String>, Option<u32>) {
    let Scope::Nic(port) = scope else {
        return (None, None);
    };
    let Some((vm, idx)) = port.rsplit_once('-') else {
        return (None, None);
    };
    let name = vm
        .parse::<VmId>()
        .ok()
        .and_then(|id| store.get_vm(&id).ok())
        .map(|v| v.name.to_string())
        .unwrap_or_else(|| "(deleted)".into());
    (Some(name), idx.parse().ok())
}

fn rule_view(store: &dyn Store, r: &RuleSpec, stats: &FirewallStats) -> FirewallRuleView {
    let (vm, nic) = scope_view(store, &r.scope);
    let (packets, bytes) = stats
        .rules
        .iter()
        .filter(|h| h.rule == Some(r.id))
        .fold((0, 0), |(p, b), h| (p + h.packets, b + h.bytes));
    FirewallRuleView {
        id: r.id,
        priority: r.priority,
        direction: direction_view(r.direction),
        action: action_view(r.action),
        protocol: match &r.protocol {
            ProtocolSpec::Number(n) => n.to_string(),
            ProtocolSpec::Name(s) => s.clone(),
        },
        source: r.source.clone(),
        destination: r.destination.clone(),
        source_ports: r.source_ports.iter().map(port_text).collect(),
        destination_ports: r.destination_ports.iter().map(port_text).collect(),
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        vm,
        nic,
        stateless: r.stateless,
        log: r.log,
        hits_packets: packets,
        hits_bytes: bytes,
    }
}

/// The tenant's firewall counters from the switch (none while it has no edge).
async fn stats(state: &AppState, tenant: &TenantId) -> FirewallStats {
    let all = state.ctx.switch.stats().await.unwrap_or_default();
    all.firewalls
        .get(&edge_id(tenant))
        .cloned()
        .unwrap_or_default()
}

async fn firewall_view(state: &AppState, tenant: TenantId) -> ApiResult<FirewallView> {
    let fw = stats(state, &tenant).await;
    state
        .db(move |store| {
            let doc = store.get_firewall(&tenant)?;
            Ok(view(store, &doc, &fw))
        })
        .await
}

fn view(store: &dyn Store, doc: &FirewallDoc, fw: &FirewallStats) -> FirewallView {
    let mut default_hits = BTreeMap::new();
    for h in fw.rules.iter().filter(|h| h.rule.is_none()) {
        let d = match h.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        *default_hits.entry(d.to_string()).or_insert(0) += h.packets;
    }
    FirewallView {
        default_ingress: default_view(doc.default_ingress),
        default_egress: default_view(doc.default_egress),
        rules: doc.rules.iter().map(|r| rule_view(store, r, fw)).collect(),
        sets: doc.sets.clone(),
        groups: doc
            .groups
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|n| n.to_string()).collect()))
            .collect(),
        default_hits,
        conntrack: fw.conntrack as u64,
        conntrack_limit: fw.conntrack_limit as u64,
        drops: fw.drops.clone(),
    }
}

fn service(state: &AppState) -> Firewall<'_, crate::Ctx> {
    Firewall::new(&state.ctx.store, state.ctx.as_ref())
}

#[utoipa::path(get, path = "/v1/firewall", responses((status = 200, body = FirewallView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<FirewallView>> {
    let tenant = state.scope(&auth, &q).await?;
    Ok(Json(firewall_view(&state, tenant).await?))
}

#[utoipa::path(get, path = "/v1/firewall/rules", responses((status = 200, body = [FirewallRuleView])))]
pub async fn list_rules(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<FirewallRuleView>>> {
    let tenant = state.scope(&auth, &q).await?;
    Ok(Json(firewall_view(&state, tenant).await?.rules))
}

#[utoipa::path(post, path = "/v1/firewall/rules", request_body = FirewallRuleBody,
    responses((status = 201, body = FirewallRuleView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn add_rule(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<FirewallRuleBody>,
) -> ApiResult<(StatusCode, Json<FirewallRuleView>)> {
    let tenant = state.scope(&auth, &q).await?;
    let add = |entry| async {
        let spec = state
            .db(move |store| rule_spec(store, tenant, &body))
            .await?;
        let rule = service(&state).add_rule(tenant, spec, entry).await?;
        let fw = stats(&state, &tenant).await;
        state
            .db(move |store| Ok(rule_view(store, &rule, &fw)))
            .await
    };
    let v = state
        .audited(&auth, Some(tenant), "firewall.rule.add", "rule", add)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/v1/firewall/rules/{id}", responses((status = 204),
    (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn delete_rule(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let delete = |entry| async {
        let n: u32 = id
            .parse()
            .map_err(|_| ApiError::not_found("firewall rule", &id))?;
        service(&state)
            .delete_rule(tenant, n, entry)
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "firewall.rule.delete", &id, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/firewall/defaults", request_body = FirewallDefaults,
    responses((status = 200, body = FirewallView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn set_defaults(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<FirewallDefaults>,
) -> ApiResult<Json<FirewallView>> {
    let tenant = state.scope(&auth, &q).await?;
    let set = |entry| async {
        service(&state)
            .change(tenant, entry, move |_, doc| {
                if let Some(p) = body.ingress {
                    doc.default_ingress = default_action(p);
                }
                if let Some(p) = body.egress {
                    doc.default_egress = default_action(p);
                }
                Ok(())
            })
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "firewall.defaults", "defaults", set)
        .await?;
    Ok(Json(firewall_view(&state, tenant).await?))
}

/// Most entries in one address set or VM group.
const MAX_MEMBERS: usize = 1024;

#[utoipa::path(put, path = "/v1/firewall/sets/{name}", request_body = AddressSetBody,
    responses((status = 200, body = FirewallView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn set_set(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<AddressSetBody>,
) -> ApiResult<Json<FirewallView>> {
    let tenant = state.scope(&auth, &q).await?;
    let set = |entry| async {
        check_name("name", &name)?;
        if body.addresses.len() > MAX_MEMBERS {
            return Err(ApiError::invalid(
                "addresses",
                format!("at most {MAX_MEMBERS}"),
            ));
        }
        let (name, list) = (name.clone(), body.addresses.clone());
        service(&state)
            .change(tenant, entry, move |_, doc| {
                doc.sets.insert(name, list);
                Ok(())
            })
            .await
            .map_err(|e| match e {
                // The validator names the set's entries `sets.NAME[i]`; the body's field
                // is `addresses[i]`.
                DaemonError::Invalid { field, reason } if field.starts_with("sets.") => {
                    let i = field.rsplit_once('[').map(|(_, i)| i).unwrap_or("0]");
                    ApiError::invalid(&format!("addresses[{i}"), reason)
                }
                e => e.into(),
            })
    };
    state
        .audited(&auth, Some(tenant), "firewall.set.put", &name, set)
        .await?;
    Ok(Json(firewall_view(&state, tenant).await?))
}

#[utoipa::path(put, path = "/v1/firewall/groups/{name}", request_body = VmGroupBody,
    responses((status = 200, body = FirewallView),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn set_group(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<VmGroupBody>,
) -> ApiResult<Json<FirewallView>> {
    let tenant = state.scope(&auth, &q).await?;
    let set = |entry| async {
        check_name("name", &name)?;
        if body.vms.len() > MAX_MEMBERS {
            return Err(ApiError::invalid("vms", format!("at most {MAX_MEMBERS}")));
        }
        let mut vms = Vec::with_capacity(body.vms.len());
        for (i, v) in body.vms.iter().enumerate() {
            vms.push(
                VmName::new(v)
                    .map_err(|e| ApiError::invalid(&format!("vms[{i}]"), e.to_string()))?,
            );
        }
        let name = name.clone();
        service(&state)
            .change(tenant, entry, move |_, doc| {
                doc.groups.insert(name, vms);
                Ok(())
            })
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(&auth, Some(tenant), "firewall.group.put", &name, set)
        .await?;
    Ok(Json(firewall_view(&state, tenant).await?))
}

/// Removes a named set or group; one a rule still uses is refused (400 naming the rule's
/// field), so no rule is left pointing at nothing.
async fn remove_named(
    state: &AppState,
    auth: &Auth,
    tenant: TenantId,
    name: String,
    group: bool,
) -> ApiResult<StatusCode> {
    let action = if group {
        "firewall.group.delete"
    } else {
        "firewall.set.delete"
    };
    let target = name.clone();
    let remove = |entry| async move {
        service(state)
            .change(tenant, entry, move |_, doc| {
                let gone = if group {
                    doc.groups.remove(&name).is_some()
                } else {
                    doc.sets.remove(&name).is_some()
                };
                if !gone {
                    return Err(hostel_state::StoreError::NotFound {
                        kind: hostel_state::EntityKind::Firewall,
                        name: format!("{} {name}", if group { "group" } else { "set" }),
                    }
                    .into());
                }
                Ok(())
            })
            .await
            .map_err(ApiError::from)
    };
    state
        .audited(auth, Some(tenant), action, &target, remove)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/firewall/sets/{name}", responses((status = 204),
    (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn delete_set(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    remove_named(&state, &auth, tenant, name, false).await
}

#[utoipa::path(delete, path = "/v1/firewall/groups/{name}", responses((status = 204),
    (status = 409, body = hostel_api::ApiErrorBody, description = "the firewall was changed by another call meanwhile"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take it")))]
pub async fn delete_group(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    remove_named(&state, &auth, tenant, name, true).await
}

#[utoipa::path(get, path = "/v1/firewall/log", responses((status = 200, body = [FirewallLogView])))]
pub async fn log(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<FirewallLogView>>> {
    let tenant = state.scope(&auth, &q).await?;
    // No edge yet (no network attached), or no switch: nothing was logged.
    let entries = state
        .ctx
        .switch
        .firewall_log(&edge_id(&tenant))
        .await
        .unwrap_or_default();
    Ok(Json(
        entries
            .into_iter()
            .map(|e| FirewallLogView {
                time_ns: e.time_ns,
                rule: e.rule,
                direction: direction_view(e.direction),
                action: action_view(e.action),
                protocol: e.protocol,
                source: e.src.to_string(),
                destination: e.dst.to_string(),
                source_port: e.sport,
                destination_port: e.dport,
                length: e.len as u64,
            })
            .collect(),
    ))
}
