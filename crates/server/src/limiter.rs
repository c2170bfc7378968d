//! Rate limiting of failed authentications, per client IP.
//!
//! Tokens are 256-bit random, so guessing is hopeless anyway; the limit keeps
//! a misbehaving client (a stale token in a crash-looping script, a scanner)
//! from turning into load, and makes attempts visible in the log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gantry_wire::error::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tls::PeerAddr;

/// Failures allowed per IP per window before requests are refused.
const MAX_FAILURES: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct FailedAuthLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuthLimiter {
    fn blocked(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().expect("limiter lock");
        matches!(failures.get(&ip), Some((since, count)) if since.elapsed() < WINDOW && *count >= MAX_FAILURES)
    }

    fn record_failure(&self, ip: IpAddr) -> u32 {
        let mut failures = self.failures.lock().expect("limiter lock");
        if failures.len() > 100_000 {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

fn client_ip(request: &Request) -> Option<IpAddr> {
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Some(addr.ip());
    }
    request
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|ConnectInfo(peer)| peer.0.ip())
}

/// Refuses clients over the limit; counts every 401 answered.
pub async fn limit_failed_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ip) = client_ip(&request) else {
        return next.run(request).await;
    };
    if state.limiter.blocked(ip) {
        return ApiError::new(
            ErrorCode::RateLimited,
            "too many failed authentications from this address; wait a minute and check the token",
        )
        .into_response();
    }
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        let count = state.limiter.record_failure(ip);
        // Never the credential: only who, where, and how often.
        tracing::warn!(client = %ip, path, failures_in_window = count, "authentication failed");
    }
    response
}
