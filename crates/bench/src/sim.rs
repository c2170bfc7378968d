//! Simulated workers: the launcher protocol spoken in-process, so one bench
//! process can hold thousands of workers against a real server. Each one
//! registers exactly as `gantry-launcher` does (a fresh nonce signed with
//! the pool's private key), then long-polls and heartbeats on the intervals
//! the server gives it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use gantry_pki::PoolPrivateKey;
use gantry_wire::error::ErrorBody;
use gantry_wire::run::RunState;
use gantry_wire::worker::*;
use rand::RngCore;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What the launcher asks for (agent.rs `POLL_WAIT`).
pub const POLL_WAIT_MS: u64 = 20_000;

/// The pool as a worker knows it: from the token, plus the private key.
pub struct PoolCredentials {
    pub pool_id: String,
    pub credential: String,
    pub key: PoolPrivateKey,
}

/// A signed registration, as `gantry-launcher`'s register.rs builds it.
pub fn registration(pool: &PoolCredentials, hostname: &str) -> RegisterRequest {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let timestamp_ms = crate::stats::wall_ms() as i64;
    let message = registration_message(&pool.pool_id, timestamp_ms, &nonce);
    let signature = base64::engine::general_purpose::STANDARD.encode(pool.key.sign(&message));
    RegisterRequest {
        pool_id: pool.pool_id.clone(),
        credential: pool.credential.clone(),
        version: gantry_wire::VERSION.to_string(),
        hostname: hostname.to_string(),
        tags: Default::default(),
        max_concurrent_runs: 1,
        timestamp_ms,
        nonce,
        signature,
        orphaned_runs: Vec::new(),
        resume_worker_id: None,
    }
}

/// Signs `n` registrations on every core. Their timestamps stay acceptable
/// for the server's allowed clock skew (5 minutes).
pub fn presign(pool: &PoolCredentials, n: usize) -> Vec<RegisterRequest> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2)
        .max(1);
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| registration(pool, &format!("sim-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a signing thread"))
            .collect()
    })
}

#[derive(Debug)]
pub struct CallError {
    pub status: Option<StatusCode>,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "HTTP {status}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for CallError {}

async fn post<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &B,
    timeout: Duration,
) -> Result<T, CallError> {
    let mut request = http.post(url).json(body).timeout(timeout);
    if let Some(token) = session {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| CallError {
        status: None,
        message: describe(&e),
    })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| CallError {
        status: Some(status),
        message: describe(&e),
    })?;
    if status.is_success() {
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        return serde_json::from_slice(bytes).map_err(|e| CallError {
            status: Some(status),
            message: e.to_string(),
        });
    }
    let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => body.to_string(),
        Err(_) => String::from_utf8_lossy(&bytes).chars().take(300).collect(),
    };
    Err(CallError {
        status: Some(status),
        message,
    })
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A registered simulated worker.
pub struct Worker {
    http: reqwest::Client,
    base: String,
    session: RwLock<String>,
    pub heartbeat_interval: Duration,
}

impl Worker {
    /// Registers with a signed request (see [`registration`]).
    pub async fn register(
        http: reqwest::Client,
        base: &str,
        request: &RegisterRequest,
    ) -> Result<Worker, CallError> {
        let url = format!("{base}/worker/register");
        let response: RegisterResponse =
            post(&http, &url, None, request, Duration::from_secs(30)).await?;
        Ok(Worker {
            http,
            base: base.to_string(),
            session: RwLock::new(response.session_token),
            heartbeat_interval: Duration::from_millis(response.heartbeat_interval_ms.max(100)),
        })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let session = self.session.read().expect("session lock").clone();
        post(
            &self.http,
            &format!("{}{path}", self.base),
            Some(&session),
            body,
            timeout,
        )
        .await
    }

    pub async fn poll(&self, free_slots: u32, wait_ms: u64) -> Result<PollResponse, CallError> {
        let timeout = Duration::from_millis(wait_ms) + Duration::from_secs(15);
        self.call(
            "/worker/poll",
            &PollRequest {
                free_slots,
                wait_ms,
                known: Default::default(),
            },
            timeout,
        )
        .await
    }

    pub async fn heartbeat(&self, runs: Vec<HeldLease>) -> Result<HeartbeatResponse, CallError> {
        let response: HeartbeatResponse = self
            .call(
                "/worker/heartbeat",
                &HeartbeatRequest {
                    runs,
                    draining: false,
                },
                Duration::from_secs(15),
            )
            .await?;
        if let Some(token) = &response.session_token {
            *self.session.write().expect("session lock") = token.clone();
        }
        Ok(response)
    }

    pub async fn report_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: RunState,
    ) -> Result<(), CallError> {
        let body = ReportState {
            lease_id: lease_id.to_string(),
            state,
        };
        let _: Option<()> = self
            .call(
                &format!("/worker/runs/{run_id}/state"),
                &body,
                Duration::from_secs(30),
            )
            .await?;
        Ok(())
    }

    /// Uploads log chunk `seq` of a leased run, as the launcher does.
    pub async fn put_log_chunk(
        &self,
        run_id: &str,
        lease_id: &str,
        seq: u64,
        data: Vec<u8>,
    ) -> Result<(), CallError> {
        let session = self.session.read().expect("session lock").clone();
        let response = self
            .http
            .put(format!("{}/worker/runs/{run_id}/logs/{seq}", self.base))
            .bearer_auth(session)
            .header(gantry_wire::LEASE_HEADER, lease_id)
            .body(data)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| CallError {
                status: None,
                message: describe(&e),
            })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(CallError {
                status: Some(status),
                message: response.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Ends a leased run as a successful run with no output.
    pub async fn finish_ok(&self, lease: &RunLease) -> Result<(), CallError> {
        let body = FinishRun {
            lease_id: lease.lease_id.clone(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            reason: None,
            log_chunks: 0,
        };
        let _: Option<()> = self
            .call(
                &format!("/worker/runs/{}/finish", lease.run_id),
                &body,
                Duration::from_secs(30),
            )
            .await?;
        Ok(())
    }
}

/// Counters shared by every simulated idle worker.
#[derive(Default)]
pub struct IdleStats {
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    pub heartbeats_ok: AtomicU64,
    pub heartbeats_failed: AtomicU64,
    pub unexpected_leases: AtomicU64,
    /// Heartbeat round trips (ms) are recorded only while this is set.
    pub recording: AtomicBool,
    pub heartbeat_ms: Mutex<Vec<f64>>,
    pub first_error: Mutex<Option<String>>,
}

impl IdleStats {
    fn error(&self, what: &str, error: &CallError) {
        let mut first = self.first_error.lock().expect("stats lock");
        if first.is_none() {
            *first = Some(format!("{what}: {error}"));
        }
    }

    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.polls_ok.load(Ordering::Relaxed),
            self.polls_failed.load(Ordering::Relaxed),
            self.heartbeats_ok.load(Ordering::Relaxed),
            self.heartbeats_failed.load(Ordering::Relaxed),
        ]
    }
}

/// An idle launcher's poll loop: one long-poll always open, with a free slot.
/// Bounded by `until`.
pub async fn idle_poll_loop(worker: Arc<Worker>, stats: Arc<IdleStats>, until: Instant) {
    let mut delay = Duration::from_millis(100);
    while Instant::now() < until {
        match worker.poll(1, POLL_WAIT_MS).await {
            Ok(response) => {
                stats.polls_ok.fetch_add(1, Ordering::Relaxed);
                delay = Duration::from_millis(100);
                if !response.leases.is_empty() {
                    stats
                        .unexpected_leases
                        .fetch_add(response.leases.len() as u64, Ordering::Relaxed);
                }
            }
            Err(error) => {
                stats.polls_failed.fetch_add(1, Ordering::Relaxed);
                stats.error("poll", &error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// An idle launcher's heartbeat loop: first beat at once, then every
/// interval (tokio's interval, as the launcher). Bounded by `until`.
pub async fn idle_heartbeat_loop(worker: Arc<Worker>, stats: Arc<IdleStats>, until: Instant) {
    let mut ticker = tokio::time::interval(worker.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        ticker.tick().await;
        let started = Instant::now();
        match worker.heartbeat(Vec::new()).await {
            Ok(_) => {
                stats.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
                if stats.recording.load(Ordering::Relaxed) {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    stats.heartbeat_ms.lock().expect("stats lock").push(ms);
                }
            }
            Err(error) => {
                stats.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
                stats.error("heartbeat", &error);
            }
        }
    }
}

/// Registers with retries for what a launcher would retry (transient errors,
/// and a pre-signed timestamp that went stale). Like the launcher, every
/// retry signs a fresh nonce: an attempt that timed out may have landed.
pub async fn register_with_retry(
    http: reqwest::Client,
    base: &str,
    pool: &PoolCredentials,
    mut request: RegisterRequest,
) -> Result<Worker> {
    let mut delay = Duration::from_millis(100);
    for attempt in 0..8 {
        match Worker::register(http.clone(), base, &request).await {
            Ok(worker) => return Ok(worker),
            Err(error) => {
                let transient = match error.status {
                    None => true,
                    Some(status) => {
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
                    }
                };
                let stale = error.status == Some(StatusCode::UNAUTHORIZED)
                    && error.message.contains("timestamped");
                if !(transient || stale) || attempt == 7 {
                    return Err(error).context("registration refused");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                request = registration(pool, &request.hostname);
            }
        }
    }
    bail!("registration kept failing")
}
