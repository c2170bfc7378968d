//! What launchers call for runs on stacks: the lease's stack job (with the
//! run's state-backend credential), the uploaded source, the plan report,
//! and the sealed workspace kept between plan and apply.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_store::{PlanReport, RunRecord};
use gantry_wire::error::ErrorCode;
use gantry_wire::run::{RunState, RunType};
use gantry_wire::stack::{JobPhase, ReportPlan, StackJob, Tool};

use crate::auth::{hash_secret, new_secret, WorkerSession};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::{now_ms, AppState};

/// The stack part of a fresh lease: source, tool, hooks, and a new
/// credential for the stack's state, valid while this lease lives.
pub(crate) async fn stack_job(
    state: &AppState,
    headers: &HeaderMap,
    run: &RunRecord,
) -> ApiResult<Option<(StackJob, std::collections::BTreeMap<String, String>)>> {
    let Some(stack_id) = &run.stack_id else {
        return Ok(None);
    };
    let stack = state
        .store
        .find_stack(stack_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {stack_id}")))?;
    let lease_id = run.lease_id.clone().unwrap_or_default();
    let password = new_secret("gantry_run_");
    state
        .store
        .add_run_credential(
            &hash_secret(&password),
            &run.id,
            &stack.id,
            &lease_id,
            // A plan-only run reads the state and nothing else (the launcher
            // plans it with -lock=false).
            run.run_type == RunType::Proposed,
            now_ms(),
        )
        .await?;
    let job = StackJob {
        stack_id: stack.id.clone(),
        stack_name: stack.name.clone(),
        phase: if run.state == RunState::Applying {
            JobPhase::Apply
        } else {
            JobPhase::Plan
        },
        git_url: stack.git_url.clone(),
        git_ref: stack.git_ref.clone(),
        archive: stack.archive_sha256.is_some(),
        project_root: stack.project_root.clone(),
        tool: Tool::parse(&stack.tool).unwrap_or_default(),
        tool_version: stack.tool_version.clone(),
        tool_path: stack.tool_path.clone(),
        hooks: stack.hooks.clone(),
        state_address: format!(
            "{}{}/stacks/{}/state",
            crate::api::public_url(state, headers),
            gantry_wire::API_PREFIX,
            stack.id
        ),
        state_username: format!("run-{}", run.id),
        state_password: password,
        secret_env: stack.secret_env.clone(),
        auto_apply: stack.auto_apply,
    };
    Ok(Some((job, stack.env)))
}

fn lease_header(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(gantry_wire::LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid(gantry_wire::LEASE_HEADER, "missing the gantry-lease header")
        })
}

#[utoipa::path(post, path = "/worker/runs/{run}/plan", tag = "worker protocol", request_body = ReportPlan,
    params(("run" = String, Path)),
    responses((status = 204), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn report_plan(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    Json(request): Json<ReportPlan>,
) -> ApiResult<StatusCode> {
    super::run::held_run(&state, &session, &run_id).await?;
    let report = PlanReport {
        commit_sha: request.commit_sha,
        plan: request
            .plan
            .map(|p| serde_json::to_string(&p).expect("plan serialises")),
        outputs: (!request.outputs.is_empty())
            .then(|| serde_json::to_string(&request.outputs).expect("outputs serialise")),
    };
    state
        .store
        .report_plan(&run_id, &request.lease_id, &report, now_ms())
        .await?;
    state.signals.run_changed(&run_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The stack's uploaded directory (`.tar.gz`), for the worker holding the run.
#[utoipa::path(get, path = "/worker/runs/{run}/source", tag = "worker protocol",
    params(("run" = String, Path), ("gantry-lease" = String, Header, description = "The run's lease ID")),
    responses((status = 200, content_type = "application/gzip", description = "The archive"),
              (status = 409, description = "Lease lost", body = gantry_wire::error::ErrorBody)))]
pub async fn download_source(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = super::run::held_run(&state, &session, &run_id).await?;
    if run.lease_id.as_deref() != Some(lease_header(&headers)?) {
        return Err(ApiError::new(
            ErrorCode::LeaseLost,
            "this worker no longer holds the run's lease; abandon it",
        ));
    }
    let stack_id = run.stack_id.ok_or_else(|| {
        ApiError::not_found(format!("the source of run {run_id} (not a stack run)"))
    })?;
    let archive =
        state.store.stack_archive(&stack_id).await?.ok_or_else(|| {
            ApiError::not_found("the stack's uploaded directory (its source is git)")
        })?;
    Ok(([(header::CONTENT_TYPE, "application/gzip")], archive).into_response())
}

/// Stores the run's workspace and plan, sealed to the pool's key.
#[utoipa::path(put, path = "/worker/runs/{run}/workspace", tag = "worker protocol",
    params(("run" = String, Path), ("gantry-lease" = String, Header, description = "The run's lease ID")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn upload_workspace(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    super::run::held_run(&state, &session, &run_id).await?;
    if !body.starts_with(b"GNTRYENV1") {
        return Err(ApiError::invalid(
            "body",
            "the workspace must be sealed to the pool's key (gantry_pki::envelope)",
        ));
    }
    state
        .store
        .put_workspace(&run_id, lease_header(&headers)?, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/worker/runs/{run}/workspace", tag = "worker protocol",
    params(("run" = String, Path), ("gantry-lease" = String, Header, description = "The run's lease ID")),
    responses((status = 200, content_type = "application/octet-stream", description = "The sealed workspace"),
              (status = 409, description = "Lease lost", body = gantry_wire::error::ErrorBody)))]
pub async fn download_workspace(
    State(state): State<AppState>,
    session: WorkerSession,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    super::run::held_run(&state, &session, &run_id).await?;
    let data = state
        .store
        .workspace(&run_id, lease_header(&headers)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("the stored workspace of run {run_id}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
