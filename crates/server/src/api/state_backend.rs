//! Terraform's `http` state backend, one per stack, at
//! `/api/v1/stacks/{stack}/state`: GET and POST the state, LOCK and UNLOCK
//! it (Terraform's default lock methods, lock info JSON in the body; 423
//! with the holder's info when it is held). Every POST keeps a version.
//!
//! Callers: a run, with the HTTP basic credential its lease carries (valid
//! for its own stack only, and only while it holds that lease; a proposed
//! run's may only GET), or a user with an API token (bearer, or as the
//! basic password). The credential is checked before the stack is looked
//! up; every refusal is a 403 that counts towards the failed-auth limit.

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
    /// A run, with the credential its lease carries; `read_only` for a
    /// proposed run.
    Run {
        id: String,
        read_only: bool,
    },
    User,
}

impl Caller {
    fn run_id(&self) -> Option<&str> {
        match self {
            Caller::Run { id, .. } => Some(id),
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

fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "this credential gives no access to this stack's state: a run's credential only works for its own stack, while the run holds its lease; a user needs a valid API token",
    )
}

/// Authenticates the caller, then finds the stack: the stack is looked up
/// only for a valid credential, and a run's credential gets the same 403 for
/// another stack as for one that does not exist, so names cannot be probed.
/// Reads only (no writer connection).
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    stack: &str,
) -> ApiResult<(Caller, StackRecord)> {
    let Some(secret) = credentials(headers) else {
        return Err(ApiError::unauthorized(
            "the state backend needs credentials: a run's (TF_HTTP_USERNAME/TF_HTTP_PASSWORD, set by the launcher) or an API token",
        ));
    };
    let hash = hash_secret(&secret);
    if let Some(credential) = state.store.check_run_credential(&hash).await? {
        if stack != credential.stack_id && stack != credential.stack_name {
            tracing::warn!(run_id = %credential.run_id, "state backend refused a run credential for another stack");
            return Err(refused());
        }
        let record = super::stacks::find_stack(state, &credential.stack_id).await?;
        let caller = Caller::Run {
            id: credential.run_id,
            read_only: credential.read_only,
        };
        return Ok((caller, record));
    }
    if state.store.find_api_token(&hash).await?.is_some() {
        let record = super::stacks::find_stack(state, stack).await?;
        return Ok((Caller::User, record));
    }
    tracing::warn!("state backend refused a credential");
    Err(refused())
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    force: bool,
    /// With `force`: also give up on the stack's LOST run, if it has one.
    #[serde(default)]
    end_lost_run: bool,
}

/// A user force-unlocks a stack held by a LOST run: only when told to give
/// up on that run (`end_lost_run`), which then ends FAILED; otherwise 409,
/// saying what is at stake and how to go on.
async fn give_up_lost_run(state: &AppState, stack: &StackRecord, end_it: bool) -> ApiResult<()> {
    let Some(lost) = state.store.lost_run(&stack.id).await? else {
        return Ok(());
    };
    if !end_it {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "stack {} is held by run {}, LOST: its worker was lost during the apply, which may have changed \
                 resources. If the worker comes back, it saves the state and the run ends on its own. To give up \
                 on it, check the resources against the state, then run `gantry stack state unlock {} --force`",
                stack.name, lost.id, stack.name
            ),
        ));
    }
    let reason =
        "an operator gave up on the LOST run and force-unlocked its stack; what its apply changed \
                  after the last saved state is unknown: check the resources against the state";
    if let Some(run) = state
        .store
        .give_up_lost_run(&stack.id, reason, now_ms())
        .await?
    {
        tracing::warn!(run_id = %run.id, stack = %stack.name, "LOST run given up by an operator");
        state.signals.run_ended(&run.id);
        state.signals.run_ready(&run.pool_id);
    }
    Ok(())
}

/// A user's force-unlock (the API's and the web UI's): see [`give_up_lost_run`].
pub(crate) async fn force_unlock(
    state: &AppState,
    stack: &StackRecord,
    end_lost_run: bool,
) -> ApiResult<()> {
    give_up_lost_run(state, stack, end_lost_run).await?;
    state.store.unlock_state(&stack.id, "", true).await?;
    tracing::info!(stack = %stack.name, "state force-unlocked by a user");
    Ok(())
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
    let (caller, stack) = authorize(&state, &headers, &stack).await?;
    if matches!(
        caller,
        Caller::Run {
            read_only: true,
            ..
        }
    ) && method != Method::GET
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a proposed run's state credential is read-only: it may GET the state, not {method} it; \
                 plan with -lock=false (the launcher does), or trigger a tracked run to change the state"
            ),
        ));
    }
    match method.as_str() {
        "GET" => Ok(match state.store.current_state(&stack.id).await? {
            Some((_, data)) => ([(header::CONTENT_TYPE, "application/json")], data).into_response(),
            // Terraform treats 404 / 204 as "no state yet".
            None => StatusCode::NO_CONTENT.into_response(),
        }),
        "POST" => {
            let version = new_state_version(&body, caller.run_id().map(str::to_string))?;
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
            if force {
                give_up_lost_run(&state, &stack, query.end_lost_run).await?;
            }
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

/// A Terraform state as a version to store, by `run_id` when a run wrote it.
pub(crate) fn new_state_version(body: &[u8], run_id: Option<String>) -> ApiResult<NewStateVersion> {
    let parsed: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the state is not JSON: {e}")))?;
    Ok(NewStateVersion {
        serial: parsed["serial"].as_i64().unwrap_or(0),
        lineage: parsed["lineage"].as_str().unwrap_or_default().to_string(),
        resources: parsed["resources"].as_array().map_or(0, |r| r.len() as i64),
        sha256: hex::encode(Sha256::digest(body)),
        data: body.to_vec(),
        run_id,
    })
}

pub(crate) fn state_version(record: &StateVersionRecord) -> StateVersion {
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
    Ok(Json(versions.iter().map(state_version).collect()))
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
