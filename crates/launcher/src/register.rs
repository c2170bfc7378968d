//! Registration: proves possession of the pool's private key by signing a
//! fresh nonce, and hands over the runs a previous life of this launcher
//! left behind.

use base64::Engine;
use gantry_wire::worker::{registration_message, OrphanedRun, RegisterRequest, RegisterResponse};
use rand::RngCore;

use crate::client::{with_retry_as, CallError, ControlPlane};
use crate::config::Config;

fn request(config: &Config, orphaned_runs: &[OrphanedRun]) -> RegisterRequest {
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
    }
}

/// Registers, retrying while the control plane is unreachable, up to the
/// configured register timeout. Each attempt signs a fresh nonce.
pub async fn register(
    client: &ControlPlane,
    config: &Config,
    orphaned_runs: &[OrphanedRun],
) -> Result<RegisterResponse, CallError> {
    let response = with_retry_as(
        "registration",
        || async move { client.register(&request(config, orphaned_runs)).await },
        config.register_timeout,
    )
    .await?;
    client.set_session(response.session_token.clone());
    Ok(response)
}
