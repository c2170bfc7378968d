use std::time::Duration;

use axum::extract::State;
use gantry_store::{HeldLeaseRef, NewSession, RunEnd, RunRecord, SessionRecord};
use gantry_wire::run::RunState;
use gantry_wire::worker::{
    HeartbeatRequest, HeartbeatResponse, Instructions, KnownInstructions, PollRequest,
    PollResponse, RunLease,
};

use crate::auth::{hash_secret, new_secret, WorkerSession};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::{now_ms, AppState};

async fn instructions_for(state: &AppState, session: &SessionRecord) -> ApiResult<Instructions> {
    Ok(Instructions {
        stop: pending_stops(state, &session.worker_id).await?,
        abandon: Vec::new(),
        drain: session.drain,
        exit: session
            .pool_cycled_at
            .is_some_and(|cycled| cycled >= session.registered_at),
    })
}

/// The runs the worker is told to stop. Nearly always none, which the
/// replica remembers until the worker is next instructed (`worker_cache`).
async fn pending_stops(state: &AppState, worker_id: &str) -> ApiResult<Vec<String>> {
    let cache = &state.signals.worker_cache;
    if cache.no_stops_pending(worker_id) {
        return Ok(Vec::new());
    }
    let ticket = cache.ticket();
    let stops = state.store.stop_requests(worker_id).await?;
    if stops.is_empty() {
        cache.remember_no_stops(ticket, worker_id);
    }
    Ok(stops)
}

/// Whether the instructions hold something the launcher does not know yet:
/// a stop it was not told about, or an exit. Only news ends a poll early, so
/// a stop waiting for its run to end does not make the launcher spin.
fn is_news(instructions: &Instructions, known: &KnownInstructions) -> bool {
    (instructions.exit && !known.exit)
        || instructions
            .stop
            .iter()
            .any(|run_id| !known.stop.contains(run_id))
}

/// A run was claimed but its lease cannot be sent (its stack job could not
/// be built): end it now, with the reason, rather than leave it leased to a
/// worker that never hears of it.
async fn fail_unsent_lease(state: &AppState, run: &RunRecord, error: &ApiError) {
    let reason = format!(
        "the control plane could not prepare the run for its worker: {}",
        error.message
    );
    tracing::error!(run_id = %run.id, %reason, "claimed run failed before it was sent");
    let end = RunEnd {
        state: RunState::Failed,
        exit_code: None,
        reason: Some(reason),
    };
    let lease_id = run.lease_id.as_deref().unwrap_or_default();
    match state
        .store
        .finish_run(&run.id, lease_id, &end, now_ms())
        .await
    {
        Ok(ended) => {
            crate::metrics::run_ended(state, &ended);
            state.signals.run_ended(&run.id);
            if run.stack_id.is_some() {
                state.signals.run_ready(&run.pool_id);
            }
        }
        Err(error) => tracing::error!(run_id = %run.id, %error, "cannot fail the claimed run"),
    }
}

/// Claims up to `free_slots` runs of the worker's pool. A pool this replica
/// found with nothing to claim is not looked at again until something
/// gives it a run (`worker_cache`), so idle pollers cost no query.
async fn claim(
    state: &AppState,
    session: &SessionRecord,
    free_slots: u32,
) -> ApiResult<Vec<RunRecord>> {
    let cache = &state.signals.worker_cache;
    if cache.nothing_to_claim(&session.pool_id) {
        return Ok(Vec::new());
    }
    // Remembered only from this question, about the pool alone: an empty
    // claim may also mean that this worker was drained meanwhile.
    let ticket = cache.ticket();
    if !state
        .store
        .pool_has_claimable_runs(&session.pool_id)
        .await?
    {
        cache.remember_nothing_to_claim(ticket, &session.pool_id);
        return Ok(Vec::new());
    }
    let now = now_ms();
    let lease_expires_at = now + state.config.lease_timeout.as_millis() as i64;
    Ok(state
        .store
        .claim_runs(
            &session.pool_id,
            &session.worker_id,
            free_slots,
            lease_expires_at,
            now,
        )
        .await?)
}

/// Long-polls for work. Returns as soon as the worker has a lease or an
/// urgent instruction (stop, exit), or when `wait_ms` runs out.
#[utoipa::path(post, path = "/worker/poll", tag = "worker protocol", request_body = PollRequest,
    responses((status = 200, body = PollResponse), (status = 401, body = gantry_wire::error::ErrorBody)))]
pub async fn poll(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    session: WorkerSession,
    Json(request): Json<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    let wait = Duration::from_millis(request.wait_ms).min(state.config.max_poll_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let pool_signal = state.signals.pool(&session.record.pool_id);
    let worker_signal = state.signals.worker(&session.record.worker_id);
    let mut record = session.record;
    loop {
        // Arm both wake-ups before looking, so nothing slips in between.
        let worker_woken = worker_signal.notified();
        tokio::pin!(worker_woken);
        worker_woken.as_mut().enable();

        let instructions = instructions_for(&state, &record).await?;
        if is_news(&instructions, &request.known) {
            return Ok(Json(PollResponse {
                leases: Vec::new(),
                instructions,
            }));
        }
        let wants_work = request.free_slots > 0 && !instructions.drain;
        let pool_woken = pool_signal.notified();
        tokio::pin!(pool_woken);
        if wants_work {
            pool_woken.as_mut().enable();
            let claimed = claim(&state, &record, request.free_slots).await?;
            if !claimed.is_empty() {
                crate::metrics::runs_leased(&state, &claimed);
                // More runs may be waiting: pass the wake-up on to the next idle worker.
                state.signals.run_ready(&record.pool_id);
                let mut leases = Vec::with_capacity(claimed.len());
                for run in claimed {
                    tracing::info!(run_id = %run.id, worker_id = %record.worker_id, "run leased");
                    state.signals.run_changed(&run.id);
                    let (stack, env) = match super::stack::stack_job(&state, &headers, &run).await {
                        Ok(Some((job, env))) => (Some(job), env),
                        Ok(None) => (None, run.env),
                        Err(error) => {
                            // Never strand a claimed run until its lease expires.
                            fail_unsent_lease(&state, &run, &error).await;
                            continue;
                        }
                    };
                    leases.push(RunLease {
                        run_id: run.id,
                        lease_id: run.lease_id.unwrap_or_default(),
                        run_type: run.run_type,
                        command: run.command,
                        env,
                        image: run.image,
                        stack,
                    });
                }
                return Ok(Json(PollResponse {
                    leases,
                    instructions,
                }));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(PollResponse {
                leases: Vec::new(),
                instructions,
            }));
        }
        let instructed = tokio::select! {
            _ = &mut worker_woken => true,
            _ = &mut pool_woken, if wants_work => false,
            _ = tokio::time::sleep_until(deadline) => {
                // Nothing happened: answer without another look. Anything
                // that changed meanwhile would have woken us.
                return Ok(Json(PollResponse {
                    leases: Vec::new(),
                    instructions,
                }));
            }
        };
        // Drain, undrain, reset and cycle all show in the session.
        record = state
            .store
            .find_session(&session.token_hash, now_ms())
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "the worker session ended (the pool was reset or deleted); register again",
                )
            })?;
        if instructed {
            // Drain, undrain or stop: answer now, the launcher polls again at once.
            let instructions = instructions_for(&state, &record).await?;
            return Ok(Json(PollResponse {
                leases: Vec::new(),
                instructions,
            }));
        }
    }
}

/// Renews the worker's session and the leases it holds. Leases it no longer
/// holds come back under `abandon`.
#[utoipa::path(post, path = "/worker/heartbeat", tag = "worker protocol", request_body = HeartbeatRequest,
    responses((status = 200, body = HeartbeatResponse), (status = 401, body = gantry_wire::error::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    session: WorkerSession,
    Json(request): Json<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let now = now_ms();
    let held: Vec<HeldLeaseRef> = request
        .runs
        .iter()
        .map(|lease| HeldLeaseRef {
            run_id: lease.run_id.clone(),
            lease_id: lease.lease_id.clone(),
        })
        .collect();
    let lease_expires_at = now + state.config.lease_timeout.as_millis() as i64;
    if request.draining {
        if !session.record.drain {
            state
                .store
                .set_worker_drain(&session.record.worker_id, true)
                .await?;
        }
        // The launcher is leaving and waits for its open poll to answer
        // before it exits: answer it now, even when an operator had drained
        // the worker already (the poll then sleeps without looking for work).
        state.signals.instruct_worker(&session.record.worker_id);
    }
    // An idle worker's heartbeat writes nothing at once (see `liveness`);
    // one holding leases renews them, and its `last_seen`, now.
    let renewal = if held.is_empty() {
        state.liveness.heard(&session.record.worker_id, now);
        Default::default()
    } else {
        state
            .store
            .renew_leases(&session.record.worker_id, &held, lease_expires_at, now)
            .await?
    };
    for run_id in &renewal.resumed {
        tracing::warn!(run_id, worker_id = %session.record.worker_id, "the worker of a LOST run is back; its apply goes on");
        state.signals.run_changed(run_id);
    }
    for run_id in &renewal.abandon {
        tracing::warn!(run_id, worker_id = %session.record.worker_id, "worker told to abandon a run it no longer holds");
    }
    let mut instructions = instructions_for(&state, &session.record).await?;
    instructions.drain |= request.draining;
    instructions.abandon = renewal.abandon;

    // Rotate the session once it is past half its life.
    let ttl = state.config.session_ttl.as_millis() as i64;
    let session_token = if session.record.expires_at - now < ttl / 2 {
        let token = new_secret("gantry_session_");
        let new = NewSession {
            worker_id: session.record.worker_id.clone(),
            token_hash: hash_secret(&token),
            expires_at: now + ttl,
        };
        state.store.add_session(&new, now).await?;
        Some(token)
    } else {
        None
    };
    Ok(Json(HeartbeatResponse {
        instructions,
        session_token,
    }))
}
