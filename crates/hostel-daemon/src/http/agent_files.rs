//! File transfer through the guest agent (`PUT`/`GET /v1/vms/{name}/files`) and the
//! operator's per-tenant agent settings (`/v1/tenants/{tenant}/agent`). The work is
//! [`crate::service::agent_files`]'s.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, Operator, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::agent_files::PULL_QUEUE;
use crate::service::blocking;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use hostel_api::{
    FilePull, FilePush, FileTransferView, SetTenantAgent, TenantAgentView, FILE_SHA256_HEADER,
    FILE_SIZE_HEADER,
};
use hostel_state::{AgentSettings, Tenant};
use serde::Deserialize;

/// A push's query: [`FilePush`]'s fields and (operator) the tenant. Spelled out, not
/// `#[serde(flatten)]`: flattened numbers in a query string fail to parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    path: String,
    mode: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    path: String,
    tenant: Option<String>,
}

/// The audit target: the VM, the path and the size (never the content).
fn target(name: &str, path: &str, size: Option<u64>) -> String {
    let mut path: String = path.chars().take(512).collect();
    path.retain(|c| !c.is_control());
    match size {
        Some(n) => format!("{name}:{path} ({n} bytes)"),
        None => format!("{name}:{path}"),
    }
}

#[utoipa::path(put, path = "/v1/vms/{name}/files", params(FilePush),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "the file's content, streamed"),
    responses((status = 200, body = FileTransferView),
        (status = 400, body = hostel_api::ApiErrorBody, description = "a relative path, a path with NUL, a bad mode, a failed chmod/chown; `field` names it"),
        (status = 403, body = hostel_api::ApiErrorBody, description = "the operator turned file transfer off for the tenant (`field`: files)"),
        (status = 404, body = hostel_api::ApiErrorBody),
        (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is not running, its agent channel is busy, or the guest's SHA-256 differs"),
        (status = 413, body = hostel_api::ApiErrorBody, description = "larger than the tenant's `max_file_bytes`"),
        (status = 502, body = hostel_api::ApiErrorBody, description = "the guest agent misbehaved"),
        (status = 503, body = hostel_api::ApiErrorBody, description = "no guest agent answers in this VM")))]
pub async fn push(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<FileTransferView>> {
    let tenant = state
        .scope(&auth, &TenantQuery { tenant: q.tenant })
        .await?;
    let push = FilePush {
        path: q.path,
        mode: q.mode,
        uid: q.uid,
        gid: q.gid,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let pushed = state
        .agent()
        .push(tenant, &name, &push, declared, body.into_data_stream())
        .await
        .map_err(ApiError::from);
    let size = pushed.as_ref().ok().map(|v| v.size).or(declared);
    state
        .audit_async(
            &auth,
            Some(tenant),
            "vm.file.push",
            &target(&name, &push.path, size),
            &pushed,
        )
        .await;
    Ok(Json(pushed?))
}

#[utoipa::path(get, path = "/v1/vms/{name}/files", params(FilePull),
    responses(
        (status = 200, content_type = "application/octet-stream",
         description = "the file's content; headers x-hostel-file-size and (when the guest has sha256sum) x-hostel-guest-sha256; the stream is cut short if the bytes read do not hash to it"),
        (status = 400, body = hostel_api::ApiErrorBody, description = "a relative path, a path with NUL, not a regular file; `field` names it"),
        (status = 403, body = hostel_api::ApiErrorBody, description = "the operator turned file transfer off for the tenant (`field`: files)"),
        (status = 404, body = hostel_api::ApiErrorBody, description = "no such VM, or no such file in the guest"),
        (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is not running, or its agent channel is busy"),
        (status = 413, body = hostel_api::ApiErrorBody, description = "larger than the tenant's `max_file_bytes`"),
        (status = 502, body = hostel_api::ApiErrorBody, description = "the guest agent misbehaved"),
        (status = 503, body = hostel_api::ApiErrorBody, description = "no guest agent answers in this VM")))]
pub async fn pull(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PullQuery>,
) -> ApiResult<Response> {
    let tenant = state
        .scope(&auth, &TenantQuery { tenant: q.tenant })
        .await?;
    let pull = FilePull { path: q.path };
    let started = state
        .agent()
        .pull_start(tenant, &name, &pull)
        .await
        .map_err(ApiError::from);
    let size = started.as_ref().ok().map(|r| r.size);
    state
        .audit_async(
            &auth,
            Some(tenant),
            "vm.file.pull",
            &target(&name, &pull.path, size),
            &started,
        )
        .await;
    let run = started?;
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, run.size)
        .header(FILE_SIZE_HEADER, run.size);
    if let Some(sum) = &run.guest_sha256 {
        resp = resp.header(FILE_SHA256_HEADER, sum.as_str());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(PULL_QUEUE);
    // Boxed: the run's future is large, and a task's future is built on the stack first.
    tokio::spawn(Box::pin(run.run(tx)));
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    resp.body(Body::from_stream(chunks))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn view(s: AgentSettings) -> TenantAgentView {
    TenantAgentView {
        exec: s.exec,
        files: s.files,
        max_file_bytes: s.max_file_bytes,
    }
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/agent",
    responses((status = 200, body = TenantAgentView), (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn show_tenant(
    State(state): State<AppState>,
    Operator(_): Operator,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantAgentView>> {
    let t = state.find::<Tenant>(None, &name).await?;
    let s = blocking(&state.ctx.store, move |store| store.get_agent(&t.id)).await?;
    Ok(Json(view(s)))
}

#[utoipa::path(put, path = "/v1/tenants/{tenant}/agent", request_body = SetTenantAgent,
    responses((status = 200, body = TenantAgentView),
        (status = 400, body = hostel_api::ApiErrorBody, description = "max_file_bytes outside 1 byte to 64 GiB"),
        (status = 404, body = hostel_api::ApiErrorBody)))]
pub async fn set_tenant(
    State(state): State<AppState>,
    Operator(auth): Operator,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<SetTenantAgent>,
) -> ApiResult<Json<TenantAgentView>> {
    let op = |state: AppState, t: Tenant, entry| async move {
        let s = blocking(&state.ctx.store, move |store| {
            let cur = store.get_agent(&t.id)?;
            let new = AgentSettings {
                exec: b.exec.unwrap_or(cur.exec),
                files: b.files.unwrap_or(cur.files),
                max_file_bytes: b.max_file_bytes.unwrap_or(cur.max_file_bytes),
            };
            store.set_agent(&t.id, &new, &entry)
        })
        .await?;
        Ok(view(s))
    };
    let v = state
        .on_named::<Tenant, _, _>(&auth, None, "tenant.agent", &name, op)
        .await?;
    Ok(Json(v))
}
