//! Who is calling: a user with an API token, or a worker with a session.
//!
//! Secrets are random 256-bit strings; the store keeps only their SHA-256.
//! (A slow password hash buys nothing for secrets with that much entropy.)

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use gantry_store::{SessionRecord, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::{now_ms, AppState};

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret, e.g. `gantry_api_…`; the prefix makes leaked
/// secrets easy to recognise in logs and by secret scanners.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// At first start, installs `GANTRY_ADMIN_TOKEN`, or generates a token and
/// prints it once. Only its hash is stored.
pub async fn ensure_admin_token(store: &dyn Store, from_env: Option<&str>) -> anyhow::Result<()> {
    if store.count_api_tokens().await? > 0 {
        return Ok(());
    }
    match from_env.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => {
            if token.len() < 16 {
                anyhow::bail!("GANTRY_ADMIN_TOKEN is {} characters long; use at least 16 (e.g. `openssl rand -hex 32`)", token.len());
            }
            let hash = hash_secret(token);
            if let Err(error) = store.insert_api_token("admin", &hash, now_ms()).await {
                // Another replica, starting at the same moment with the same
                // environment, installed it first.
                if store.find_api_token(&hash).await?.is_none() {
                    return Err(error.into());
                }
            }
            tracing::info!("admin API token installed from GANTRY_ADMIN_TOKEN");
        }
        None => {
            let token = new_secret("gantry_api_");
            store
                .insert_api_token("admin", &hash_secret(&token), now_ms())
                .await?;
            // Printed to stderr once, never logged: this is its only copy.
            eprintln!("\nAdmin API token (shown once, store it now):\n\n    {token}\n\nUse it with: export GANTRY_API_TOKEN={token}\n");
        }
    }
    Ok(())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// A user call, authenticated by an API token.
pub struct User {
    #[allow(dead_code)]
    pub token_id: String,
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<User, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>` (the CLI reads GANTRY_API_TOKEN)",
            ));
        };
        match state.store.find_api_token(&hash_secret(token)).await? {
            Some(record) => Ok(User {
                token_id: record.id,
            }),
            None => {
                tracing::warn!(path = %parts.uri.path(), "rejected an unknown or revoked API token");
                Err(ApiError::unauthorized(
                    "the API token is not valid (unknown or revoked); check GANTRY_API_TOKEN",
                ))
            }
        }
    }
}

/// A launcher call, authenticated by its worker session.
pub struct WorkerSession {
    pub record: SessionRecord,
    pub token_hash: String,
}

impl FromRequestParts<AppState> for WorkerSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<WorkerSession, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized("missing worker session token"));
        };
        let token_hash = hash_secret(token);
        let now = now_ms();
        let cache = &state.signals.worker_cache;
        if let Some(record) = cache.session(&token_hash, now) {
            return Ok(WorkerSession { record, token_hash });
        }
        let ticket = cache.ticket();
        match state.store.find_session(&token_hash, now).await? {
            Some(record) => {
                cache.remember_session(ticket, &token_hash, &record);
                Ok(WorkerSession { record, token_hash })
            }
            None => Err(ApiError::unauthorized(
                "the worker session is not valid: it expired, the worker was deregistered, or the pool was reset; register again",
            )),
        }
    }
}
