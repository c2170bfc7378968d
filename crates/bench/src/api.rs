//! The user-facing API, as the CLI would call it, with the admin token.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use gantry_wire::pool::{CreatePool, PoolWithToken, Worker, WorkerState};
use gantry_wire::run::{Run, RunState, SubmitRun};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::stats::rfc3339_ms;

/// An HTTP client for 127.0.0.1 only: never through a proxy.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client builds")
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/api/v1`
    pub base: String,
    token: String,
}

impl Api {
    pub fn new(url: &str, token: &str) -> Api {
        Api {
            http: http_client(Duration::from_secs(30)),
            base: format!("{}{}", url.trim_end_matches('/'), gantry_wire::API_PREFIX),
            token: token.to_string(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: unexpected answer"))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    pub async fn health(&self) -> Result<()> {
        let _: serde_json::Value = self.get("/health").await?;
        Ok(())
    }

    pub async fn create_pool(&self, name: &str, csr: &str) -> Result<PoolWithToken> {
        let body = CreatePool {
            name: name.to_string(),
            csr: csr.to_string(),
            description: String::new(),
        };
        self.call(Method::POST, "/pools", Some(&body)).await
    }

    pub async fn submit(&self, pool: &str, command: &[&str]) -> Result<Run> {
        let body = SubmitRun {
            pool: pool.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..SubmitRun::default()
        };
        self.call(Method::POST, "/runs", Some(&body)).await
    }

    /// A stack on a git source (nothing is cloned until a run).
    pub async fn create_git_stack(&self, name: &str, pool: &str, url: &str) -> Result<()> {
        let body = serde_json::json!({ "name": name, "pool": pool, "git_url": url });
        let _: serde_json::Value = self.call(Method::POST, "/stacks", Some(&body)).await?;
        Ok(())
    }

    pub async fn run(&self, id: &str) -> Result<Run> {
        self.get(&format!("/runs/{id}")).await
    }

    pub async fn runs(&self, pool: &str, state: Option<RunState>) -> Result<Vec<Run>> {
        let mut path = format!("/runs?pool={pool}&limit=1000");
        if let Some(state) = state {
            path.push_str(&format!("&state={state}"));
        }
        self.get(&path).await
    }

    pub async fn workers(&self, pool: &str) -> Result<Vec<Worker>> {
        self.get(&format!("/workers?pool={pool}")).await
    }

    pub async fn idle_workers(&self, pool: &str) -> Result<usize> {
        Ok(self
            .workers(pool)
            .await?
            .iter()
            .filter(|w| w.state == WorkerState::Idle)
            .count())
    }

    /// Waits until the run ends, polling every `every`, for at most `limit`.
    pub async fn wait_ended(&self, id: &str, every: Duration, limit: Duration) -> Result<Run> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = self.run(id).await?;
            if run.state.is_terminal() {
                return Ok(run);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("run {id} still {} after {limit:?}", run.state);
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// When the run first entered `state`, in ms since the epoch.
pub fn entered(run: &Run, state: RunState) -> Option<f64> {
    run.transitions
        .iter()
        .find(|t| t.state == state)
        .and_then(|t| rfc3339_ms(&t.at).ok())
}

/// When the run left READY: its first transition after READY.
pub fn left_ready(run: &Run) -> Option<f64> {
    let ready = run
        .transitions
        .iter()
        .position(|t| t.state == RunState::Ready)?;
    run.transitions
        .get(ready + 1)
        .and_then(|t| rfc3339_ms(&t.at).ok())
}
