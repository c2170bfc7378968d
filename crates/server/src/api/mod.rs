//! The HTTP API: routes for users and, under `/worker`, for launchers.

mod demand;
mod logs;
mod meta;
mod pools;
mod runs;
mod stacks;
mod state_backend;
mod tokens;
mod workers;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post, put};
use axum::Router;

use crate::protocol;
use crate::state::AppState;

pub use demand::*;
pub use logs::*;
pub use meta::*;
pub use pools::*;
pub use runs::*;
pub use stacks::*;
pub use state_backend::*;
pub use tokens::*;
pub use workers::*;

/// Log chunks are at most 1 MiB; leave room for framing.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Uploaded directories (base64), state files and sealed workspaces.
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(meta::health))
        .route("/ready", get(meta::ready))
        .route("/version", get(meta::version))
        .route("/openapi.json", get(meta::openapi))
        .route("/launcher/download", get(meta::launcher_download))
        .route("/pools", get(pools::list_pools).post(pools::create_pool))
        .route(
            "/pools/{pool}",
            get(pools::show_pool).delete(pools::delete_pool),
        )
        .route("/pools/{pool}/reset", post(pools::reset_pool))
        .route("/pools/{pool}/cycle", post(pools::cycle_pool))
        .route("/pools/{pool}/demand", get(demand::pool_demand))
        .route("/runs", get(runs::list_runs).post(runs::submit_run))
        .route("/runs/{run}", get(runs::show_run))
        .route("/runs/{run}/stop", post(runs::stop_run))
        .route("/runs/{run}/logs", get(logs::read_logs))
        .route("/runs/{run}/confirm", post(stacks::confirm_run))
        .route("/runs/{run}/discard", post(stacks::discard_run))
        .route(
            "/stacks",
            get(stacks::list_stacks)
                .post(stacks::create_stack)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route(
            "/stacks/{stack}",
            get(stacks::show_stack)
                .patch(stacks::update_stack)
                .delete(stacks::delete_stack)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/stacks/{stack}/runs", post(stacks::trigger_run))
        .route(
            "/stacks/{stack}/state",
            any(state_backend::state_backend).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route(
            "/stacks/{stack}/state/versions",
            get(state_backend::list_state_versions),
        )
        .route(
            "/stacks/{stack}/state/versions/{version}",
            get(state_backend::download_state_version),
        )
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke_token))
        .route("/workers", get(workers::list_workers))
        .route("/workers/{worker}", get(workers::show_worker))
        .route("/workers/{worker}/drain", post(workers::drain_worker))
        .route("/workers/{worker}/undrain", post(workers::undrain_worker))
        .route(
            "/workers/{worker}/drain-if-idle",
            post(demand::drain_worker_if_idle),
        )
        .route("/worker/register", post(protocol::register))
        .route("/worker/poll", post(protocol::poll))
        .route("/worker/heartbeat", post(protocol::heartbeat))
        .route("/worker/deregister", post(protocol::deregister))
        .route("/worker/runs/{run}/state", post(protocol::report_state))
        .route(
            "/worker/runs/{run}/logs/{seq}",
            put(protocol::put_log_chunk),
        )
        .route("/worker/runs/{run}/finish", post(protocol::finish_run))
        .route(
            "/worker/runs/{run}/terraform-state",
            axum::routing::put(protocol::put_recovered_state),
        )
        .route("/worker/runs/{run}/plan", post(protocol::report_plan))
        .route("/worker/runs/{run}/source", get(protocol::download_source))
        .route(
            "/worker/runs/{run}/workspace",
            get(protocol::download_workspace)
                .put(protocol::upload_workspace)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .fallback(meta::not_found)
        // After every route: it applies to the routes already added.
        .method_not_allowed_fallback(meta::method_not_allowed)
        // Per route, where the route template is known.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::http::track,
        ));
    Router::new()
        .nest(gantry_wire::API_PREFIX, api)
        // Prometheus' conventional path, outside the API prefix.
        .route("/metrics", get(crate::metrics::scrape))
        .merge(crate::ui::router())
        .fallback(meta::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limiter::limit_failed_auth,
        ))
        // Outermost: whatever answers an error, the client gets the JSON body.
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .with_state(state)
}
