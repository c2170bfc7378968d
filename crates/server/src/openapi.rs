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
        api::create_token, api::list_tokens, api::revoke_token,
        api::create_stack, api::list_stacks, api::show_stack, api::update_stack, api::delete_stack,
        api::trigger_run, api::confirm_run, api::discard_run,
        api::list_state_versions, api::download_state_version,
        api::list_workers, api::show_worker, api::drain_worker, api::undrain_worker,
        protocol::register, protocol::poll, protocol::heartbeat, protocol::deregister,
        protocol::report_state, protocol::put_log_chunk, protocol::finish_run, protocol::put_recovered_state,
        protocol::report_plan, protocol::download_source, protocol::upload_workspace, protocol::download_workspace,
    ),
    tags(
        (name = "pools", description = "Worker pools and their credentials"),
        (name = "runs", description = "Runs and their logs"),
        (name = "stacks", description = "Stacks, their runs and their Terraform state"),
        (name = "workers", description = "Workers registered in pools"),
        (name = "worker protocol", description = "What launchers call"),
        (name = "tokens", description = "User API tokens"),
        (name = "meta", description = "Health, version, launcher download"),
    )
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = gantry_wire::VERSION.to_string();
    doc
}
