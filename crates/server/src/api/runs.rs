use axum::extract::State;
use axum::http::StatusCode;
use gantry_store::{NewRun, RunFilter, RunRecord};
use gantry_wire::run::{Run, RunState, RunType, SubmitRun};
use serde::Deserialize;

use crate::auth::User;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::{now_ms, AppState};

pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) async fn load_run(state: &AppState, run_id: &str) -> ApiResult<Run> {
    let record = state
        .store
        .find_run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id:?}")))?;
    let transitions = state.store.run_transitions(run_id).await?;
    Ok(convert::run(&record, &transitions))
}

/// Queues a task run: a command run on one worker of the pool.
#[utoipa::path(post, path = "/runs", tag = "runs", request_body = SubmitRun,
    responses((status = 201, body = Run), (status = 400, body = gantry_wire::error::ErrorBody),
              (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn submit_run(
    _user: User,
    State(state): State<AppState>,
    Json(request): Json<SubmitRun>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    if request.command.is_empty() || request.command[0].trim().is_empty() {
        return Err(ApiError::invalid(
            "command",
            "the command is empty: give the program to run and its arguments",
        ));
    }
    if let Some(bad) = request.env.keys().find(|k| !valid_env_name(k)) {
        return Err(ApiError::invalid(
            "env",
            format!("{bad:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit"),
        ));
    }
    if request.pool.trim().is_empty() {
        return Err(ApiError::invalid(
            "pool",
            "no pool given: name the worker pool that should run this",
        ));
    }
    let pool = state.store.find_pool(&request.pool).await?.ok_or_else(|| {
        ApiError::not_found(format!("pool {:?}", request.pool)).with_field("pool")
    })?;
    let run = NewRun {
        pool_id: pool.id.clone(),
        run_type: RunType::Task,
        command: request.command,
        env: request.env,
        image: request.image.filter(|i| !i.trim().is_empty()),
    };
    let record = state.store.insert_run(&run, now_ms()).await?;
    state.signals.run_ready(&pool.id);
    tracing::info!(run_id = %record.id, pool = %pool.name, "run queued");
    Ok((
        StatusCode::CREATED,
        Json(load_run(&state, &record.id).await?),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pool: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/runs", tag = "runs",
    params(("pool" = Option<String>, Query, description = "Pool name or ID"),
           ("state" = Option<String>, Query, description = "Only runs in this state"),
           ("limit" = Option<u32>, Query, description = "At most this many, newest first (default 100)")),
    responses((status = 200, body = Vec<Run>), (status = 404, description = "No such pool", body = gantry_wire::error::ErrorBody)))]
pub async fn list_runs(
    _user: User,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<Run>>> {
    let pool_id = match &query.pool {
        Some(pool) => Some(super::pools::find_pool(&state, pool).await?.id),
        None => None,
    };
    let run_state = match &query.state {
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ApiError::invalid("state", format!("{s:?} is not a run state; use one of QUEUED, READY, PREPARING, …, FINISHED, FAILED"))
        })?),
        None => None,
    };
    let filter = RunFilter {
        pool_id,
        state: run_state,
        limit: query.limit.unwrap_or(100),
    };
    let records = state.store.list_runs(&filter).await?;
    let mut runs = Vec::with_capacity(records.len());
    for record in &records {
        runs.push(convert::run(
            record,
            &state.store.run_transitions(&record.id).await?,
        ));
    }
    Ok(Json(runs))
}

#[utoipa::path(get, path = "/runs/{run}", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn show_run(
    _user: User,
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Run>> {
    Ok(Json(load_run(&state, &run).await?))
}

/// A run not yet taken is CANCELED; a running one is stopped by its worker
/// (TERM, then KILL after a grace period) and ends STOPPED.
#[utoipa::path(post, path = "/runs/{run}/stop", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = Run), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn stop_run(
    _user: User,
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Run>> {
    let record = stop(&state, &run).await?;
    Ok(Json(load_run(&state, &record.id).await?))
}

/// Stops a run (the API's and the web UI's): a queued one ends at once, a
/// leased one's worker is told.
pub(crate) async fn stop(state: &AppState, run: &str) -> ApiResult<RunRecord> {
    let record = state.store.request_stop(run, now_ms()).await?;
    if record.state.is_terminal() {
        crate::metrics::run_ended(state, &record);
        state.signals.run_ended(&record.id);
        if record.stack_id.is_some() {
            // The next run queued on the stack may be READY now.
            state.signals.run_ready(&record.pool_id);
        }
    } else if let Some(worker_id) = &record.worker_id {
        state.signals.instruct_worker(worker_id);
    }
    Ok(record)
}
