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
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: format!("invalid {field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }
    pub fn not_found(what: &str, name: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("{what} {name:?} not found"),
            field: None,
        }
    }
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or unknown API token".into(),
            field: None,
        }
    }
    pub fn capacity(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "host_capacity",
            message: message.into(),
            field: None,
        }
    }
    pub fn engine(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "engine",
            message: message.into(),
            field: None,
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            field: None,
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
            },
            StoreError::Conflict { .. } => Self {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message,
                field: Some("name".into()),
            },
            StoreError::QuotaExceeded(v) => Self {
                status: StatusCode::CONFLICT,
                code: "quota_exceeded",
                message,
                field: Some(v.resource.to_string()),
            },
            StoreError::Invalid { field, .. } => Self {
                status: StatusCode::BAD_REQUEST,
                code: "invalid",
                message,
                field: Some(field.to_string()),
            },
            StoreError::Backend(_) => Self::internal(message),
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
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
