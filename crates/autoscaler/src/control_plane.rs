//! What the autoscaler asks of the control plane.

use anyhow::Context;
use async_trait::async_trait;
use gantry_wire::demand::{DrainIfIdle, PoolDemand};
use gantry_wire::error::ErrorBody;

#[async_trait]
pub trait ControlPlane: Send + Sync {
    /// The pool's demand: pending runs and its live workers.
    async fn demand(&self, pool: &str) -> anyhow::Result<PoolDemand>;
    /// Drains the worker only if it holds no run, atomically with the
    /// claim path (a drained worker is never given a run).
    async fn drain_if_idle(&self, worker_id: &str) -> anyhow::Result<DrainIfIdle>;
    async fn undrain(&self, worker_id: &str) -> anyhow::Result<()>;
}

/// The control plane's HTTP API, with an API token.
pub struct HttpControlPlane {
    http: reqwest::Client,
    /// `https://host:port`, without the API prefix.
    url: String,
    token: String,
}

impl HttpControlPlane {
    /// `http` carries the TLS settings (extra roots) the caller chose.
    pub fn new(http: reqwest::Client, url: &str, token: &str) -> HttpControlPlane {
        HttpControlPlane {
            http,
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let url = format!("{}{}{path}", self.url, gantry_wire::API_PREFIX);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .with_context(|| {
                format!("{method} {url}: the control plane is unreachable (check GANTRY_URL)")
            })?;
        let status = response.status();
        if !status.is_success() {
            let message = match response.json::<ErrorBody>().await {
                Ok(body) => body.error.message,
                Err(_) => status.to_string(),
            };
            anyhow::bail!("{method} {url}: {status}: {message}");
        }
        response
            .json()
            .await
            .with_context(|| format!("{method} {url}: unreadable answer"))
    }
}

/// Path segments are IDs and names the API gave out; escape them anyway.
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl ControlPlane for HttpControlPlane {
    async fn demand(&self, pool: &str) -> anyhow::Result<PoolDemand> {
        self.call(
            reqwest::Method::GET,
            &format!("/pools/{}/demand", segment(pool)),
        )
        .await
    }

    async fn drain_if_idle(&self, worker_id: &str) -> anyhow::Result<DrainIfIdle> {
        self.call(
            reqwest::Method::POST,
            &format!("/workers/{}/drain-if-idle", segment(worker_id)),
        )
        .await
    }

    async fn undrain(&self, worker_id: &str) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                &format!("/workers/{}/undrain", segment(worker_id)),
            )
            .await?;
        Ok(())
    }
}
