//! The interactive serial console: `GET /v1/vms/{name}/console/attach` upgrades the HTTP/1.1
//! connection (`Upgrade: hostel-console`) and relays raw bytes both ways between it and the
//! VM's `console.sock`.
//!
//! QEMU's console socket serves one client at a time; a second client would sit in the
//! listen backlog and never see a byte. The daemon therefore keeps one attachment per VM and
//! refuses another with 409 until the first goes away.

use super::{ApiPath, ApiQuery};
use super::{AppState, Auth, TenantQuery};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use hostel_state::{ObservedState, Vm, VmId};
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::net::UnixStream;

/// The `Upgrade` protocol name a client asks for.
pub const PROTOCOL: &str = "hostel-console";

/// VMs whose console has a client attached right now.
#[derive(Default)]
pub struct AttachedConsoles {
    vms: Mutex<HashSet<VmId>>,
}

impl AttachedConsoles {
    /// Claims the VM's console; `None` when another client holds it.
    fn claim(self: &Arc<Self>, vm: VmId) -> Option<Attachment> {
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        vms.insert(vm).then(|| Attachment {
            owner: self.clone(),
            vm,
        })
    }
}

/// A held console; released on drop, however the session ends.
struct Attachment {
    owner: Arc<AttachedConsoles>,
    vm: VmId,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut vms = self.owner.vms.lock().unwrap_or_else(|e| e.into_inner());
        vms.remove(&self.vm);
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// True when a comma-separated header (`Connection: keep-alive, Upgrade`) names `token`.
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[utoipa::path(get, path = "/v1/vms/{name}/console/attach",
    description = "Attach to the VM's serial console: an HTTP/1.1 upgrade \
        (`Connection: Upgrade`, `Upgrade: hostel-console`), after which the connection carries \
        raw console bytes both ways. One client at a time.",
    responses((status = 101, description = "attached; the connection is now the console"),
              (status = 400, body = hostel_api::ApiErrorBody),
              (status = 404, body = hostel_api::ApiErrorBody),
              (status = 409, body = hostel_api::ApiErrorBody, description = "the VM is not running, or its console is attached elsewhere")))]
pub async fn attach(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    mut req: Request,
) -> ApiResult<Response> {
    let tenant = state.scope(&auth, &q).await?;
    let headers = req.headers();
    let (held, console) = state
        .on_named(
            &auth,
            tenant,
            "vm.console.attach",
            &name,
            |state, vm, entry| async move {
                let prepared = prepare(&state, vm, headers).await?;
                // An attachment changes nothing in the store: its entry stands alone.
                state
                    .db(move |store| Ok(store.append_audit(&entry)?))
                    .await?;
                Ok(prepared)
            },
        )
        .await?;

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _held = held;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "console upgrade failed");
                return;
            }
        };
        relay(TokioIo::new(upgraded), console).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static(PROTOCOL))
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Everything that can refuse the attach, before the connection is switched over: the
/// request, the VM, its state, the one-client rule, and the console socket itself.
async fn prepare(
    state: &AppState,
    vm: Vm,
    headers: &HeaderMap,
) -> ApiResult<(Attachment, UnixStream)> {
    if !header_has(headers, header::CONNECTION, "upgrade")
        || !header_has(headers, header::UPGRADE, PROTOCOL)
    {
        return Err(ApiError::invalid(
            "upgrade",
            format!("attaching needs `Connection: Upgrade` and `Upgrade: {PROTOCOL}`"),
        ));
    }
    if vm.observed.state != ObservedState::Running {
        return Err(conflict(
            "not_running",
            format!(
                "vm {:?} is not running (state: {}); start it first",
                vm.name.as_str(),
                vm.observed.state.as_str()
            ),
        ));
    }
    let held = state
        .consoles
        .claim(vm.id)
        .ok_or_else(|| conflict("console_busy", "console is attached elsewhere"))?;
    let path = hostel_engine::RunDir::new(state.ctx.layout.vm_run_dir(&vm.id)).console_socket();
    let console = UnixStream::connect(&path)
        .await
        .map_err(|e| ApiError::internal(format!("console socket {}: {e}", path.display())))?;
    Ok((held, console))
}

/// Copies both ways until either side ends: the client detaching (EOF or a reset) or QEMU
/// closing the console (the VM stopped). Ending both at once frees the console for the next
/// client even when one side never closes its half.
async fn relay<C>(client: C, console: UnixStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut console_rd, mut console_wr) = console.into_split();
    tokio::select! {
        r = tokio::io::copy(&mut client_rd, &mut console_wr) => {
            tracing::debug!(result = ?r, "console client detached");
        }
        r = tokio::io::copy(&mut console_rd, &mut client_wr) => {
            tracing::debug!(result = ?r, "console closed by the VM");
        }
    }
}
