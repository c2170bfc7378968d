//! Terraform's `http` state backend, one per stack, at
//! `/api/v1/stacks/{stack}/state`: GET and POST the state, LOCK and UNLOCK
//! it (Terraform's default lock methods, lock info JSON in the body; 423
//! with the holder's info when it is held). Every POST keeps a version.
//!
//! Callers: a run, with the HTTP basic credential its lease carries (valid
//! for its own stack only, and only while it holds that lease), or a user
//! with an API token (bearer, or as the basic password).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use gantry_store::{LockResult, NewStateVersion, StackRecord, StateVersionRecord};
use gantry_wire::error::ErrorCode;
use gantry_wire::stack::StateVersion;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{hash_secret, User};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::{now_ms, AppState};

/// Who is touching the state.
enum Caller {
    Run(String),
    User,
}

impl Caller {
    fn run_id(&self) -> Option<&str> {
        match self {
            Caller::Run(id) => Some(id),
            Caller::User => None,
        }
    }
}

fn credentials(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let basic = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    stack: &StackRecord,
) -> ApiResult<Caller> {
    let Some(secret) = credentials(headers) else {
        return Err(ApiError::unauthorized(
            "the state backend needs credentials: a run's (TF_HTTP_USERNAME/TF_HTTP_PASSWORD, set by the launcher) or an API token",
        ));
    };
    let hash = hash_secret(&secret);
    if let Some(run_id) = state.store.check_run_credential(&hash, &stack.id).await? {
        return Ok(Caller::Run(run_id));
    }
    if state.store.find_api_token(&hash).await?.is_some() {
        return Ok(Caller::User);
    }
    tracing::warn!(stack = %stack.name, "state backend refused a credential");
    Err(ApiError::new(
        ErrorCode::Forbidden,
        "this credential gives no access to this stack's state: a run's credential only works for its own stack, while the run holds its lease",
    ))
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    force: bool,
}

fn lock_id(info: &[u8]) -> ApiResult<String> {
    let value: serde_json::Value = serde_json::from_slice(info)
        .map_err(|e| ApiError::invalid("body", format!("the lock info is not JSON: {e}")))?;
    value["ID"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid("ID", "the lock info has no \"ID\""))
}

fn held(status: StatusCode, info: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], info).into_response()
}

/// One handler for every method Terraform uses on the address.
pub async fn state_backend(
    State(state): State<AppState>,
    Path(stack): Path<String>,
    Query(query): Query<StateQuery>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let stack = super::stacks::find_stack(&state, &stack).await?;
    let caller = authorize(&state, &headers, &stack).await?;
    match method.as_str() {
        "GET" => Ok(match state.store.current_state(&stack.id).await? {
            Some((_, data)) => ([(header::CONTENT_TYPE, "application/json")], data).into_response(),
            // Terraform treats 404 / 204 as "no state yet".
            None => StatusCode::NO_CONTENT.into_response(),
        }),
        "POST" => {
            let parsed: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid("body", format!("the state is not JSON: {e}")))?;
            let version = NewStateVersion {
                serial: parsed["serial"].as_i64().unwrap_or(0),
                lineage: parsed["lineage"].as_str().unwrap_or_default().to_string(),
                resources: parsed["resources"].as_array().map_or(0, |r| r.len() as i64),
                sha256: hex::encode(Sha256::digest(&body)),
                data: body.to_vec(),
                run_id: caller.run_id().map(str::to_string),
            };
            let saved = state
                .store
                .put_state(&stack.id, query.id.as_deref(), &version, now_ms())
                .await;
            match saved {
                Ok(saved) => {
                    tracing::info!(stack = %stack.name, version = saved.version, serial = saved.serial, "state saved");
                    Ok(StatusCode::OK.into_response())
                }
                Err(gantry_store::StoreError::Conflict(_)) => {
                    let info = state.store.state_lock(&stack.id).await?.unwrap_or_default();
                    Ok(held(StatusCode::LOCKED, info))
                }
                Err(error) => Err(error.into()),
            }
        }
        "LOCK" => {
            let id = lock_id(&body)?;
            let info = String::from_utf8_lossy(&body).to_string();
            match state
                .store
                .lock_state(&stack.id, &id, &info, caller.run_id(), now_ms())
                .await?
            {
                LockResult::Done => Ok(StatusCode::OK.into_response()),
                LockResult::Held { info } => Ok(held(StatusCode::LOCKED, info)),
                LockResult::NotLocked => Ok(StatusCode::OK.into_response()),
            }
        }
        "UNLOCK" => {
            let id = if body.is_empty() {
                String::new()
            } else {
                lock_id(&body)?
            };
            let force = query.force && matches!(caller, Caller::User);
            match state.store.unlock_state(&stack.id, &id, force).await? {
                LockResult::Done | LockResult::NotLocked => Ok(StatusCode::OK.into_response()),
                LockResult::Held { info } => Ok(held(StatusCode::CONFLICT, info)),
            }
        }
        "DELETE" => Err(ApiError::new(
            ErrorCode::Conflict,
            "deleting a stack's state is not supported; delete the stack instead",
        )),
        other => Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("{other} is not a state backend method; use GET, POST, LOCK or UNLOCK"),
        )),
    }
}

fn version(record: &StateVersionRecord) -> StateVersion {
    StateVersion {
        version: record.version,
        serial: record.serial,
        lineage: record.lineage.clone(),
        resources: record.resources as u32,
        sha256: record.sha256.clone(),
        run_id: record.run_id.clone(),
        created_at: convert::timestamp(record.created_at),
    }
}

#[utoipa::path(get, path = "/stacks/{stack}/state/versions", tag = "stacks", params(("stack" = String, Path)),
    responses((status = 200, body = Vec<StateVersion>)))]
pub async fn list_state_versions(
    _user: User,
    State(state): State<AppState>,
    Path(stack): Path<String>,
) -> ApiResult<Json<Vec<StateVersion>>> {
    let stack = super::stacks::find_stack(&state, &stack).await?;
    let versions = state.store.state_versions(&stack.id).await?;
    Ok(Json(versions.iter().map(version).collect()))
}

/// The state file of one version, as Terraform wrote it.
#[utoipa::path(get, path = "/stacks/{stack}/state/versions/{version}", tag = "stacks",
    params(("stack" = String, Path), ("version" = i64, Path)),
    responses((status = 200, content_type = "application/json", description = "The state file"),
              (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn download_state_version(
    _user: User,
    State(state): State<AppState>,
    Path((stack, number)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let stack = super::stacks::find_stack(&state, &stack).await?;
    let (_, data) = state
        .store
        .state_version(&stack.id, number)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("state version {number} of stack {}", stack.name))
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], data).into_response())
}
