//! The launcher's side of the protocol: one method per endpoint. Every call
//! goes out over HTTP(S); reqwest applies HTTP(S)_PROXY and NO_PROXY.

use std::sync::RwLock;
use std::time::{Duration, Instant};

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
    /// The control plane's certificate is not trusted, or not for its host:
    /// retrying cannot help; the message says which setting fixes it.
    #[error("{0}")]
    Certificate(String),
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
            CallError::Certificate(_) => false,
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
            CallError::Unreachable(_) | CallError::Certificate(_) => false,
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

    /// A failed request: a certificate problem (not transient, and the
    /// message names the fix), or the network.
    fn unreachable(&self, error: &reqwest::Error) -> CallError {
        let text = describe(error);
        match certificate_problem(&text, &self.base) {
            Some(problem) => CallError::Certificate(problem),
            None => CallError::Unreachable(text),
        }
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
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
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

    /// A heartbeat waits at most `timeout`: one stuck on a connection that
    /// died silently must not hold up the next one past the lease.
    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        self.post("/worker/heartbeat", request, timeout).await
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

/// What a TLS failure means for the operator, or None when `text` (a
/// request error with its causes) is not one: an unknown CA is fixed with
/// GANTRY_ADDITIONAL_ROOT_CAS, a certificate for another name with the host
/// of the control plane's URL.
pub(crate) fn certificate_problem(text: &str, url: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("certificate") {
        return None;
    }
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(url);
    // Without the port: certificates name hosts.
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    };
    let fix = if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        format!(
            "the control plane's certificate at {host} is signed by a CA this launcher does not trust; \
             set GANTRY_ADDITIONAL_ROOT_CAS to the bundle of that CA (`gantry ca-bundle encode ca.pem`)"
        )
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        format!(
            "the control plane's certificate is not valid for the host {host} of its URL (from the pool token); \
             give the control plane a URL whose host the certificate names (the server's --public-url, which \
             pool tokens carry), or a certificate that also names {host}"
        )
    } else if lower.contains("expired") || lower.contains("notvalidyet") {
        format!("the control plane's certificate at {host} is expired or not yet valid (check the clocks); renew it")
    } else if lower.contains("invalid peer certificate") || lower.contains("unknown ca") {
        format!(
            "the control plane's certificate at {host} is refused; \
             check it, and GANTRY_ADDITIONAL_ROOT_CAS if it comes from a private CA"
        )
    } else {
        return None;
    };
    Some(format!("{fix} ({text})"))
}

/// How a retry loop reports its failures: the first at warn level at once,
/// then a reminder about every 30 s (not every attempt, which would flood
/// the log), and the recovery.
pub struct RetryLog {
    what: &'static str,
    first_failure: Option<Instant>,
    last_warning: Option<Instant>,
    attempts: u32,
}

/// Between two reminders that a call keeps failing.
pub const REMINDER_EVERY: Duration = Duration::from_secs(30);

impl RetryLog {
    pub fn new(what: &'static str) -> RetryLog {
        RetryLog {
            what,
            first_failure: None,
            last_warning: None,
            attempts: 0,
        }
    }

    /// Records a failed attempt; returns whether it was logged at warn level.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) -> bool {
        self.failed_at(error, Instant::now())
    }

    fn failed_at(&mut self, error: &dyn std::fmt::Display, now: Instant) -> bool {
        self.attempts += 1;
        let first = *self.first_failure.get_or_insert(now);
        let warn = self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= REMINDER_EVERY);
        if warn {
            self.last_warning = Some(now);
            if self.attempts == 1 {
                tracing::warn!(%error, "{} failed; retrying", self.what);
            } else {
                tracing::warn!(
                    %error,
                    attempts = self.attempts,
                    failing_for_s = now.duration_since(first).as_secs(),
                    "{} still failing; retrying",
                    self.what
                );
            }
        } else {
            tracing::debug!(%error, attempts = self.attempts, "{} failed; retrying", self.what);
        }
        warn
    }

    /// Records a success; after failures, says so.
    pub fn succeeded(&mut self) {
        if let Some(first) = self.first_failure.take() {
            tracing::info!(
                attempts = self.attempts,
                after_s = first.elapsed().as_secs(),
                "{} succeeded after failing",
                self.what
            );
        }
        self.attempts = 0;
        self.last_warning = None;
    }
}

/// Retries `call` on transient errors with capped exponential backoff.
pub async fn with_retry<T, F, Fut>(call: F, give_up_after: Duration) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    with_retry_as("a call to the control plane", call, give_up_after).await
}

/// [`with_retry`], naming the call in the launcher's log ([`RetryLog`]).
pub async fn with_retry_as<T, F, Fut>(
    what: &'static str,
    mut call: F,
    give_up_after: Duration,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut log = RetryLog::new(what);
    loop {
        match call().await {
            Err(error) if error.is_transient() && started.elapsed() < give_up_after => {
                log.failed(&error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            result => {
                if result.is_ok() {
                    log.succeeded();
                }
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {

    fn api(status: u16) -> CallError {
        CallError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            body: serde_json::from_value(serde_json::json!({
                "error": {"code": "x", "message": "m"}
            }))
            .unwrap(),
        }
    }

    #[test]
    fn retries_give_up_on_refusals_but_not_on_outages_or_an_expired_session() {
        for permanent in [400, 403, 404, 409, 413] {
            assert!(api(permanent).is_permanent(), "{permanent}");
            assert!(!api(permanent).is_transient(), "{permanent}");
        }
        // 401: the session ran out; the agent registers again.
        for retried in [401, 408, 429, 500, 502, 503] {
            assert!(!api(retried).is_permanent(), "{retried}");
        }
        assert!(!CallError::Unreachable("refused".into()).is_permanent());
    }

    use super::*;

    #[test]
    fn a_retry_loop_warns_at_once_then_every_30_seconds() {
        let mut log = RetryLog::new("registration");
        let mut warned = Vec::new();
        let start = Instant::now();
        // An attempt every 5 s for two minutes.
        for second in (0..120).step_by(5) {
            let now = start + Duration::from_secs(second);
            if log.failed_at(&"connection refused", now) {
                warned.push(second);
            }
        }
        assert_eq!(warned, [0, 30, 60, 90]);
        log.succeeded();
        assert!(
            log.failed(&"again"),
            "a new failure after a success warns at once"
        );
    }

    #[test]
    fn certificate_problems_name_the_setting_that_fixes_them() {
        let url = "https://gantry.internal:8443/api/v1";
        let unknown = certificate_problem(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer",
            url,
        )
        .unwrap();
        assert!(unknown.contains("GANTRY_ADDITIONAL_ROOT_CAS"), "{unknown}");
        let name = certificate_problem(
            "error sending request: invalid peer certificate: NotValidForName",
            url,
        )
        .unwrap();
        assert!(
            name.contains("the host gantry.internal of its URL"),
            "{name}"
        );
        assert_eq!(
            certificate_problem(
                "error sending request: Connection refused (os error 111)",
                url
            ),
            None
        );
    }
}
