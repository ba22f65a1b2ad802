//! Guest agent routes: exec (an NDJSON stream of output chunks and the exit status) and
//! what the guest reports about itself. The work is [`crate::service::agent`]'s.

use super::{ApiJson, ApiPath, ApiQuery, AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use crate::service::agent::EXEC_QUEUE;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::Json;
use hostel_api::{ExecEvent, ExecVm, GuestView};

/// The most of a command line the audit log keeps.
const AUDIT_ARGV: usize = 1024;

#[utoipa::path(post, path = "/v1/vms/{name}/exec", request_body = ExecVm,
    responses(
        (status = 200, body = ExecEvent, content_type = "application/x-ndjson",
         description = "one ExecEvent per line: output chunks (base64), then `exit` or `error`"),
        (status = 400, body = hostel_api::ApiErrorBody, description = "an empty command, a bad env entry, cwd, timeout or stdin; `field` names it"),
        (status = 404, body = hostel_api::ApiErrorBody),
        (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is not running, or its agent channel is busy"),
        (status = 422, body = hostel_api::ApiErrorBody, description = "the guest agent refused the command"),
        (status = 502, body = hostel_api::ApiErrorBody, description = "the guest agent misbehaved (malformed, overlong or late reply)"),
        (status = 503, body = hostel_api::ApiErrorBody, description = "no guest agent answers in this VM")))]
pub async fn exec(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(body): ApiJson<ExecVm>,
) -> ApiResult<Response> {
    let tenant = state.scope(&auth, &q).await?;
    // The command line goes on record, its output never does.
    let mut target = format!("{name}: {}", body.command.join(" "));
    if target.len() > AUDIT_ARGV {
        let mut end = AUDIT_ARGV;
        while !target.is_char_boundary(end) {
            end -= 1;
        }
        target.truncate(end);
        target.push('…');
    }
    let started = state
        .agent()
        .exec_start(tenant, &name, &body)
        .await
        .map_err(ApiError::from);
    state
        .audit_async(&auth, Some(tenant), "vm.exec", &target, &started)
        .await;
    let run = started?;
    let (tx, rx) = tokio::sync::mpsc::channel(EXEC_QUEUE);
    // Boxed: the run's future is large, and a task's future is built on the stack first.
    tokio::spawn(Box::pin(run.run(tx)));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[utoipa::path(get, path = "/v1/vms/{name}/guest",
    responses((status = 200, body = GuestView),
        (status = 404, body = hostel_api::ApiErrorBody),
        (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is not running"),
        (status = 502, body = hostel_api::ApiErrorBody, description = "the guest agent misbehaved"),
        (status = 503, body = hostel_api::ApiErrorBody, description = "no guest agent answers in this VM")))]
pub async fn guest(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<GuestView>> {
    let tenant = state.scope(&auth, &q).await?;
    Ok(Json(state.agent().guest(tenant, &name).await?))
}
