//! State recovery: the state an apply produced but Terraform could not save
//! to the control plane (it was unreachable, or the run's lease ran out and
//! the state backend refused the run's credential). Terraform leaves it as
//! `errored.tfstate`; the launcher uploads it here as soon as it can, under
//! its session and the run's lease, so the state is never lost.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use gantry_wire::stack::StateVersion;

use super::run::{held_run, lease_header};
use crate::auth::WorkerSession;
use crate::error::ApiResult;
use crate::extract::Path;
use crate::state::{now_ms, AppState};

#[utoipa::path(put, path = "/worker/runs/{run}/terraform-state", tag = "worker protocol",
    params(("run" = String, Path), ("gantry-lease" = String, Header, description = "The run's lease ID")),
    request_body(content = Vec<u8>, content_type = "application/json", description = "The Terraform state (errored.tfstate)"),
    responses((status = 200, description = "Stored, or already the stack's current state", body = StateVersion),
              (status = 400, body = gantry_wire::error::ErrorBody),
              (status = 401, body = gantry_wire::error::ErrorBody),
              (status = 409, description = "Lease lost, or the state does not continue the stack's", body = gantry_wire::error::ErrorBody)))]
pub async fn put_recovered_state(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<StateVersion>> {
    let lease_id = lease_header(&headers)?;
    held_run(&state, &session, &run_id).await?;
    let version = crate::api::new_state_version(&body, Some(run_id.clone()))?;
    let saved = state
        .store
        .put_recovered_state(&run_id, lease_id, &version, now_ms())
        .await?;
    tracing::warn!(
        run_id,
        version = saved.version,
        serial = saved.serial,
        "stored the state an apply could not save itself"
    );
    Ok(Json(crate::api::state_version(&saved)))
}
