//! API errors: a status, a stable code, a message naming the problem, and the field at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hostel_api::{ApiErrorBody, ErrorBody};
use hostel_state::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// The failure is in the audit log already: it was committed with the undo of what
    /// the call had changed (see `service::revert`), so the caller must not log it again.
    pub recorded: bool,
}

/// What a tenant calling an operator-only route gets, word for word what any unknown
/// route answers: a customer cannot tell the two apart.
pub const NO_SUCH_ROUTE: &str = "no such route";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            recorded: false,
        }
    }
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }
    /// An unknown route, or an operator-only route called with a tenant's token.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", NO_SUCH_ROUTE)
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: format!("invalid {field}: {}", message.into()),
            field: Some(field.to_string()),
            recorded: false,
        }
    }
    pub fn not_found(what: &str, name: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("{what} {name:?} not found"),
            field: None,
            recorded: false,
        }
    }
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or unknown API token".into(),
            field: None,
            recorded: false,
        }
    }
    pub fn capacity(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "host_capacity",
            message: message.into(),
            field: None,
            recorded: false,
        }
    }
    pub fn engine(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "engine",
            message: message.into(),
            field: None,
            recorded: false,
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            field: None,
            recorded: false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound { .. } => Self {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message,
                field: None,
                recorded: false,
            },
            StoreError::Conflict { .. } => Self {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message,
                field: Some("name".into()),
                recorded: false,
            },
            StoreError::QuotaExceeded(v) => Self {
                status: StatusCode::CONFLICT,
                code: "quota_exceeded",
                message,
                field: Some(v.resource.to_string()),
                recorded: false,
            },
            StoreError::Invalid { field, .. } => Self {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                message,
                field: Some(field.to_string()),
                recorded: false,
            },
            StoreError::Backend(_) => Self::internal(message),
        }
    }
}

impl From<crate::service::DaemonError> for ApiError {
    fn from(e: crate::service::DaemonError) -> Self {
        use crate::service::DaemonError;
        let message = e.to_string();
        match e {
            DaemonError::Store(e) => e.into(),
            DaemonError::Switch(e) => Self::engine(e.to_string()),
            DaemonError::Vm(e) => e.into(),
            DaemonError::OperatorToken => Self::new(StatusCode::CONFLICT, "conflict", message),
            DaemonError::Invalid { field, .. } => Self {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                message,
                field: Some(field),
                recorded: false,
            },
            DaemonError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            DaemonError::Conflict { field, .. } => {
                let e = Self::new(StatusCode::CONFLICT, "conflict", message);
                match field {
                    Some(f) => e.with_field(f),
                    None => e,
                }
            }
            DaemonError::Forbidden { setting, .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", message).with_field(setting)
            }
            DaemonError::TooLarge { field, .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).with_field(field)
            }
            DaemonError::Image(
                hostel_images::ImageError::NotRoot(_)
                | hostel_images::ImageError::ToolMissing { .. }
                | hostel_images::ImageError::CommandFailed { .. },
            ) => Self::engine(message),
            DaemonError::Agent(e) => {
                use hostel_engine::agent::AgentError as A;
                match e {
                    // 503: nothing in the guest serves the channel (no agent, not yet
                    // started, removed); the same VM may answer later.
                    A::NoAgent(_) | A::Channel { .. } => {
                        Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_agent", message)
                    }
                    A::Refused { .. } => {
                        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "agent_refused", message)
                    }
                    _ => Self::new(StatusCode::BAD_GATEWAY, "agent_failed", message),
                }
            }
            DaemonError::Storage(e) => match e.kind() {
                Some(hostel_storage_proto::ErrorKind::NoSpace) => {
                    Self::new(StatusCode::INSUFFICIENT_STORAGE, "no_space", message)
                }
                Some(_) => Self::internal(message),
                None => Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    message,
                ),
            },
            DaemonError::StorageSync(_) => Self::internal(message),
            DaemonError::BuildFailed(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "build_failed", message)
            }
            DaemonError::Vps(hostel_vps::VpsError::Invalid { field, reason }) => {
                Self::from(DaemonError::invalid(field, reason))
            }
            DaemonError::Vps(_) => Self::engine(message),
            DaemonError::Image(_)
            | DaemonError::Engine(_)
            | DaemonError::NoImageStore
            | DaemonError::Io { .. }
            | DaemonError::Task(_) => Self::internal(message),
            DaemonError::Undone(e) => Self {
                recorded: true,
                ..Self::from(*e)
            },
        }
    }
}

impl From<crate::supervisor::VmOpError> for ApiError {
    fn from(e: crate::supervisor::VmOpError) -> Self {
        use crate::supervisor::VmOpError;
        let message = e.to_string();
        match e {
            VmOpError::Gone(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            VmOpError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            VmOpError::Capacity(_) => Self::capacity(message),
            VmOpError::Lifecycle(_) | VmOpError::TimedOut { .. } | VmOpError::StillDeleting(_) => {
                Self::engine(message)
            }
            VmOpError::DeleteFailed(_) | VmOpError::SupervisorEnded => Self::internal(message),
            VmOpError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme the client should authenticate with.
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::LifecycleError;
    use crate::service::DaemonError;
    use crate::supervisor::VmOpError;

    /// The supervisor's typed errors answer exactly what its `ApiError`s used to.
    #[test]
    fn vm_operation_errors_keep_their_status_and_message() {
        let cases = [
            (
                VmOpError::Gone("web".into()),
                StatusCode::NOT_FOUND,
                "VM \"web\" not found",
            ),
            (
                VmOpError::Conflict(LifecycleError::StoppedMeanwhile),
                StatusCode::CONFLICT,
                "a stop asked for after this start won; the VM stays stopped",
            ),
            (
                VmOpError::Capacity(crate::admission::CapacityError::Vcpus {
                    requested: 2,
                    committed: 3,
                    limit: 4,
                    host: 2,
                    overcommit: 2.0,
                }),
                StatusCode::CONFLICT,
                "host vCPUs: 2 requested + 3 committed > 4 (2 CPUs x overcommit 2)",
            ),
            (
                VmOpError::TimedOut {
                    name: "web".into(),
                    secs: 7,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "VM \"web\" did not finish the operation within 7 s; it goes on in the background",
            ),
            (
                VmOpError::SupervisorEnded,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the VM's supervisor ended (is the daemon shutting down?)",
            ),
        ];
        for (err, status, message) in cases {
            let api = ApiError::from(DaemonError::from(err));
            assert_eq!(api.status, status, "{message}");
            assert_eq!(api.message, message);
        }
    }
}
