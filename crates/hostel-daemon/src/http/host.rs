//! Host capacity and settings, the audit log and metrics.

use super::ApiQuery;
use super::{views, ApiJson, AppState, Operator};
use crate::admission;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::Json;
use hostel_api::{AuditView, HostSettings, HostView, StandbyView};
use hostel_state::{AuditQuery, TenantName};
use serde::Deserialize;

/// Host size, its settings and what wanted-running VMs have committed of it.
async fn host_view(state: &AppState) -> ApiResult<HostView> {
    let host = state.supervisor.host;
    let standby = state
        .ctx
        .standby
        .status()
        .into_iter()
        .map(|p| StandbyView {
            image: p.image,
            wanted: p.wanted as u32,
            ready: p.ready as u32,
            booting: p.booting as u32,
        })
        .collect();
    state
        .db(move |store| {
            let committed = admission::committed(store, None)?;
            let accel = hostel_engine::accel::choose(
                hostel_engine::AccelChoice::Auto,
                &hostel_engine::accel::HostVirt::probe(),
            )
            .map(|d| format!("{} ({})", d.accel, d.reason))
            .unwrap_or_else(|e| e.to_string());
            Ok(HostView {
                cpus: host.cpus,
                memory_mib: host.memory_mib,
                settings: admission::load_settings(store),
                committed_vcpus: committed.vcpus,
                committed_memory_mib: committed.memory_mib,
                accelerator: accel,
                standby,
            })
        })
        .await
}

#[utoipa::path(get, path = "/v1/host", responses((status = 200, body = HostView)))]
pub async fn show(
    State(state): State<AppState>,
    Operator(_): Operator,
) -> ApiResult<Json<HostView>> {
    Ok(Json(host_view(&state).await?))
}

#[utoipa::path(put, path = "/v1/host/settings", request_body = HostSettings,
    responses((status = 200, body = HostView)))]
pub async fn set_settings(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiJson(body): ApiJson<HostSettings>,
) -> ApiResult<Json<HostView>> {
    let save = |entry| async {
        admission::validate_settings(&body)
            .map_err(|(field, msg)| ApiError::invalid(field, msg))?;
        state
            .db(move |store| Ok(admission::save_settings(store, &body, &entry)?))
            .await
    };
    state
        .audited(&auth, None, "host.settings", "host", save)
        .await?;
    Ok(Json(host_view(&state).await?))
}

#[derive(Debug, Deserialize)]
pub struct AuditParams {
    tenant: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", params(("tenant" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = [AuditView])))]
pub async fn audit(
    State(state): State<AppState>,
    Operator(_): Operator,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<Vec<AuditView>>> {
    let views = state
        .db(move |store| {
            let mut q = AuditQuery::newest(p.limit.unwrap_or(100).min(10_000));
            if let Some(name) = &p.tenant {
                let n = TenantName::new(name).map_err(|_| ApiError::not_found("tenant", name))?;
                q = q.for_tenant(store.get_tenant_by_name(&n)?.id);
            }
            let names: std::collections::HashMap<_, _> = store
                .list_tenants()?
                .into_iter()
                .map(|t| (t.id, t.name.to_string()))
                .collect();
            let entries = store.list_audit(&q)?;
            Ok(entries
                .iter()
                .map(|e| views::audit(e, e.tenant.and_then(|t| names.get(&t).cloned())))
                .collect())
        })
        .await?;
    Ok(Json(views))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>, Operator(_): Operator) -> ApiResult<String> {
    // The switch's counters (the edges', detection's); without a switch there are none.
    let stats = state.ctx.switch.stats().await.ok();
    let edge_stats = stats.clone().unwrap_or_default();
    let (mut out, names) = state
        .db(move |store| {
            let names: std::collections::HashMap<String, String> = store
                .list_tenants()?
                .into_iter()
                .map(|t| (t.id.to_string(), t.name.to_string()))
                .collect();
            let mut out = crate::metrics::render(store)?;
            out.push_str(&crate::metrics::edge(store, &edge_stats)?);
            out.push_str(&crate::metrics::vps(store)?);
            Ok((out, names))
        })
        .await?;
    if let Some(stats) = stats {
        out.push_str(&super::ids::render_metrics(&stats, &names));
    }
    // The pool's health; nothing on a host without one (or when storage does not answer).
    if let Ok(Some(pool)) = crate::service::volumes::pool_info_if_running(&state.ctx).await {
        let vols = state.db(|store| Ok(store.list_all_volumes()?)).await?;
        out.push_str(&crate::metrics::storage(&pool, &vols, &names));
    }
    Ok(out)
}
