use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gantry_store::{ChunkWrite, RunEnd, RunRecord};
use gantry_wire::error::ErrorCode;
use gantry_wire::run::{RunState, RunType};
use gantry_wire::worker::{FinishRun, Outcome, ReportState};

use crate::auth::WorkerSession;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::{now_ms, AppState};

/// A worker may only touch runs it holds: another worker's run, or another
/// pool's, looks exactly like a lost lease.
pub(crate) async fn held_run(
    state: &AppState,
    session: &WorkerSession,
    run_id: &str,
) -> ApiResult<RunRecord> {
    let run = state.store.find_run(run_id).await?;
    match run {
        Some(run) if run.worker_id.as_deref() == Some(session.record.worker_id.as_str()) => Ok(run),
        _ => Err(ApiError::new(
            ErrorCode::LeaseLost,
            "this worker holds no lease on that run; abandon it",
        )),
    }
}

#[utoipa::path(post, path = "/worker/runs/{run}/state", tag = "worker protocol", request_body = ReportState,
    params(("run" = String, Path)),
    responses((status = 204), (status = 409, description = "Lease lost", body = gantry_wire::error::ErrorBody)))]
pub async fn report_state(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    Json(request): Json<ReportState>,
) -> ApiResult<StatusCode> {
    held_run(&state, &session, &run_id).await?;
    if !request.state.is_worker_phase() {
        return Err(ApiError::invalid(
            "state",
            format!(
                "{} is not a phase a worker reports; use finish to end a run",
                request.state
            ),
        ));
    }
    state
        .store
        .report_state(&run_id, &request.lease_id, request.state, now_ms())
        .await?;
    state.signals.run_changed(&run_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Stores log chunk `seq`. Idempotent: re-sending a chunk that landed is a
/// success, so a launcher simply retries until it gets a 2xx.
#[utoipa::path(put, path = "/worker/runs/{run}/logs/{seq}", tag = "worker protocol",
    params(("run" = String, Path), ("seq" = u64, Path), ("gantry-lease" = String, Header, description = "The run's lease ID")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "Stored"), (status = 200, description = "Already stored"),
              (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn put_log_chunk(
    State(state): State<AppState>,
    session: WorkerSession,
    Path((run_id, seq)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let lease_id = lease_header(&headers)?;
    let run = held_run(&state, &session, &run_id).await?;
    let seq = stored_seq(run.log_base, seq)
        .ok_or_else(|| ApiError::invalid("seq", format!("log chunk {seq} is out of range")))?;
    match state
        .store
        .put_log_chunk(&run_id, lease_id, seq, &body)
        .await?
    {
        ChunkWrite::Inserted => {
            state.metrics.log_bytes_stored(body.len());
            state.signals.run_changed(&run_id);
            Ok(StatusCode::CREATED)
        }
        ChunkWrite::Duplicate => Ok(StatusCode::OK),
    }
}

/// The lease a raw-body call names in its `gantry-lease` header.
pub(crate) fn lease_header(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(gantry_wire::LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid(gantry_wire::LEASE_HEADER, "missing the gantry-lease header")
        })
}

/// Where this lease's chunk `seq` is stored: a later phase's chunks follow
/// the earlier phases' (see `log_base`). `None` past the store's numbering
/// (an `i64`), rather than overflowing or wrapping onto an earlier chunk.
fn stored_seq(log_base: i64, seq: u64) -> Option<u64> {
    (log_base.max(0) as u64)
        .checked_add(seq)
        .filter(|stored| *stored <= i64::MAX as u64)
}

/// The most chunks one lease's log may have: 16 Mi chunks of up to 1 MiB.
const MAX_LOG_CHUNKS: u64 = 1 << 24;
/// `logs_incomplete` lists at most this many missing chunks at a time.
const MAX_MISSING_LISTED: u64 = 1000;

/// Where this lease's log ends in the store, when `log_chunks` is in range.
fn stored_end(base: u64, log_chunks: u64) -> Option<u64> {
    (log_chunks <= MAX_LOG_CHUNKS)
        .then(|| base.checked_add(log_chunks))
        .flatten()
        .filter(|end| *end <= i64::MAX as u64)
}

/// A finish retried after the first one ended the run: the same outcome is
/// a success (the answer was lost on the way), another is a conflict.
async fn finish_again(
    state: &AppState,
    run_id: &str,
    request: &FinishRun,
) -> ApiResult<StatusCode> {
    let wanted = outcome_state(request.outcome);
    let current = state
        .store
        .find_run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id}")))?;
    if Some(current.state) == wanted {
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(ApiError::new(
        ErrorCode::LeaseLost,
        format!("run {run_id} already ended {}; abandon it", current.state),
    ))
}

fn outcome_state(outcome: Outcome) -> Option<RunState> {
    match outcome {
        Outcome::Succeeded => Some(RunState::Finished),
        Outcome::Failed => Some(RunState::Failed),
        Outcome::Stopped => Some(RunState::Stopped),
        Outcome::Planned => None,
    }
}

/// Ends the run. Refused with `logs_incomplete` while any chunk below
/// `log_chunks` is missing: the launcher uploads those and tries again.
#[utoipa::path(post, path = "/worker/runs/{run}/finish", tag = "worker protocol", request_body = FinishRun,
    params(("run" = String, Path)),
    responses((status = 204), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn finish_run(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    Json(request): Json<FinishRun>,
) -> ApiResult<StatusCode> {
    let run = held_run(&state, &session, &run_id).await?;
    // The lease first: nothing below may cost the server anything for a
    // caller that holds no lease on the run.
    if run.lease_id.as_deref() != Some(request.lease_id.as_str()) || !run.state.is_held() {
        if run.lease_id.as_deref() == Some(request.lease_id.as_str()) && run.state.is_terminal() {
            return finish_again(&state, &run_id, &request).await;
        }
        return Err(ApiError::new(
            ErrorCode::LeaseLost,
            "this worker holds no lease on that run; abandon it",
        ));
    }
    if request.outcome == Outcome::Planned
        && !(run.state == RunState::Planning
            && matches!(run.run_type, RunType::Tracked | RunType::Destroy))
    {
        return Err(ApiError::invalid(
            "outcome",
            format!(
                "`planned` ends only the PLANNING phase of a tracked or destroy run; run {run_id} is a {} run in {}",
                run.run_type.as_str(),
                run.state
            ),
        ));
    }
    let base = run.log_base.max(0) as u64;
    let end = stored_end(base, request.log_chunks).ok_or_else(|| {
        ApiError::invalid(
            "log_chunks",
            format!(
                "{} log chunks is more than a run may have ({MAX_LOG_CHUNKS})",
                request.log_chunks
            ),
        )
    })?;
    let missing: Vec<u64> = state
        .store
        .missing_log_chunks(&run_id, base, end, MAX_MISSING_LISTED)
        .await?
        .into_iter()
        .map(|seq| seq - base)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            ErrorCode::LogsIncomplete,
            format!(
                "log chunks missing (the first {} listed); upload them, then finish again",
                missing.len()
            ),
        )
        .with_details(serde_json::json!({ "missing": missing })));
    }
    if request.outcome == Outcome::Planned {
        let parked = state
            .store
            .park_unconfirmed(&run_id, &request.lease_id, request.log_chunks, now_ms())
            .await?;
        tracing::info!(run_id = %parked.id, "run planned; waiting for confirmation");
        state.signals.run_changed(&run_id);
        return Ok(StatusCode::NO_CONTENT);
    }
    let end = RunEnd {
        state: outcome_state(request.outcome).expect("planned is handled above"),
        exit_code: request.exit_code,
        reason: request.reason,
    };
    let run = state
        .store
        .finish_run(&run_id, &request.lease_id, &end, now_ms())
        .await?;
    tracing::info!(run_id = %run.id, state = %run.state, exit_code = ?run.exit_code, "run ended");
    crate::metrics::run_ended(&state, &run);
    state.signals.run_ended(&run_id);
    if run.stack_id.is_some() {
        // The next run queued on the stack may be READY now.
        state.signals.run_ready(&run.pool_id);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::{stored_end, stored_seq, MAX_LOG_CHUNKS};

    #[test]
    fn a_finish_names_a_bounded_log_without_overflow() {
        assert_eq!(stored_end(0, 3), Some(3));
        assert_eq!(stored_end(7, 3), Some(10));
        assert_eq!(stored_end(0, MAX_LOG_CHUNKS), Some(MAX_LOG_CHUNKS));
        assert_eq!(stored_end(0, MAX_LOG_CHUNKS + 1), None);
        assert_eq!(stored_end(0, u64::MAX), None);
        assert_eq!(stored_end(u64::MAX - 1, 3), None);
        assert_eq!(stored_end(i64::MAX as u64, 1), None);
    }

    #[test]
    fn chunks_follow_the_earlier_phases_within_the_stores_range() {
        assert_eq!(stored_seq(0, 0), Some(0));
        assert_eq!(stored_seq(3, 5), Some(8));
        assert_eq!(stored_seq(-1, 5), Some(5));
        assert_eq!(stored_seq(0, i64::MAX as u64), Some(i64::MAX as u64));
        // Found by fuzz/fuzz_targets/log_chunk.rs (fuzz/regressions/log_chunk/):
        // the sum overflowed, a panic in debug builds and in release a wrap
        // onto the plan phase's chunk 2.
        assert_eq!(stored_seq(3, u64::MAX), None);
        assert_eq!(stored_seq(1, i64::MAX as u64), None);
        assert_eq!(stored_seq(0, i64::MAX as u64 + 1), None);
    }
}
