use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use gantry_wire::error::ErrorCode;
use gantry_wire::pool::ServerInfo;

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, description = "The server is up")))]
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness, for load balancers: the server is up *and* reaches its
/// database. A replica cut off from PostgreSQL answers 503, so the load
/// balancer sends its traffic to the others.
#[utoipa::path(get, path = "/ready", tag = "meta", responses(
    (status = 200, description = "The server is up and reaches its database"),
    (status = 503, description = "The database is out of reach", body = gantry_wire::error::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.count_api_tokens(),
    )
    .await;
    match probe {
        Ok(Ok(_)) => Ok(Json(serde_json::json!({"status": "ok", "database": "ok"}))),
        Ok(Err(error)) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("the database is out of reach: {error}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the database did not answer within 2 s",
        )),
    }
}

#[utoipa::path(get, path = "/version", tag = "meta", responses((status = 200, body = ServerInfo)))]
pub async fn version(State(state): State<AppState>, headers: HeaderMap) -> Json<ServerInfo> {
    Json(ServerInfo {
        version: gantry_wire::VERSION.to_string(),
        launcher_download_url: format!(
            "{}{}/launcher/download",
            public_url(&state, &headers),
            gantry_wire::API_PREFIX
        ),
    })
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "This document")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// The launcher binary of this server's version. No token needed: it holds
/// no secret, and fresh workers fetch it before they have credentials.
#[utoipa::path(get, path = "/launcher/download", tag = "meta",
    responses((status = 200, description = "The gantry-launcher binary", content_type = "application/octet-stream"),
              (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn launcher_download(State(state): State<AppState>) -> ApiResult<Response> {
    let path = state.config.launcher_binary.clone().or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(exe.with_file_name("gantry-launcher"))
    });
    let Some(path) = path else {
        return Err(ApiError::not_found("launcher binary"));
    };
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "this server has no launcher binary at {}; start it with --launcher-binary",
                path.display()
            ),
        )
    })?;
    let sha256 = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&bytes))
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"gantry-launcher\"".to_string(),
            ),
            (header::HeaderName::from_static("x-gantry-sha256"), sha256),
            (
                header::HeaderName::from_static("x-gantry-version"),
                gantry_wire::VERSION.to_string(),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such API route; see /api/v1/openapi.json",
    )
}

/// A route that exists, called with a method it does not answer; axum adds
/// the `Allow` header.
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("this route does not answer {method}; the Allow header lists the methods it does, and /api/v1/openapi.json describes them"),
    )
}

/// The URL clients reach this server at: `--public-url`, else the request's host.
pub fn public_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| state.config.listen.to_string());
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}
