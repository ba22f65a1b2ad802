//! Per-NIC rate limits. A tenant sets its NICs' limits within the operator's ceiling; the
//! operator sets the ceiling per NIC and a default per tenant. Every change is committed
//! with its audit entry, then the switch gets the effective limits (per field the lower of
//! ceiling and the tenant's own) in place, without disconnecting the guest.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, Operator, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::nic_limits::{NicChange, NicLimitsService};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hostel_api::{NicLimitsBody, NicLimitsView, RateLimitBody, TenantNicCeilingView};
use hostel_state::{
    CeilingSource, NewAuditEntry, NicLimits, NicLimitsRecord, RateLimit, Tenant, TenantId, Vm,
};

// The API's and the store's limits have the same fields (the API's carry the schema's
// bounds, the store's its validation); these copy one into the other, either way.
macro_rules! copy_rate {
    ($r:expr => $rate:ident) => {{
        let r = $r;
        $rate {
            packets_per_sec: r.packets_per_sec,
            bytes_per_sec: r.bytes_per_sec,
            burst_packets: r.burst_packets,
            burst_bytes: r.burst_bytes,
        }
    }};
}

macro_rules! copy_limits {
    ($l:expr => $limits:ident / $rate:ident) => {{
        let l = $l;
        $limits {
            total: copy_rate!(l.total => $rate),
            flood: copy_rate!(l.flood => $rate),
            unknown: copy_rate!(l.unknown => $rate),
        }
    }};
}

pub(crate) fn limits_from(b: &NicLimitsBody) -> NicLimits {
    copy_limits!(b => NicLimits / RateLimit)
}

fn body(l: &NicLimits) -> NicLimitsBody {
    copy_limits!(l => NicLimitsBody / RateLimitBody)
}

fn view(vm: &Vm, nic: u32, rec: &NicLimitsRecord) -> NicLimitsView {
    let (ceiling, source) = rec.ceiling();
    NicLimitsView {
        vm: vm.name.to_string(),
        nic,
        limits: body(&rec.limits),
        ceiling: body(&ceiling),
        ceiling_source: match source {
            CeilingSource::Nic => "nic",
            CeilingSource::Tenant => "tenant",
            CeilingSource::None => "none",
        }
        .to_string(),
        effective: body(&rec.effective()),
    }
}

/// The NIC index of a path: anything but a number is a NIC that does not exist.
fn nic_index(s: &str) -> ApiResult<u32> {
    s.parse().map_err(|_| ApiError::not_found("nic", s))
}

/// The VM and NIC a path names, within `tenant` (404 otherwise).
async fn find_nic(
    state: &AppState,
    tenant: TenantId,
    name: &str,
    index: &str,
) -> ApiResult<(Vm, u32)> {
    let idx = nic_index(index)?;
    let vm = state.find::<Vm>(tenant, name).await?;
    Ok((vm, idx))
}

#[utoipa::path(get, path = "/v1/vms/{name}/nics/{index}/limits",
    responses((status = 200, body = NicLimitsView)))]
pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, index)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<NicLimitsView>> {
    let tenant = state.scope(&auth, &q).await?;
    let (vm, idx) = find_nic(&state, tenant, &name, &index).await?;
    let rec = state
        .db(move |store| Ok(store.get_nic_limits(&vm.id, idx)?).map(|r| (vm, r)))
        .await?;
    Ok(Json(view(&rec.0, idx, &rec.1)))
}

/// Runs a limits change on one NIC ([`NicLimitsService::change`]): audited as `action` with
/// target `vm/nics/idx`.
async fn change(
    state: &AppState,
    auth: &Auth,
    tenant: TenantId,
    action: &str,
    name: &str,
    index: &str,
    write: NicChange,
) -> ApiResult<NicLimitsView> {
    let target = format!("{name}/nics/{index}");
    state
        .audited(auth, Some(tenant), action, &target, |entry| async move {
            let (vm, idx) = find_nic(state, tenant, name, index).await?;
            let rec = NicLimitsService::new(&state.ctx.store, state.ctx.as_ref())
                .change(vm.id, idx, write, entry)
                .await?;
            Ok(view(&vm, idx, &rec))
        })
        .await
}

#[utoipa::path(put, path = "/v1/vms/{name}/nics/{index}/limits", request_body = NicLimitsBody,
    responses((status = 200, body = NicLimitsView),
              (status = 400, body = hostel_api::ApiErrorBody, description = "a limit is zero, too large, or above the operator's ceiling; `field` names it"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the limits")))]
pub async fn set(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((name, index)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(b): ApiJson<NicLimitsBody>,
) -> ApiResult<Json<NicLimitsView>> {
    let tenant = state.scope(&auth, &q).await?;
    let write = NicChange::Own(limits_from(&b));
    let v = change(&state, &auth, tenant, "vm.nic_limits", &name, &index, write).await?;
    Ok(Json(v))
}

#[utoipa::path(put, path = "/v1/vms/{name}/nics/{index}/limits/ceiling", request_body = NicLimitsBody,
    responses((status = 200, body = NicLimitsView),
              (status = 400, body = hostel_api::ApiErrorBody, description = "a limit is zero or too large; `field` names it"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the limits")))]
pub async fn set_ceiling(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath((name, index)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(b): ApiJson<NicLimitsBody>,
) -> ApiResult<Json<NicLimitsView>> {
    let tenant = state.scope(&auth, &q).await?;
    let write = NicChange::Ceiling(Some(limits_from(&b)));
    let v = change(
        &state,
        &auth,
        tenant,
        "vm.nic_ceiling",
        &name,
        &index,
        write,
    )
    .await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/vms/{name}/nics/{index}/limits/ceiling",
    responses((status = 204),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the limits")))]
pub async fn clear_ceiling(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath((name, index)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let tenant = state.scope(&auth, &q).await?;
    let write = NicChange::Ceiling(None);
    change(
        &state,
        &auth,
        tenant,
        "vm.nic_ceiling",
        &name,
        &index,
        write,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn tenant_view(t: &Tenant, ceiling: Option<NicLimits>) -> TenantNicCeilingView {
    TenantNicCeilingView {
        tenant: t.name.to_string(),
        ceiling: ceiling.as_ref().map(body),
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/nic_ceiling",
    responses((status = 200, body = TenantNicCeilingView)))]
pub async fn show_tenant(
    State(state): State<AppState>,
    Operator(_): Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantNicCeilingView>> {
    let t = state.find::<Tenant>(None, &name).await?;
    let v = state
        .db(move |store| Ok(tenant_view(&t, store.get_tenant_nic_ceiling(&t.id)?)))
        .await?;
    Ok(Json(v))
}

/// Sets (`Some`) or clears the tenant's default ceiling, audited, then pushes the switch.
async fn tenant_change(
    state: &AppState,
    auth: &Auth,
    name: &str,
    ceiling: Option<NicLimits>,
) -> ApiResult<TenantNicCeilingView> {
    let op = |state: AppState, t: Tenant, entry: NewAuditEntry| async move {
        let c = NicLimitsService::new(&state.ctx.store, state.ctx.as_ref())
            .set_tenant_ceiling(t.id, ceiling, entry)
            .await?;
        Ok(tenant_view(&t, c))
    };
    state
        .on_named::<Tenant, _, _>(auth, None, "tenant.nic_ceiling", name, op)
        .await
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/nic_ceiling", request_body = NicLimitsBody,
    responses((status = 200, body = TenantNicCeilingView),
              (status = 400, body = hostel_api::ApiErrorBody, description = "a limit is zero or too large; `field` names it"),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the limits")))]
pub async fn set_tenant(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<NicLimitsBody>,
) -> ApiResult<Json<TenantNicCeilingView>> {
    let v = tenant_change(&state, &auth, &name, Some(limits_from(&b))).await?;
    Ok(Json(v))
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/nic_ceiling",
    responses((status = 204),
              (status = 422, body = hostel_api::ApiErrorBody, description = "the switch did not take the limits")))]
pub async fn clear_tenant(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    tenant_change(&state, &auth, &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::networking;

    #[test]
    fn conversions_keep_every_field() {
        let mut l = NicLimits::default();
        l.total.packets_per_sec = Some(1);
        l.total.bytes_per_sec = Some(2);
        l.total.burst_packets = Some(3);
        l.total.burst_bytes = Some(4);
        l.flood.packets_per_sec = Some(5);
        l.unknown.bytes_per_sec = Some(6);
        assert_eq!(limits_from(&body(&l)), l);
        let s = networking::to_switch(&l);
        assert_eq!(s.total.burst_bytes, Some(4));
        assert_eq!(s.flood.packets_per_sec, Some(5));
        assert_eq!(s.unknown.bytes_per_sec, Some(6));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_nic_index_that_is_not_a_number_is_not_found() {
        assert_eq!(nic_index("3").unwrap(), 3);
        for bad in ["x", "-1", "", "4294967296"] {
            assert_eq!(nic_index(bad).unwrap_err().status, StatusCode::NOT_FOUND);
        }
    }
}
