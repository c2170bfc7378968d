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
