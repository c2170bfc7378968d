//! The OpenAPI document, served at `/api/v1/openapi.json`. It is generated
//! from the handlers' annotations and the wire types, so it cannot drift.

use utoipa::OpenApi;

use crate::{api, protocol};

#[derive(OpenApi)]
#[openapi(
    info(title = "Gantry control plane API", description = "Worker pools, runs, logs, and the launcher protocol. \
        User calls take `Authorization: Bearer <API token>`; launcher calls take the worker session token."),
    servers((url = "/api/v1")),
    paths(
        api::health, api::version, api::openapi, api::launcher_download,
        api::create_pool, api::list_pools, api::show_pool, api::reset_pool, api::cycle_pool, api::delete_pool,
        api::submit_run, api::list_runs, api::show_run, api::stop_run, api::read_logs,
        api::list_workers, api::show_worker, api::drain_worker, api::undrain_worker,
        protocol::register, protocol::poll, protocol::heartbeat, protocol::deregister,
        protocol::report_state, protocol::put_log_chunk, protocol::finish_run,
    ),
    tags(
        (name = "pools", description = "Worker pools and their credentials"),
        (name = "runs", description = "Runs and their logs"),
        (name = "workers", description = "Workers registered in pools"),
        (name = "worker protocol", description = "What launchers call"),
        (name = "meta", description = "Health, version, launcher download"),
    )
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = gantry_wire::VERSION.to_string();
    doc
}
