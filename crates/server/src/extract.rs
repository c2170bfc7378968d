//! Extractors whose rejections are [`ApiError`]s: the JSON error body with
//! its code and the field at fault, never axum's `text/plain` rejections.
//!
//! Handlers import these instead of axum's `Json`, `Query` and `Path`; they
//! behave the same on success. [`Json`] is also the JSON response.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use gantry_wire::error::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// A JSON request body (`Content-Type: application/json`), or a JSON response.
///
/// Rejections: 415 `unsupported_media_type` without a JSON content type;
/// 413 `payload_too_large` past the route's body limit; 400 `invalid_input`
/// when the body is not JSON, or not the JSON the route takes, with `field`
/// the path to the value at fault (`command[0]`, `env.FOO`), else `body`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Json<T>, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON: send `Content-Type: application/json`",
            )
            .with_field("Content-Type"));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                body_rejection(rejection.status().as_u16(), rejection.body_text())
            })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `application/json`, or any `application/…+json`, with any parameters.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// A body that could not be read: too large, or cut off.
pub(crate) fn body_rejection(status: u16, text: String) -> ApiError {
    if status == 413 {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is too large for this route ({text})"),
        )
        .with_field("body")
    } else {
        ApiError::invalid("body", format!("the body could not be read: {text}"))
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let not_json = |e: serde_json::Error| {
        ApiError::invalid("body", format!("the body is not valid JSON: {e}"))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return not_json(inner);
        }
        let field = field_name(&path, &inner.to_string());
        ApiError::invalid(&field, format!("`{field}`: {inner}"))
    })?;
    deserializer.end().map_err(not_json)?;
    Ok(value)
}

/// The field at fault: serde's path to it, or, for an error about the
/// object as a whole (`missing field `x``), the field the message names.
fn field_name(path: &str, message: &str) -> String {
    if !path.is_empty() && path != "." {
        return path.to_string();
    }
    for prefix in ["missing field `", "duplicate field `", "unknown field `"] {
        if let Some(rest) = message.split(prefix).nth(1) {
            if let Some((name, _)) = rest.split_once('`') {
                return name.to_string();
            }
        }
    }
    "body".to_string()
}

/// Query parameters. Rejection: 400 `invalid_input` naming the parameter,
/// e.g. `?force=null` → field `force`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Query<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let field = field_name(&error.path().to_string(), &error.inner().to_string());
                let field = if field == "body" {
                    "query".into()
                } else {
                    field
                };
                ApiError::invalid(
                    &field,
                    format!("query parameter `{field}`: {}", error.inner()),
                )
            })
    }
}

/// Path parameters. Rejection: 400 `invalid_input` naming the parameter
/// (`seq`, `version`), e.g. for a number out of range or bad UTF-8.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let rejection = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => return Ok(Path(value)),
            Err(rejection) => rejection,
        };
        let PathRejection::FailedToDeserializePathParams(failed) = rejection else {
            // The route table and the handler disagree: our bug, not the caller's.
            tracing::error!(error = %rejection.body_text(), "path parameters missing");
            return Err(ApiError::new(
                ErrorCode::Internal,
                "internal error; see the server log",
            ));
        };
        let message = failed.body_text();
        let key = match failed.into_kind() {
            ErrorKind::ParseErrorAtKey { key, .. }
            | ErrorKind::InvalidUtf8InPathParam { key }
            | ErrorKind::DeserializeError { key, .. } => Some(key),
            ErrorKind::ParseErrorAtIndex { index, .. } => {
                RawPathParams::from_request_parts(parts, state)
                    .await
                    .ok()
                    .and_then(|raw| raw.iter().nth(index).map(|(key, _)| key.to_string()))
            }
            ErrorKind::ParseError { .. } => RawPathParams::from_request_parts(parts, state)
                .await
                .ok()
                .and_then(|raw| raw.iter().next().map(|(key, _)| key.to_string())),
            ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
                tracing::error!(error = %message, "path parameters do not fit the handler");
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    "internal error; see the server log",
                ));
            }
            _ => None,
        };
        let field = key.unwrap_or_else(|| "path".into());
        Err(ApiError::invalid(
            &field,
            format!("path parameter `{field}`: {message}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("json"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn the_field_at_fault_is_named() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: String,
            command: Vec<String>,
        }
        let error = parse_json::<Body>(br#"{"name": "x", "command": ["a", 3]}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("command[1]"));
        let error = parse_json::<Body>(br#"{"name": "x"}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("command"));
        let error = parse_json::<Body>(b"{").unwrap_err();
        assert_eq!(error.field.as_deref(), Some("body"));
        let error = parse_json::<Body>(br#"{"name": "x", "command": []} trailing"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("body"));
        assert_eq!(error.code, ErrorCode::InvalidInput);
    }
}
