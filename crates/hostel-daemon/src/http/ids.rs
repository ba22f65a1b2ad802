//! A tenant's intrusion detection: settings (watched networks, mode, overload), its own rules,
//! and its alerts as EVE records. Requests parsed here, changes made by
//! [`crate::service::ids`], each audited in the same transaction as the change.

use super::{ApiJson, ApiQuery, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::ids::{
    operator_rules_dir, read_operator_rules, IdsChange, IdsService, IdsState,
};
use axum::extract::State;
use axum::Json;
use hostel_api::{IdsAlertsView, IdsRefusalView, IdsRulesBody, IdsSettingsBody, IdsView};
use hostel_state::{NetworkName, TenantId, MAX_IDS_RULES};
use hostel_types::{IdsMode, IdsOverload};
use serde::Deserialize;

fn view(s: IdsState) -> IdsView {
    IdsView {
        mode: s.settings.mode.as_str().into(),
        overload: s.settings.overload.as_str().into(),
        networks: s.networks.iter().map(ToString::to_string).collect(),
        intra_networks: s.intra_networks.iter().map(ToString::to_string).collect(),
        rules_loaded: s.tenant_rules.loaded,
        rules_refused: s
            .tenant_rules
            .refused
            .into_iter()
            .map(|r| IdsRefusalView {
                sid: r.sid,
                keyword: r.keyword,
                reason: r.reason,
            })
            .collect(),
        operator_rules_loaded: s.operator_rules_loaded,
        switch: s.switch,
    }
}

async fn service_call<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(String) -> T + Send + 'static,
) -> ApiResult<T> {
    let dir = operator_rules_dir(state.ctx.layout.root());
    tokio::task::spawn_blocking(move || f(read_operator_rules(&dir)))
        .await
        .map_err(|e| ApiError::internal(format!("reading the operator's rules: {e}")))
}

async fn change(
    state: &AppState,
    auth: &Auth,
    tenant: TenantId,
    action: &str,
    what: IdsChange,
) -> ApiResult<IdsView> {
    let operator = service_call(state, |r| r).await?;
    state
        .audited(auth, Some(tenant), action, "ids", |entry| async move {
            let st = IdsService::new(&state.ctx.store, state.ctx.as_ref(), operator)
                .change(tenant, what, entry)
                .await?;
            Ok(view(st))
        })
        .await
}

#[utoipa::path(get, path = "/v1/ids", responses((status = 200, body = IdsView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<IdsView>> {
    let tenant = state.scope(&auth, &q).await?;
    let operator = service_call(&state, |r| r).await?;
    let st = IdsService::new(&state.ctx.store, state.ctx.as_ref(), operator)
        .show(tenant)
        .await?;
    Ok(Json(view(st)))
}

#[utoipa::path(put, path = "/v1/ids", request_body = IdsSettingsBody,
    responses((status = 200, body = IdsView),
              (status = 400, body = hostel_api::ApiErrorBody, description = "an unknown mode or overload, or a malformed network name; `field` names it"),
              (status = 404, body = hostel_api::ApiErrorBody, description = "a network the tenant does not have")))]
pub async fn set(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(b): ApiJson<IdsSettingsBody>,
) -> ApiResult<Json<IdsView>> {
    let tenant = state.scope(&auth, &q).await?;
    let mode = IdsMode::parse(&b.mode)
        .ok_or_else(|| ApiError::invalid("mode", "expected `detect` or `prevent`"))?;
    let overload = match b.overload.as_deref() {
        None => IdsOverload::default(),
        Some(o) => IdsOverload::parse(o).ok_or_else(|| {
            ApiError::invalid("overload", "expected `fail_open` or `fail_closed`")
        })?,
    };
    let networks = b
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            NetworkName::new(n)
                .map_err(|e| ApiError::invalid(&format!("networks[{i}]"), e.to_string()))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let intra_networks = b
        .intra_networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = NetworkName::new(n)
                .map_err(|e| ApiError::invalid(&format!("intra_networks[{i}]"), e.to_string()))?;
            if !networks.contains(&name) {
                return Err(ApiError::invalid(
                    &format!("intra_networks[{i}]"),
                    format!("{n} is not among the watched `networks`"),
                ));
            }
            Ok(name)
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let what = IdsChange::Settings {
        mode,
        overload,
        networks,
        intra_networks,
    };
    Ok(Json(change(&state, &auth, tenant, "ids.set", what).await?))
}

#[utoipa::path(put, path = "/v1/ids/rules", request_body = IdsRulesBody,
    responses((status = 200, body = IdsView, description = "stored; `rules_refused` names each rule that does not load (sid and keyword), the others load"),
              (status = 400, body = hostel_api::ApiErrorBody, description = "the rules are larger than 1 MiB")))]
pub async fn set_rules(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(b): ApiJson<IdsRulesBody>,
) -> ApiResult<Json<IdsView>> {
    let tenant = state.scope(&auth, &q).await?;
    if b.rules.len() > MAX_IDS_RULES {
        return Err(ApiError::invalid(
            "rules",
            format!("{} bytes, at most {MAX_IDS_RULES}", b.rules.len()),
        ));
    }
    let what = IdsChange::Rules(b.rules);
    Ok(Json(
        change(&state, &auth, tenant, "ids.rules", what).await?,
    ))
}

/// `?after=N` (default 0) and the operator's `?tenant=`.
#[derive(Debug, Deserialize, Default)]
pub struct AlertsQuery {
    pub tenant: Option<String>,
    #[serde(default)]
    pub after: u64,
}

#[utoipa::path(get, path = "/v1/ids/alerts",
    params(("after" = Option<u64>, Query, description = "only alerts after this sequence number (the `next` of the previous answer)")),
    responses((status = 200, body = IdsAlertsView),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch has no detection for this tenant (no edge yet) or cannot be reached")))]
pub async fn alerts(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> ApiResult<Json<IdsAlertsView>> {
    let scope = TenantQuery {
        tenant: q.tenant.clone(),
    };
    let tenant = state.scope(&auth, &scope).await?;
    let a = IdsService::new(&state.ctx.store, state.ctx.as_ref(), String::new())
        .alerts(tenant, q.after)
        .await?;
    Ok(Json(IdsAlertsView {
        alerts: a.alerts,
        next: a.next,
        lost: a.lost,
    }))
}

/// Detection counters for `/metrics`, per tenant (by name; the switch knows tenants by id):
/// alerts per sid, prevent-mode drops, packets passed or dropped over budget, lost alerts.
pub fn render_metrics(
    stats: &hostel_switch_proto::SwitchStats,
    names: &std::collections::HashMap<String, String>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if stats.ids.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# TYPE hostel_ids_alerts_total counter\n# TYPE hostel_ids_drops_total counter\n\
         # TYPE hostel_ids_packets_total counter\n# TYPE hostel_ids_overload_total counter\n\
         # TYPE hostel_ids_alerts_lost_total counter"
    );
    for (id, s) in &stats.ids {
        let t = names.get(id).map(String::as_str).unwrap_or(id);
        for (sid, n) in &s.per_sid {
            let _ = writeln!(
                out,
                "hostel_ids_alerts_total{{tenant=\"{t}\",sid=\"{sid}\"}} {n}"
            );
        }
        let _ = writeln!(out, "hostel_ids_drops_total{{tenant=\"{t}\"}} {}", s.drops);
        let _ = writeln!(
            out,
            "hostel_ids_packets_total{{tenant=\"{t}\"}} {}",
            s.packets
        );
        let _ = writeln!(
            out,
            "hostel_ids_overload_total{{tenant=\"{t}\",action=\"passed\"}} {}\n\
             hostel_ids_overload_total{{tenant=\"{t}\",action=\"dropped\"}} {}",
            s.overload_passed, s.overload_dropped
        );
        let _ = writeln!(
            out,
            "hostel_ids_alerts_lost_total{{tenant=\"{t}\"}} {}",
            s.alerts_lost
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_name_tenants_and_sids() {
        let mut stats = hostel_switch_proto::SwitchStats::default();
        let mut s = hostel_switch_proto::ids::IdsStats {
            drops: 3,
            ..Default::default()
        };
        s.per_sid.insert(101, 7);
        stats.ids.insert("tid".into(), s);
        let names = [("tid".to_string(), "acme".to_string())].into();
        let m = super::render_metrics(&stats, &names);
        assert!(
            m.contains("hostel_ids_alerts_total{tenant=\"acme\",sid=\"101\"} 7"),
            "{m}"
        );
        assert!(
            m.contains("hostel_ids_drops_total{tenant=\"acme\"} 3"),
            "{m}"
        );
        assert!(super::render_metrics(&Default::default(), &names).is_empty());
    }
}
