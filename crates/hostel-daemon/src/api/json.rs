//! A JSON body extractor whose errors follow the API's error format and name the field at
//! fault (axum's own `Json` answers with plain text and no field).

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Request bodies are small JSON documents; anything larger is a mistake or an attack.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid("body", e.body_text()))?;
        if bytes.len() > MAX_BODY {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "too_large",
                message: format!("request body over {MAX_BODY} bytes"),
                field: None,
            });
        }
        // An empty body means "no options" for routes whose every field is optional.
        let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let de = &mut serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                ApiError::invalid(&field, e.into_inner().to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[derive(serde::Deserialize, Debug)]
    struct Body1 {
        #[allow(dead_code)]
        vcpus: u32,
    }

    #[tokio::test]
    async fn bad_field_types_are_named() {
        let req = Request::builder()
            .body(Body::from(r#"{"vcpus":"two"}"#))
            .unwrap();
        let err = ApiJson::<Body1>::from_request(req, &()).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("vcpus"));
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let req = Request::builder().body(Body::from("not json")).unwrap();
        let err = ApiJson::<Body1>::from_request(req, &()).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("body"));
    }
}
