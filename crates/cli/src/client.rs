//! The API client behind every command but `server`.

use std::time::Duration;

use gantry_wire::error::ErrorBody;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{exit, Failure};

pub struct Api {
    http: reqwest::Client,
    base: String,
    url: String,
    token: Option<String>,
}

impl Api {
    pub fn new(
        url: &str,
        token: Option<String>,
        extra_roots: Option<&str>,
    ) -> Result<Api, Failure> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::new(
                exit::USAGE,
                format!("GANTRY_URL {url:?} is not an http(s) URL, e.g. http://127.0.0.1:8080"),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("gantry-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if let Some(bundle) = extra_roots.filter(|b| !b.trim().is_empty()) {
            let pems = gantry_pki::ca_bundle::decode(bundle).map_err(|e| {
                Failure::new(exit::USAGE, format!("GANTRY_ADDITIONAL_ROOT_CAS: {e}"))
            })?;
            for pem in pems {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                    Failure::new(exit::USAGE, format!("GANTRY_ADDITIONAL_ROOT_CAS: {e}"))
                })?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
        let url = url.trim_end_matches('/').to_string();
        Ok(Api {
            http,
            base: format!("{url}{}", gantry_wire::API_PREFIX),
            url,
            token,
        })
    }

    /// The HTTP client, with the TLS roots chosen (for the autoscaler).
    #[cfg_attr(not(feature = "autoscaler"), allow(dead_code))]
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// The control plane's URL, without the API prefix.
    #[cfg_attr(not(feature = "autoscaler"), allow(dead_code))]
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, Failure> {
        let Some(token) = &self.token else {
            return Err(Failure::new(
                exit::UNAUTHORIZED,
                "GANTRY_API_TOKEN is not set; use the admin token the server printed at first start",
            ));
        };
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .timeout(Duration::from_secs(60)))
    }

    pub async fn send(&self, request: RequestBuilder) -> Result<Response, Failure> {
        let response = self.send_raw(request).await?;
        self.check(response).await
    }

    /// Sends a request; any HTTP status is an answer.
    pub async fn send_raw(&self, request: RequestBuilder) -> Result<Response, Failure> {
        request.send().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Failure::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the control plane at {} (GANTRY_URL): {text}",
                    self.url
                ),
            )
        })
    }

    /// The response when it is a success, else the failure it describes.
    pub async fn check(&self, response: Response) -> Result<Response, Failure> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => match &body.error.field {
                Some(field) => format!("{} [{}: {}]", body.error.message, body.error.code, field),
                None => format!("{} [{}]", body.error.message, body.error.code),
            },
            Err(_) => format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        };
        let code = match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => exit::USAGE,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::UNAUTHORIZED,
            StatusCode::CONFLICT => exit::CONFLICT,
            _ => exit::ERROR,
        };
        Err(Failure::new(code, message))
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, Failure> {
        let response = self.send(self.request(method, path)?).await?;
        decode(response).await
    }

    pub async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        let response = self.send(self.request(method, path)?.json(body)).await?;
        decode(response).await
    }
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::new(exit::ERROR, e.to_string()))?;
    let bytes = if bytes.is_empty() {
        &b"null"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::new(
            exit::ERROR,
            format!("unexpected answer from the control plane: {e}"),
        )
    })
}

/// Path segments are IDs and names; keep them from breaking the URL.
pub fn segment(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xff)
            }
        })
        .collect()
}
