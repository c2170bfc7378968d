//! Rate limiting of failed authentications, per client.
//!
//! Tokens are 256-bit random, so guessing is hopeless anyway; the limit
//! tells a misbehaving client (a stale token in a crash-looping script, a
//! scanner) to back off, and makes attempts visible in the log.
//!
//! It never refuses a valid credential: a client over the limit is still
//! authenticated, and only its failures are answered `rate_limited`, so
//! nobody can lock an admin, or every worker behind the same NAT or load
//! balancer, out by sending bad tokens from their address. The client is the
//! TCP peer, or the `X-Forwarded-For` address a trusted proxy reports (see
//! [`crate::client_addr`]). Failures are 401s and 403s (the state backend
//! answers 403 to a credential it does not know).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gantry_wire::error::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tls::PeerAddr;

/// Failures allowed per client per window; past them, its failures are
/// answered `rate_limited` (its successes never are).
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

fn peer_ip(request: &Request) -> Option<IpAddr> {
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Some(addr.ip());
    }
    request
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|ConnectInfo(peer)| peer.0.ip())
}

/// Counts every 401 and 403 answered; a client over the limit gets
/// `rate_limited` instead of its failures, never instead of a success.
pub async fn limit_failed_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(peer) = peer_ip(&request) else {
        return next.run(request).await;
    };
    let ip = state.config.trusted_proxies.client(peer, request.headers());
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return response;
    }
    let blocked = state.limiter.blocked(ip);
    let count = state.limiter.record_failure(ip);
    // Never the credential: only who, where, and how often.
    tracing::warn!(client = %ip, %peer, path, status = status.as_u16(), failures_in_window = count, "authentication failed");
    if blocked {
        return ApiError::new(
            ErrorCode::RateLimited,
            "too many failed authentications from this address; wait a minute and check the token",
        )
        .into_response();
    }
    response
}
