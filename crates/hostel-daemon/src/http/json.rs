//! Request extractors whose errors follow the API's error format and name the field at
//! fault (axum's own `Json` and `Query` answer with plain text and no field): JSON bodies
//! ([`ApiJson`]) and query strings ([`ApiQuery`]).

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// Request bodies are small JSON documents; anything larger is a mistake or an attack.
/// Read with this bound whatever the client says its length is, so a chunked body cannot
/// make the daemon buffer more.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body over {MAX_BODY} bytes"),
    )
    .with_field("body")
}

/// `application/json`, with parameters (`; charset=utf-8`) or as a `+json` suffix type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let declared_json = is_json(req.headers());
        // A body announced too large is refused before any of it is read: the client learns
        // at once, and the daemon spends nothing on it.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                let mut over = false;
                while let Some(c) = cause {
                    over |= c.is::<http_body_util::LengthLimitError>();
                    cause = c.source();
                }
                if over {
                    too_large()
                } else {
                    ApiError::invalid("body", format!("reading the request body: {e}"))
                }
            })?;
        // An empty body means "no options" for routes whose every field is optional, and
        // needs no type; anything else must say it is JSON.
        if !bytes.is_empty() && !declared_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            )
            .with_field("body"));
        }
        let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        parse(text).map(ApiJson)
    }
}

/// One JSON document and nothing after it but whitespace.
fn parse<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::invalid(&field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| {
        ApiError::invalid("body", format!("trailing data after the JSON value: {e}"))
    })?;
    Ok(value)
}

/// A query string, refused with the API's error format (naming the parameter when serde
/// can tell which one).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "query".to_string()
                } else {
                    path
                };
                ApiError::invalid(&field, e.into_inner().to_string())
            })
    }
}

/// A path parameter. One that is not UTF-8 names nothing the API has: 404, in the API's
/// error format (axum's own `Path` answers 400 in plain text).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.body_text()))
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

    fn json(body: impl Into<Body>) -> Request {
        Request::builder()
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap()
    }

    async fn refusal(req: Request) -> ApiError {
        ApiJson::<Body1>::from_request(req, &()).await.unwrap_err()
    }

    #[tokio::test]
    async fn bad_field_types_are_named() {
        let err = refusal(json(r#"{"vcpus":"two"}"#)).await;
        assert_eq!(err.field.as_deref(), Some("vcpus"));
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let err = refusal(json("not json")).await;
        assert_eq!(err.field.as_deref(), Some("body"));
    }

    /// Issue 14 (12): trailing garbage, oversized bodies and bodies that are not declared
    /// JSON are refused with their own statuses.
    #[tokio::test]
    async fn bodies_are_one_json_value_of_bounded_size_declared_as_json() {
        let err = refusal(json(r#"{"vcpus":1} {"vcpus":2}"#)).await;
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{err:?}");
        assert!(err.message.contains("trailing"), "{err:?}");
        assert!(
            ApiJson::<Body1>::from_request(json("{\"vcpus\":1}\n "), &())
                .await
                .is_ok()
        );

        for size in [MAX_BODY + 1, 3 << 20] {
            let mut big = b"{\"vcpus\":1,\"pad\":\"".to_vec();
            big.resize(size, b'x');
            let err = refusal(json(big)).await;
            assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE, "{size}: {err:?}");
        }
        // A chunked body (no length announced) is cut off at the same bound.
        let chunks = futures_util::stream::iter(
            (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])),
        );
        let err = refusal(json(Body::from_stream(chunks))).await;
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);

        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut req = Request::builder();
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let err = refusal(req.body(Body::from(r#"{"vcpus":1}"#)).unwrap()).await;
            assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        }
        let req = Request::builder()
            .header("content-type", "application/json; charset=utf-8")
            .body(Body::from(r#"{"vcpus":1}"#))
            .unwrap();
        assert!(ApiJson::<Body1>::from_request(req, &()).await.is_ok());
    }
}
