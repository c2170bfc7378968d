//! What autoscalers call: a pool's demand, and the atomic "drain if idle"
//! that scale-in is built on.

use axum::extract::State;
use gantry_wire::demand::{DrainIfIdle, PoolDemand};

use crate::auth::User;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::{now_ms, AppState};

/// A pool's demand: the numbers behind its `/metrics` gauges, and each live
/// worker with its instance ID and how long it has been idle.
#[utoipa::path(get, path = "/pools/{pool}/demand", tag = "pools", params(("pool" = String, Path, description = "Pool name or ID")),
    responses((status = 200, body = PoolDemand), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn pool_demand(
    _user: User,
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> ApiResult<Json<PoolDemand>> {
    Ok(Json(demand_of(&state, &pool).await?))
}

pub(crate) async fn demand_of(state: &AppState, pool: &str) -> ApiResult<PoolDemand> {
    let record = super::pools::find_pool(state, pool).await?;
    crate::metrics::pools::demand(state, Some(&record.id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("pool {pool:?}")))
}

/// Drains the worker only if it holds no run, atomically: after a
/// `drained: true` answer it is never given a run (until undrained), so its
/// machine can be terminated. A busy worker is left as it was
/// (`drained: false`, its runs in `worker.running`).
#[utoipa::path(post, path = "/workers/{worker}/drain-if-idle", tag = "workers", params(("worker" = String, Path)),
    responses((status = 200, body = DrainIfIdle), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn drain_worker_if_idle(
    _user: User,
    State(state): State<AppState>,
    Path(worker): Path<String>,
) -> ApiResult<Json<DrainIfIdle>> {
    Ok(Json(drain_if_idle(&state, &worker).await?))
}

pub(crate) async fn drain_if_idle(state: &AppState, worker: &str) -> ApiResult<DrainIfIdle> {
    let outcome = state.store.drain_worker_if_idle(worker).await?;
    if outcome.drained {
        // Its open poll learns of the drain now.
        state.signals.instruct_worker(&outcome.worker.id);
    }
    let lease_ms = state.config.lease_timeout.as_millis() as i64;
    Ok(DrainIfIdle {
        drained: outcome.drained,
        worker: convert::worker(&outcome.worker, now_ms(), lease_ms),
    })
}
