//! Registration: proves possession of the pool's private key by signing a
//! fresh nonce, and hands over the runs a previous life of this launcher
//! left behind.

use base64::Engine;
use gantry_wire::worker::{registration_message, OrphanedRun, RegisterRequest, RegisterResponse};
use rand::RngCore;

use crate::client::{with_retry_as, CallError, ControlPlane};
use crate::config::Config;

fn request(
    config: &Config,
    orphaned_runs: &[OrphanedRun],
    resume_worker_id: Option<&str>,
) -> RegisterRequest {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let message = registration_message(&config.token.pool_id, timestamp_ms, &nonce);
    let signature =
        base64::engine::general_purpose::STANDARD.encode(config.private_key.sign(&message));
    RegisterRequest {
        pool_id: config.token.pool_id.clone(),
        credential: config.token.credential.clone(),
        version: gantry_wire::VERSION.to_string(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        tags: config.tags.clone(),
        max_concurrent_runs: config.max_concurrent_runs,
        timestamp_ms,
        nonce,
        signature,
        orphaned_runs: orphaned_runs.to_vec(),
        resume_worker_id: resume_worker_id.map(str::to_string),
    }
}

/// Registers, retrying while the control plane is unreachable, up to the
/// configured register timeout. Each attempt signs a fresh nonce.
pub async fn register(
    client: &ControlPlane,
    config: &Config,
    orphaned_runs: &[OrphanedRun],
    resume_worker_id: Option<&str>,
) -> Result<RegisterResponse, CallError> {
    let response = with_retry_as(
        "registration",
        || async move {
            client
                .register(&request(config, orphaned_runs, resume_worker_id))
                .await
        },
        config.register_timeout,
    )
    .await?;
    client.set_session(response.session_token.clone());
    Ok(response)
}

/// Keeps this launcher's session alive across outages: when the control
/// plane no longer knows the session (it expired while the control plane
/// was unreachable), registers again as the same worker, so the leases it
/// holds stay valid and no run in flight is given up.
pub struct SessionKeeper {
    config: Config,
    worker_id: std::sync::Mutex<String>,
    renewing: tokio::sync::Mutex<()>,
}

impl SessionKeeper {
    pub fn new(config: Config, worker_id: String) -> SessionKeeper {
        SessionKeeper {
            config,
            worker_id: std::sync::Mutex::new(worker_id),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.lock().expect("worker id lock").clone()
    }

    /// Registers again, resuming this worker, unless another task already
    /// did since `seen` (the session generation its call failed under).
    /// Fails only when the control plane refuses the pool credentials.
    pub async fn renew(&self, client: &ControlPlane, seen: u64) -> Result<(), CallError> {
        let _one_at_a_time = self.renewing.lock().await;
        if client.session_generation() != seen {
            return Ok(());
        }
        let previous = self.worker_id();
        tracing::warn!(worker_id = %previous, "the control plane no longer knows this launcher's session; registering again as the same worker");
        let response = match register(client, &self.config, &[], Some(&previous)).await {
            Ok(response) => response,
            // Unreachable again: the next call finds out, and comes back here.
            Err(error) if error.is_transient() => return Ok(()),
            Err(error) => return Err(error),
        };
        if response.worker_id != previous {
            tracing::warn!(old = %previous, new = %response.worker_id,
                "registered as a new worker: the control plane no longer had this one; runs it held will be told to stop");
        }
        *self.worker_id.lock().expect("worker id lock") = response.worker_id;
        Ok(())
    }
}
