use axum::extract::State;
use gantry_store::WorkerRecord;
use gantry_wire::pool::Worker;
use serde::Deserialize;

use crate::auth::User;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::{now_ms, AppState};

#[derive(Debug, Deserialize)]
pub struct WorkerQuery {
    pool: Option<String>,
    /// Include workers that deregistered.
    #[serde(default)]
    all: bool,
}

pub(crate) fn lease_ms(state: &AppState) -> i64 {
    state.config.lease_timeout.as_millis() as i64
}

#[utoipa::path(get, path = "/workers", tag = "workers",
    params(("pool" = Option<String>, Query, description = "Pool name or ID"),
           ("all" = Option<bool>, Query, description = "Include workers that exited")),
    responses((status = 200, body = Vec<Worker>), (status = 404, description = "No such pool", body = gantry_wire::error::ErrorBody)))]
pub async fn list_workers(
    _user: User,
    State(state): State<AppState>,
    Query(query): Query<WorkerQuery>,
) -> ApiResult<Json<Vec<Worker>>> {
    let pool_id = match &query.pool {
        Some(pool) => Some(super::pools::find_pool(&state, pool).await?.id),
        None => None,
    };
    let now = now_ms();
    let workers = state
        .store
        .list_workers(pool_id.as_deref(), query.all)
        .await?;
    Ok(Json(
        workers
            .iter()
            .map(|w| convert::worker(w, now, lease_ms(&state)))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/workers/{worker}", tag = "workers", params(("worker" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn show_worker(
    _user: User,
    State(state): State<AppState>,
    Path(worker): Path<String>,
) -> ApiResult<Json<Worker>> {
    let record = state
        .store
        .find_worker(&worker)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("worker {worker:?}")))?;
    Ok(Json(convert::worker(&record, now_ms(), lease_ms(&state))))
}

/// Drains or undrains a worker (the API's and the web UI's).
pub(crate) async fn set_drain(
    state: &AppState,
    worker: &str,
    drain: bool,
) -> ApiResult<WorkerRecord> {
    let record = state.store.set_worker_drain(worker, drain).await?;
    state.signals.instruct_worker(&record.id);
    // An undrained worker may take queued work at once.
    if !drain {
        state.signals.run_ready(&record.pool_id);
    }
    Ok(record)
}

/// The worker takes no new runs; the ones in flight finish.
#[utoipa::path(post, path = "/workers/{worker}/drain", tag = "workers", params(("worker" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn drain_worker(
    _user: User,
    State(state): State<AppState>,
    Path(worker): Path<String>,
) -> ApiResult<Json<Worker>> {
    let record = set_drain(&state, &worker, true).await?;
    Ok(Json(convert::worker(&record, now_ms(), lease_ms(&state))))
}

#[utoipa::path(post, path = "/workers/{worker}/undrain", tag = "workers", params(("worker" = String, Path)),
    responses((status = 200, body = Worker), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn undrain_worker(
    _user: User,
    State(state): State<AppState>,
    Path(worker): Path<String>,
) -> ApiResult<Json<Worker>> {
    let record = set_drain(&state, &worker, false).await?;
    Ok(Json(convert::worker(&record, now_ms(), lease_ms(&state))))
}
