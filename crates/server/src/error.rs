use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gantry_store::StoreError;
use gantry_wire::error::{ErrorBody, ErrorCode, ErrorDetail};

/// An API error: a stable code, a message for humans, the field at fault.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            details: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(ErrorCode::InvalidInput, message)
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            StoreError::LeaseLost => ApiError::new(
                ErrorCode::LeaseLost,
                "this worker no longer holds the run's lease; abandon the run",
            ),
            StoreError::Database(message) | StoreError::SecretsKey(message) => {
                tracing::error!(error = %message, "database error");
                ApiError::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The web UI's error pages are for people, and stay HTML.
fn is_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// The longest rejection text carried over into a JSON error's message.
const MAX_REJECTION_TEXT: usize = 1024;

/// The last line of the JSON error contract: an error response that is not
/// JSON (a rejection from axum or tower that no extractor of ours wrapped,
/// e.g. a body over the route's limit read as raw bytes) is rewritten into
/// the JSON error body, keeping its status and headers such as `Allow`.
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || crate::extract::is_json(response.headers())
        || is_html(response.headers())
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let code = ErrorCode::for_status(status.as_u16());
    let message = match (code, text.is_empty()) {
        (ErrorCode::Internal, _) => {
            tracing::error!(status = status.as_u16(), error = %text, "error response from outside the handlers");
            "internal error; see the server log".to_string()
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.as_str().to_string(),
            message,
            field: None,
            details: None,
        },
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    let json = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(json))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn through_the_layer(
        status: StatusCode,
        text: &'static str,
    ) -> (StatusCode, String, serde_json::Value) {
        let router = Router::new()
            .route(
                "/",
                get(move || async move { (status, [(header::ALLOW, "GET")], text) }),
            )
            .layer(axum::middleware::from_fn(super::json_errors));
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(response.headers()[header::ALLOW], "GET");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, content_type, body)
    }

    #[tokio::test]
    async fn a_plain_text_rejection_becomes_the_json_error_body() {
        let (status, content_type, body) =
            through_the_layer(StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(content_type, "application/json");
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert_eq!(body["error"]["message"], "length limit exceeded");

        let (status, _, body) = through_the_layer(StatusCode::METHOD_NOT_ALLOWED, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["message"], "Method Not Allowed");

        // A server error's text stays in the log.
        let (_, _, body) =
            through_the_layer(StatusCode::INTERNAL_SERVER_ERROR, "secret detail").await;
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret detail"));
    }

    #[tokio::test]
    async fn successes_and_json_errors_pass_untouched() {
        let (status, content_type, _) = through_the_layer(StatusCode::OK, "fine").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/plain; charset=utf-8")
        );
    }
}
