//! The OpenAPI document, served at `/api/v1/openapi.json`. It is generated
//! from the handlers' annotations and the wire types, so it cannot drift.
//!
//! The handlers' annotations list the answers particular to each operation
//! (201, 409 conflicts, 426…). The errors every operation of a kind can give
//! are added here from what the operation takes, so none is forgotten:
//!
//! | status | code | when the operation… |
//! |---|---|---|
//! | 400 | `invalid_input` | has parameters or a body (a bad value, the field named) |
//! | 401 | `unauthorized` | needs a token (`security`: API token or worker session) |
//! | 404 | `not_found` | has path parameters (nothing by that name; an empty one matches no route) |
//! | 413 | `payload_too_large` | has a body |
//! | 415 | `unsupported_media_type` | has a JSON body (no `Content-Type: application/json`) |
//! | 429 | `rate_limited` | any: the client is over the failed-authentication limit |
//! | 500 | `internal` | uses the store |
//!
//! Every one of them is the JSON [`ErrorBody`](gantry_wire::error::ErrorBody).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;

use crate::{api, protocol};

#[derive(OpenApi)]
#[openapi(
    info(title = "Gantry control plane API", description = "Worker pools, runs, logs, and the launcher protocol. \
        User calls take `Authorization: Bearer <API token>`; launcher calls take the worker session token."),
    servers((url = "/api/v1")),
    paths(
        api::health, api::ready, api::version, api::openapi, api::launcher_download,
        api::create_pool, api::list_pools, api::show_pool, api::reset_pool, api::cycle_pool, api::delete_pool, api::pool_demand,
        api::submit_run, api::list_runs, api::show_run, api::stop_run, api::read_logs,
        api::create_token, api::list_tokens, api::revoke_token,
        api::create_stack, api::list_stacks, api::show_stack, api::update_stack, api::delete_stack,
        api::trigger_run, api::confirm_run, api::discard_run,
        api::list_state_versions, api::download_state_version,
        api::list_workers, api::show_worker, api::drain_worker, api::undrain_worker, api::drain_worker_if_idle,
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
    add_common_errors(&mut doc);
    doc
}

/// How an operation authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anyone,
    User,
    Worker,
}

const API_TOKEN: &str = "api_token";
const WORKER_SESSION: &str = "worker_session";

fn caller(path: &str, operation: &Operation) -> Caller {
    let tagged = |tag: &str| {
        operation
            .tags
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| t == tag))
    };
    if tagged("meta") || path == "/worker/register" {
        Caller::Anyone
    } else if path.starts_with("/worker/") {
        Caller::Worker
    } else {
        Caller::User
    }
}

/// The shared error responses, under `components/responses`:
/// (status, name, description).
const COMMON: [(u16, &str, &str); 7] = [
    (400, "InvalidInput", "Invalid input: a parameter or the body is malformed or out of range; `field` names it (`invalid_input`)"),
    (401, "Unauthorized", "No token, or one not valid for this call (`unauthorized`)"),
    (404, "NotFound", "Nothing by that name or ID, or no such route (`not_found`)"),
    (413, "PayloadTooLarge", "The body is over this route's limit (`payload_too_large`)"),
    (415, "UnsupportedMediaType", "The body is not sent as `application/json` (`unsupported_media_type`)"),
    (429, "RateLimited", "Too many failed authentications from this client; wait a minute (`rate_limited`)"),
    (500, "Internal", "An internal error; the server log says more (`internal`)"),
];

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn add_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for (_, name, description) in COMMON {
        components
            .responses
            .insert(name.to_string(), RefOr::T(error_response(description)));
    }
    let bearer = |description: &str| {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(description.to_string());
        SecurityScheme::Http(http)
    };
    components.security_schemes.insert(
        API_TOKEN.into(),
        bearer("A user API token (`gantry_api_…`; the admin token at first start)"),
    );
    components.security_schemes.insert(
        WORKER_SESSION.into(),
        bearer("A worker session token, from register or a heartbeat"),
    );

    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let who = caller(path, operation);
            match who {
                Caller::User => {
                    operation.security = Some(vec![SecurityRequirement::new(
                        API_TOKEN,
                        Vec::<String>::new(),
                    )])
                }
                Caller::Worker => {
                    operation.security = Some(vec![SecurityRequirement::new(
                        WORKER_SESSION,
                        Vec::<String>::new(),
                    )])
                }
                Caller::Anyone => {}
            }
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let has_path_params = parameters
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Path));
            let body = operation.request_body.as_ref();
            let json_body = body.is_some_and(|b| b.content.keys().any(|c| c.contains("json")));
            let uses_store = !(who == Caller::Anyone && path != "/worker/register");
            for (status, name, _) in COMMON {
                let applies = match status {
                    400 => !parameters.is_empty() || body.is_some(),
                    401 => who != Caller::Anyone || path == "/worker/register",
                    404 => has_path_params,
                    413 => body.is_some(),
                    415 => json_body,
                    429 => true,
                    _ => uses_store,
                };
                if applies {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn operations() -> Vec<(String, String, Value)> {
        let doc = serde_json::to_value(super::document()).unwrap();
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        all
    }

    fn statuses(operation: &Value) -> Vec<&str> {
        operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn every_operation_lists_the_errors_it_can_give() {
        let all = operations();
        assert!(all.len() >= 40, "{} operations", all.len());
        for (method, path, operation) in &all {
            let listed = statuses(operation);
            let has = |status: &str| listed.contains(&status);
            let at = format!("{method} {path}: {listed:?}");
            assert!(has("429"), "{at}");
            if operation.get("requestBody").is_some() {
                assert!(has("400") && has("413"), "{at}");
            }
            if path.contains('{') {
                assert!(has("400") && has("404"), "{at}");
            }
            if path.starts_with("/worker/") || operation["tags"][0] != "meta" {
                assert!(has("401") && has("500"), "{at}");
            }
            let body = &operation["requestBody"]["content"];
            if body.get("application/json").is_some() {
                assert!(has("415"), "{at}");
            }
        }
    }

    #[test]
    fn the_shared_error_responses_are_the_json_error_body() {
        let doc = serde_json::to_value(super::document()).unwrap();
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        for (status, name, _) in super::COMMON {
            let response = &doc["components"]["responses"][name];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{status} {name}"
            );
        }
        let find = |method: &str, path: &str| {
            operations()
                .into_iter()
                .find(|(m, p, _)| m == method && p == path)
                .unwrap()
                .2
        };
        assert_eq!(
            find("post", "/pools")["security"][0]["api_token"],
            serde_json::json!([])
        );
        assert_eq!(
            find("post", "/worker/poll")["security"][0]["worker_session"],
            serde_json::json!([])
        );
        assert!(find("post", "/worker/register").get("security").is_none());
        assert!(find("get", "/health").get("security").is_none());
    }
}
