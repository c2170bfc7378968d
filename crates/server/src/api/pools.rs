use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gantry_pki::PoolPublicKey;
use gantry_store::{NewPool, PoolKey, PoolRecord};
use gantry_wire::error::ErrorCode;
use gantry_wire::pool::{CreatePool, Pool, PoolWithToken, ResetPool, SealedStack};
use gantry_wire::token::PoolToken;
use serde::Deserialize;

use crate::auth::{hash_secret, new_secret, User};
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::{now_ms, AppState};

/// Pool names go into URLs, file names and Kubernetes labels.
fn validate_name(name: &str) -> ApiResult<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_start {
        return Err(ApiError::invalid(
            "name",
            format!("pool name {name:?} is not valid: use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit"),
        ));
    }
    Ok(())
}

/// Parses the CSR and mints a fresh credential for it.
fn new_key(csr: &str) -> ApiResult<(PoolKey, String)> {
    let public =
        PoolPublicKey::from_csr_pem(csr).map_err(|e| ApiError::invalid("csr", e.to_string()))?;
    let credential = new_secret("gantry_pool_");
    let key = PoolKey {
        public_key_pem: public.to_public_key_pem(),
        key_fingerprint: public.fingerprint(),
        credential_hash: hash_secret(&credential),
    };
    Ok((key, credential))
}

fn with_token(
    state: &AppState,
    headers: &HeaderMap,
    record: &PoolRecord,
    credential: String,
) -> PoolWithToken {
    let token = PoolToken {
        url: super::public_url(state, headers),
        pool_id: record.id.clone(),
        credential,
        key_fingerprint: record.key.key_fingerprint.clone(),
        server_version: gantry_wire::VERSION.to_string(),
    };
    PoolWithToken {
        id: record.id.clone(),
        name: record.name.clone(),
        token: token.encode(),
        pool: convert::pool(record),
        stacks_affected: Vec::new(),
        runs_discarded: Vec::new(),
    }
}

pub(crate) async fn find_pool(state: &AppState, pool: &str) -> ApiResult<PoolRecord> {
    state
        .store
        .find_pool(pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pool {pool:?}")))
}

#[utoipa::path(post, path = "/pools", tag = "pools", request_body = CreatePool,
    responses((status = 201, body = PoolWithToken), (status = 400, body = gantry_wire::error::ErrorBody),
              (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn create_pool(
    _user: User,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<CreatePool>,
) -> ApiResult<(StatusCode, Json<PoolWithToken>)> {
    validate_name(&request.name)?;
    let (key, credential) = new_key(&request.csr)?;
    let pool = NewPool {
        name: request.name,
        description: request.description,
        key,
    };
    let record = state.store.create_pool(&pool, now_ms()).await?;
    tracing::info!(pool_id = %record.id, name = %record.name, "pool created");
    Ok((
        StatusCode::CREATED,
        Json(with_token(&state, &headers, &record, credential)),
    ))
}

#[utoipa::path(get, path = "/pools", tag = "pools", responses((status = 200, body = Vec<Pool>)))]
pub async fn list_pools(_user: User, State(state): State<AppState>) -> ApiResult<Json<Vec<Pool>>> {
    let pools = state.store.list_pools().await?;
    Ok(Json(pools.iter().map(convert::pool).collect()))
}

#[utoipa::path(get, path = "/pools/{pool}", tag = "pools", params(("pool" = String, Path, description = "Name or ID")),
    responses((status = 200, body = Pool), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn show_pool(
    _user: User,
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(convert::pool(&find_pool(&state, &pool).await?)))
}

/// A new CSR: the old token, and every worker session made with it, stop
/// working at once. Returns the new token.
///
/// Secret variables and stored plans are sealed to the pool's key: with a
/// new key, no worker can open them. Unless `force`, such a reset is refused
/// (409) and the stacks named; with it, waiting plans are discarded and the
/// answer lists the stacks whose secret variables must be set again.
#[utoipa::path(post, path = "/pools/{pool}/reset", tag = "pools", request_body = ResetPool,
    params(("pool" = String, Path, description = "Name or ID")),
    responses((status = 200, body = PoolWithToken), (status = 400, body = gantry_wire::error::ErrorBody),
              (status = 404, body = gantry_wire::error::ErrorBody),
              (status = 409, body = gantry_wire::error::ErrorBody,
               description = "Stacks hold values sealed to the old key; `details.stacks` lists them. Pass force to reset anyway")))]
pub async fn reset_pool(
    _user: User,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pool): Path<String>,
    Json(request): Json<ResetPool>,
) -> ApiResult<Json<PoolWithToken>> {
    Ok(Json(reset(&state, &headers, &pool, request).await?))
}

/// Resets a pool (the API's and the web UI's); the answer holds the new token.
pub(crate) async fn reset(
    state: &AppState,
    headers: &HeaderMap,
    pool: &str,
    request: ResetPool,
) -> ApiResult<PoolWithToken> {
    let record = find_pool(state, pool).await?;
    let (key, credential) = new_key(&request.csr)?;
    let new_key = key.key_fingerprint != record.key.key_fingerprint;
    let affected: Vec<SealedStack> = if new_key {
        let sealed = state.store.sealed_to_pool(&record.id).await?;
        sealed
            .into_iter()
            .map(|s| SealedStack {
                name: s.stack_name,
                secret_env: s.secret_env,
                runs: s.runs,
            })
            .collect()
    } else {
        Vec::new()
    };
    if !affected.is_empty() && !request.force {
        let list = affected.iter().map(describe).collect::<Vec<_>>().join("; ");
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "resetting pool {} to a new key leaves {} stack(s) unable to run: {list}. \
                 Their values are sealed to the old key. Reset with --force, then set each secret again \
                 with `gantry stack update STACK --secret-env NAME=VALUE` (waiting plans are discarded: trigger them again)",
                record.name,
                affected.len()
            ),
        )
        .with_field("force")
        .with_details(serde_json::json!({ "stacks": affected })));
    }
    let reset = state.store.reset_pool(&record.id, &key, now_ms()).await?;
    for run_id in &reset.discarded {
        state.signals.run_ended(run_id);
    }
    crate::metrics::runs_ended_by_id(state, &reset.discarded);
    if !reset.discarded.is_empty() {
        state.signals.run_ready(&reset.pool.id);
    }
    wake_pool_workers(state, &reset.pool.id).await;
    tracing::info!(pool_id = %reset.pool.id, generation = reset.pool.generation, new_key,
        stacks_affected = affected.len(), runs_discarded = reset.discarded.len(), "pool reset");
    let mut answer = with_token(state, headers, &reset.pool, credential);
    answer.stacks_affected = affected;
    answer.runs_discarded = reset.discarded;
    Ok(answer)
}

fn describe(stack: &SealedStack) -> String {
    let mut parts = Vec::new();
    if !stack.secret_env.is_empty() {
        parts.push(format!("secret variables {}", stack.secret_env.join(", ")));
    }
    if !stack.runs.is_empty() {
        parts.push(format!(
            "plans waiting to be applied in runs {}",
            stack.runs.join(", ")
        ));
    }
    format!("{} ({})", stack.name, parts.join("; "))
}

/// Every worker now registered finishes its runs and exits, to be replaced
/// by one with fresh configuration.
#[utoipa::path(post, path = "/pools/{pool}/cycle", tag = "pools", params(("pool" = String, Path, description = "Name or ID")),
    responses((status = 200, body = Pool)))]
pub async fn cycle_pool(
    _user: User,
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(convert::pool(&cycle(&state, &pool).await?)))
}

/// Cycles a pool (the API's and the web UI's).
pub(crate) async fn cycle(state: &AppState, pool: &str) -> ApiResult<PoolRecord> {
    let record = find_pool(state, pool).await?;
    let record = state.store.cycle_pool(&record.id, now_ms()).await?;
    wake_pool_workers(state, &record.id).await;
    Ok(record)
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/pools/{pool}", tag = "pools",
    params(("pool" = String, Path, description = "Name or ID"), ("force" = Option<bool>, Query, description = "Cancel or fail runs not yet ended; never deletes stacks")),
    responses((status = 204), (status = 404, body = gantry_wire::error::ErrorBody),
              (status = 409, body = gantry_wire::error::ErrorBody, description = "Runs not yet ended (without force), or stacks still use the pool (even with force)")))]
pub async fn delete_pool(
    _user: User,
    State(state): State<AppState>,
    Path(pool): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let record = find_pool(&state, &pool).await?;
    let workers = state.store.list_workers(Some(&record.id), false).await?;
    let ended = state
        .store
        .delete_pool(&record.id, query.force, now_ms())
        .await?;
    for run_id in &ended {
        state.signals.run_ended(run_id);
    }
    crate::metrics::runs_ended_by_id(&state, &ended);
    let ids: Vec<String> = workers.into_iter().map(|w| w.id).collect();
    state.signals.instruct_pool_workers(&ids);
    tracing::info!(pool_id = %record.id, runs_ended = ended.len(), "pool deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn wake_pool_workers(state: &AppState, pool_id: &str) {
    if let Ok(workers) = state.store.list_workers(Some(pool_id), false).await {
        let ids: Vec<String> = workers.into_iter().map(|w| w.id).collect();
        state.signals.instruct_pool_workers(&ids);
    }
}
