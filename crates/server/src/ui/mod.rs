//! The web UI, served at `/` beside the API: pages rendered on the server
//! (maud), one static script and one stylesheet, live updates over
//! server-sent events. Every read-only page works without JavaScript.
//!
//! Security: a session cookie (see [`session`]), a CSRF token in every form
//! that changes something, and a strict Content-Security-Policy (no inline
//! script or style) on every answer. Actions call the same functions as the
//! JSON API's handlers.
//!
//! One module per page group: `overview`, `pools` (and workers), `runs`
//! (list and page), `live` (the run page's event stream and log reads),
//! `stacks`, `tokens`; `waiting` says why a queued run waits; `ansi`
//! renders terminal colours.

mod ansi;
mod assets;
mod layout;
mod live;
mod overview;
mod pools;
mod runs;
mod session;
mod stacks;
mod tokens;
mod waiting;

use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use session::SessionKeys;

use crate::state::AppState;

/// No inline script or style, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, merged into the server's router at `/`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route(assets::JS_PATH, get(assets::js))
        .route(assets::CSS_PATH, get(assets::css))
        .route("/pools/{pool}", get(pools::page))
        .route("/pools/{pool}/cycle", post(pools::cycle))
        .route("/pools/{pool}/reset", post(pools::reset))
        .route("/workers/{worker}/drain", post(pools::drain))
        .route("/workers/{worker}/undrain", post(pools::undrain))
        .route("/runs", get(runs::list))
        .route("/runs/{run}", get(runs::page))
        .route("/runs/{run}/events", get(live::events))
        .route("/runs/{run}/log", get(live::older))
        .route("/runs/{run}/confirm", post(runs::confirm))
        .route("/runs/{run}/discard", post(runs::discard))
        .route("/runs/{run}/stop", post(runs::stop))
        .route("/stacks", get(stacks::list))
        .route("/stacks/{stack}", get(stacks::page))
        .route("/stacks/{stack}/runs", post(stacks::trigger))
        .route("/stacks/{stack}/unlock", post(stacks::unlock))
        .route("/stacks/{stack}/state/{version}", get(stacks::download))
        .route("/stacks/{stack}/diff", get(stacks::diff))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .layer(axum::middleware::from_fn(security_headers))
}

/// CSP and friends on every UI answer, and the server's own time for it
/// (`Server-Timing: app;dur=…`, what `gantry-bench ui` reads).
async fn security_headers(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    let micros = started.elapsed().as_micros();
    if let Ok(value) =
        HeaderValue::from_str(&format!("app;dur={}.{:03}", micros / 1000, micros % 1000))
    {
        headers.insert("server-timing", value);
    }
    response
}

/// A query value from an HTML form: an empty field means "not set".
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use crate::state::AppState;
    use crate::ServerConfig;

    /// A state over a fresh store in a temporary directory (kept for the
    /// life of the process: tests are short).
    pub async fn memory_state() -> AppState {
        let dir = tempfile::tempdir().unwrap().keep();
        let keyring = gantry_pki::at_rest::SecretsKeyring::parse(
            &gantry_pki::at_rest::SecretsKeyring::generate_key(),
        )
        .unwrap();
        let store = gantry_store::SqlStore::open_sqlite(&dir, keyring)
            .await
            .unwrap();
        AppState::new(
            Arc::new(store),
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir),
        )
    }
}
