//! The launcher's side of the protocol: one method per endpoint. Every call
//! goes out over HTTP(S); reqwest applies HTTP(S)_PROXY and NO_PROXY.

use std::sync::RwLock;
use std::time::Duration;

use gantry_wire::error::ErrorBody;
use gantry_wire::run::RunState;
use gantry_wire::worker::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the control plane: {0}")]
    Unreachable(String),
    #[error("{body} (HTTP {status})")]
    Api { status: StatusCode, body: ErrorBody },
    #[error("unexpected answer from the control plane (HTTP {status}): {text}")]
    Unexpected { status: StatusCode, text: String },
}

impl CallError {
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Api { body, .. } => Some(body.error.code.as_str()),
            _ => None,
        }
    }

    /// Worth retrying: the network, an overloaded or restarting server.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) => true,
            CallError::Api { status, .. } | CallError::Unexpected { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// Retrying cannot help: the control plane refuses the request itself
    /// (400, 403, 404, 409, 413…). A 401 is not permanent: the session ran
    /// out, and the agent registers again (`register::SessionKeeper`).
    pub fn is_permanent(&self) -> bool {
        match self {
            CallError::Unreachable(_) => false,
            CallError::Api { status, .. } | CallError::Unexpected { status, .. } => {
                status.is_client_error()
                    && !matches!(
                        *status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
        }
    }

    pub fn is_lease_lost(&self) -> bool {
        self.code() == Some("lease_lost")
    }
}

pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    session: RwLock<String>,
    /// Bumped by every new session token: tells a task whether the session
    /// its call failed under was already replaced.
    session_generation: std::sync::atomic::AtomicU64,
}

impl ControlPlane {
    pub fn new(config: &Config) -> anyhow::Result<ControlPlane> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("gantry-launcher/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30));
        for pem in &config.extra_roots {
            for certificate in reqwest::Certificate::from_pem_bundle(pem.as_bytes())? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(ControlPlane {
            http: builder.build()?,
            base: format!(
                "{}{}",
                config.token.url.trim_end_matches('/'),
                gantry_wire::API_PREFIX
            ),
            session: RwLock::new(String::new()),
            session_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn set_session(&self, token: String) {
        *self.session.write().expect("session lock") = token;
        self.session_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn session_generation(&self) -> u64 {
        self.session_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn request(&self, method: Method, path: &str, timeout: Duration) -> RequestBuilder {
        let session = self.session.read().expect("session lock").clone();
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if session.is_empty() {
            request
        } else {
            request.bearer_auth(session)
        }
    }

    /// A stack's current state from the control plane's state backend
    /// (`address`), with a run's credential; empty when it has none yet.
    pub(crate) async fn stack_state(
        &self,
        address: &str,
        username: &str,
        password: &str,
    ) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(address)
            .basic_auth(username, Some(password))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(format!("the state backend answered HTTP {status}"));
        }
        Ok(response.bytes().await.map_err(|e| describe(&e))?.to_vec())
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, CallError> {
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        if status.is_success() {
            let bytes = if bytes.is_empty() {
                &b"null"[..]
            } else {
                &bytes[..]
            };
            return serde_json::from_slice(bytes).map_err(|e| CallError::Unexpected {
                status,
                text: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(CallError::Api { status, body }),
            Err(_) => Err(CallError::Unexpected {
                status,
                text: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            }),
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, CallError> {
        self.send(self.request(Method::POST, path, timeout).json(body))
            .await
    }

    pub async fn register(&self, request: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        self.post("/worker/register", request, Duration::from_secs(30))
            .await
    }

    pub async fn poll(&self, request: &PollRequest) -> Result<PollResponse, CallError> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(15);
        self.post("/worker/poll", request, timeout).await
    }

    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, CallError> {
        self.post("/worker/heartbeat", request, Duration::from_secs(15))
            .await
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
            .post(
                &format!("/worker/runs/{run_id}/state"),
                &body,
                Duration::from_secs(30),
            )
            .await?;
        Ok(())
    }

    pub async fn put_log_chunk(
        &self,
        run_id: &str,
        lease_id: &str,
        seq: u64,
        data: Vec<u8>,
    ) -> Result<(), CallError> {
        let request = self
            .request(
                Method::PUT,
                &format!("/worker/runs/{run_id}/logs/{seq}"),
                Duration::from_secs(60),
            )
            .header(gantry_wire::LEASE_HEADER, lease_id)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        let _: Option<()> = self.send(request).await?;
        Ok(())
    }

    pub async fn finish(&self, run_id: &str, request: &FinishRun) -> Result<(), CallError> {
        let _: Option<()> = self
            .post(
                &format!("/worker/runs/{run_id}/finish"),
                request,
                Duration::from_secs(30),
            )
            .await?;
        Ok(())
    }

    /// Hands over the state an apply could not save (see `recovery`).
    pub async fn put_recovered_state(
        &self,
        run_id: &str,
        lease_id: &str,
        state: Vec<u8>,
    ) -> Result<gantry_wire::stack::StateVersion, CallError> {
        let request = self
            .request(
                Method::PUT,
                &format!("/worker/runs/{run_id}/terraform-state"),
                Duration::from_secs(60),
            )
            .header(gantry_wire::LEASE_HEADER, lease_id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(state);
        self.send(request).await
    }

    pub async fn deregister(&self) -> Result<(), CallError> {
        let _: Option<()> = self
            .post(
                "/worker/deregister",
                &serde_json::json!({}),
                Duration::from_secs(10),
            )
            .await?;
        Ok(())
    }
}

/// reqwest's Display stops at the outermost error; the cause (connection
/// refused, certificate unknown, proxy refused) is what a human needs.
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

/// How a retry loop reports: its first failure at warn level, then a
/// reminder about every 30 s while it keeps failing, never a line per try.
pub struct RetryLog {
    what: &'static str,
    first: Option<tokio::time::Instant>,
    last_said: Option<tokio::time::Instant>,
    tries: u32,
}

impl RetryLog {
    const REMIND_EVERY: Duration = Duration::from_secs(30);

    pub fn new(what: &'static str) -> RetryLog {
        RetryLog {
            what,
            first: None,
            last_said: None,
            tries: 0,
        }
    }

    pub fn failed(&mut self, run_id: &str, error: &CallError) {
        self.log(Some(run_id), error);
    }

    /// A failure of a call about no run in particular (poll, heartbeat).
    pub fn failed_call(&mut self, error: &CallError) {
        self.log(None, error);
    }

    /// The call works again: the next failure is a first failure.
    pub fn succeeded(&mut self) {
        if let Some(first) = self.first.take() {
            tracing::info!(
                tries = self.tries,
                failed_for_s = first.elapsed().as_secs(),
                "{} works again",
                self.what
            );
        }
        self.last_said = None;
        self.tries = 0;
    }

    fn log(&mut self, run_id: Option<&str>, error: &CallError) {
        let now = tokio::time::Instant::now();
        self.tries += 1;
        let first = *self.first.get_or_insert(now);
        let due = self
            .last_said
            .is_none_or(|said| now.duration_since(said) >= Self::REMIND_EVERY);
        let failing_for_s = now.duration_since(first).as_secs();
        match (due, run_id) {
            (true, Some(run_id)) => tracing::warn!(
                run_id,
                %error,
                tries = self.tries,
                failing_for_s,
                "{} failed; retrying",
                self.what
            ),
            (true, None) => tracing::warn!(
                %error,
                tries = self.tries,
                failing_for_s,
                "{} failed; retrying",
                self.what
            ),
            (false, _) => {
                tracing::debug!(run_id, %error, "{} failed; retrying", self.what)
            }
        }
        if due {
            self.last_said = Some(now);
        }
    }
}

/// Retries `call` on transient errors with capped exponential backoff.
pub async fn with_retry<T, F, Fut>(mut call: F, give_up_after: Duration) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Err(error) if error.is_transient() && started.elapsed() < give_up_after => {
                tracing::debug!(%error, retry_in_ms = delay.as_millis() as u64, "transient error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}
