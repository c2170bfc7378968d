use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use base64::Engine;
use gantry_pki::PoolPublicKey;
use gantry_store::{NewSession, NewWorker};
use gantry_wire::error::ErrorCode;
use gantry_wire::worker::{registration_message, RegisterRequest, RegisterResponse};

use crate::auth::{hash_secret, hashes_equal, new_secret, WorkerSession};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::{now_ms, AppState};

/// How far a launcher's clock may be from ours.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

fn refused(message: String) -> ApiError {
    tracing::warn!(reason = %message, "worker registration refused");
    ApiError::unauthorized(message)
}

/// Registers a worker. The pool token's credential says which pool; the
/// signature, made with the pool's private key over a fresh nonce, proves
/// the caller holds that key. Either alone is refused.
#[utoipa::path(post, path = "/worker/register", tag = "worker protocol", request_body = RegisterRequest,
    responses((status = 200, body = RegisterResponse), (status = 401, body = gantry_wire::error::ErrorBody),
              (status = 426, description = "Launcher version refused", body = gantry_wire::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    if !gantry_wire::versions_compatible(gantry_wire::VERSION, &request.version) {
        let url = format!(
            "{}{}/launcher/download",
            crate::api::public_url(&state, &headers),
            gantry_wire::API_PREFIX
        );
        return Err(ApiError::new(
            ErrorCode::VersionRefused,
            format!(
                "launcher version {} cannot work with this control plane (version {v}); use gantry-launcher {v}: \
                 download it from {url}, or take bin/gantry-launcher from gantry-{v}-linux-x86_64.tar.gz",
                request.version,
                v = gantry_wire::VERSION
            ),
        )
        .with_field("version"));
    }
    let now = now_ms();
    let pool = state.store.find_pool(&request.pool_id).await?;
    let Some(pool) =
        pool.filter(|p| hashes_equal(&p.key.credential_hash, &hash_secret(&request.credential)))
    else {
        return Err(refused(
            "the pool token is not valid: its pool was deleted, or reset with a new CSR (which replaces the token); \
             use the token from the latest `gantry pool create` or `gantry pool reset`"
                .into(),
        ));
    };
    if (now - request.timestamp_ms).unsigned_abs() > MAX_CLOCK_SKEW.as_millis() as u64 {
        return Err(refused(format!(
            "the registration is timestamped {}s away from the server's clock; fix the worker's clock (NTP)",
            (now - request.timestamp_ms) / 1000
        )));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&request.signature)
        .unwrap_or_default();
    let public = PoolPublicKey::from_public_key_pem(&pool.key.public_key_pem).map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("stored pool key unreadable: {e}"),
        )
    })?;
    let message = registration_message(&request.pool_id, request.timestamp_ms, &request.nonce);
    if !public.verify(&message, &signature) {
        return Err(refused(
            "the registration signature does not verify against the pool's public key: GANTRY_POOL_PRIVATE_KEY is not \
             the private key whose CSR created (or last reset) this pool"
                .into(),
        ));
    }
    let nonce_expiry = now + 2 * MAX_CLOCK_SKEW.as_millis() as i64;
    if request.nonce.len() < 16 || !state.store.use_nonce(&request.nonce, nonce_expiry).await? {
        return Err(refused(
            "the registration nonce was already used (a replayed registration)".into(),
        ));
    }

    for orphan in &request.orphaned_runs {
        let reason = "the launcher restarted while the run was in flight";
        if let Some(run) = state
            .store
            .fail_orphaned_run(&pool.id, &orphan.run_id, &orphan.lease_id, reason, now)
            .await?
        {
            tracing::warn!(run_id = %run.id, "run failed: its launcher restarted");
            crate::metrics::run_ended(&state, &run);
            state.signals.run_ended(&run.id);
            if run.stack_id.is_some() {
                // The next run queued on the stack may be READY now.
                state.signals.run_ready(&run.pool_id);
            }
        }
    }

    let session_token = new_secret("gantry_session_");
    let worker = NewWorker {
        pool_id: pool.id.clone(),
        pool_generation: pool.generation,
        version: request.version.clone(),
        hostname: request.hostname.clone(),
        tags: request.tags.clone(),
        max_concurrent_runs: request.max_concurrent_runs.max(1),
    };
    let session = NewSession {
        worker_id: String::new(),
        token_hash: hash_secret(&session_token),
        expires_at: now + state.config.session_ttl.as_millis() as i64,
    };
    let resumed = match &request.resume_worker_id {
        Some(worker_id) => {
            let session = NewSession {
                worker_id: worker_id.clone(),
                ..session.clone()
            };
            state.store.resume_worker(&worker, &session, now).await?
        }
        None => None,
    };
    let record = match resumed {
        Some(record) => {
            tracing::info!(worker_id = %record.id, pool_id = %pool.id, "worker resumed under a new session");
            record
        }
        None => {
            let record = state.store.register_worker(&worker, &session, now).await?;
            tracing::info!(worker_id = %record.id, pool_id = %pool.id, version = %request.version, "worker registered");
            record
        }
    };
    Ok(Json(RegisterResponse {
        worker_id: record.id,
        session_token,
        heartbeat_interval_ms: state.config.heartbeat_interval().as_millis() as u64,
        lease_timeout_ms: state.config.lease_timeout.as_millis() as u64,
        server_version: gantry_wire::VERSION.to_string(),
    }))
}

/// The worker leaves: it finished its runs and is exiting.
#[utoipa::path(post, path = "/worker/deregister", tag = "worker protocol", responses((status = 204)))]
pub async fn deregister(
    State(state): State<AppState>,
    session: WorkerSession,
) -> ApiResult<axum::http::StatusCode> {
    state
        .store
        .deregister_worker(&session.record.worker_id, now_ms())
        .await?;
    state.signals.worker_gone(&session.record.worker_id);
    tracing::info!(worker_id = %session.record.worker_id, "worker deregistered");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
