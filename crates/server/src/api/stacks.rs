//! Stacks: create, list, show, update, delete, and the runs triggered on
//! them (trigger, confirm, discard). Secret variables are sealed to the
//! pool's public key on the way in and never come back out.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use gantry_pki::PoolPublicKey;
use gantry_store::{PoolRecord, RunRecord, StackRecord};
use gantry_wire::run::{Run, RunType};
use gantry_wire::stack::{
    normalize_tool_version, CreateStack, Stack, Tool, TriggerRun, UpdateStack, HOOKS,
};
use sha2::{Digest, Sha256};

use crate::auth::User;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::{now_ms, AppState};

/// An uploaded directory may be at most this big (compressed).
pub const MAX_ARCHIVE_BYTES: usize = 32 * 1024 * 1024;

fn validate_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ApiError::invalid(
            "name",
            format!("stack name {name:?} is not valid: use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit"),
        ));
    }
    Ok(())
}

fn validate_env(field: &str, env: &BTreeMap<String, String>) -> ApiResult<()> {
    if let Some(bad) = env.keys().find(|k| !super::runs::valid_env_name(k)) {
        return Err(ApiError::invalid(
            field,
            format!("{bad:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit"),
        ));
    }
    Ok(())
}

fn validate_hooks(hooks: &BTreeMap<String, Vec<String>>) -> ApiResult<()> {
    if let Some(bad) = hooks.keys().find(|k| !HOOKS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            "hooks",
            format!("{bad:?} is not a hook; use one of {}", HOOKS.join(", ")),
        ));
    }
    Ok(())
}

/// A pinned tool version, normalised; an empty one is no pin.
fn validate_tool_version(version: Option<&str>) -> ApiResult<Option<String>> {
    match version.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => normalize_tool_version(text).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "tool_version",
                format!("{text:?} is not a tool version; give the exact version, e.g. 1.0.3"),
            )
        }),
    }
}

fn validate_project_root(root: &str) -> ApiResult<String> {
    let root = root.trim().trim_matches('/').to_string();
    if root.split('/').any(|part| part == "..") {
        return Err(ApiError::invalid(
            "project_root",
            format!(
                "project root {root:?} leaves the source; give a path inside it, e.g. envs/prod"
            ),
        ));
    }
    Ok(root)
}

fn decode_archive(archive: &str) -> ApiResult<(Vec<u8>, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(archive.trim())
        .map_err(|e| ApiError::invalid("archive", format!("the archive is not base64: {e}")))?;
    if bytes.len() > MAX_ARCHIVE_BYTES {
        return Err(ApiError::invalid(
            "archive",
            format!(
                "the uploaded directory is {} bytes compressed; the limit is {MAX_ARCHIVE_BYTES}: leave out .terraform/ and large files",
                bytes.len()
            ),
        ));
    }
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Err(ApiError::invalid(
            "archive",
            "the archive is not a .tar.gz (gzip magic missing)",
        ));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, sha))
}

/// Seals each secret value to the pool's public key.
fn seal_secrets(
    pool: &PoolRecord,
    secrets: &BTreeMap<String, String>,
) -> ApiResult<BTreeMap<String, String>> {
    let key = PoolPublicKey::from_public_key_pem(&pool.key.public_key_pem).map_err(|e| {
        ApiError::new(
            gantry_wire::error::ErrorCode::Internal,
            format!("the pool's stored key is unreadable: {e}"),
        )
    })?;
    secrets
        .iter()
        .map(|(name, value)| {
            let sealed = gantry_pki::envelope::seal(&key, value.as_bytes()).map_err(|e| {
                ApiError::new(gantry_wire::error::ErrorCode::Internal, e.to_string())
            })?;
            Ok((
                name.clone(),
                base64::engine::general_purpose::STANDARD.encode(sealed),
            ))
        })
        .collect()
}

pub(crate) async fn find_stack(state: &AppState, stack: &str) -> ApiResult<StackRecord> {
    state
        .store
        .find_stack(stack)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {stack:?}")).with_field("stack"))
}

#[utoipa::path(post, path = "/stacks", tag = "stacks", request_body = CreateStack,
    responses((status = 201, body = Stack), (status = 400, body = gantry_wire::error::ErrorBody),
              (status = 404, description = "No such pool", body = gantry_wire::error::ErrorBody),
              (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn create_stack(
    _user: User,
    State(state): State<AppState>,
    Json(request): Json<CreateStack>,
) -> ApiResult<(StatusCode, Json<Stack>)> {
    validate_name(&request.name)?;
    validate_env("env", &request.env)?;
    validate_env("secret_env", &request.secret_env)?;
    validate_hooks(&request.hooks)?;
    let tool_version = validate_tool_version(request.tool_version.as_deref())?;
    let pool = super::pools::find_pool(&state, &request.pool)
        .await
        .map_err(|e| e.with_field("pool"))?;
    let git_url = request.git_url.filter(|u| !u.trim().is_empty());
    let (archive, archive_sha256) = match (&git_url, &request.archive) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "source",
                "give either a git URL or an uploaded directory, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "source",
                "the stack has no source: give --source with a git URL or a local directory",
            ))
        }
        (None, Some(archive)) => {
            let (bytes, sha) = decode_archive(archive)?;
            (Some(bytes), Some(sha))
        }
        (Some(_), None) => (None, None),
    };
    let record = StackRecord {
        name: request.name.clone(),
        pool_id: pool.id.clone(),
        git_ref: git_url
            .as_ref()
            .map(|_| request.git_ref.clone().unwrap_or_else(|| "HEAD".into())),
        git_url,
        archive_sha256,
        project_root: validate_project_root(&request.project_root)?,
        image: request.image.filter(|i| !i.trim().is_empty()),
        tool: request.tool.as_str().to_string(),
        tool_version,
        tool_path: request.tool_path.filter(|p| !p.trim().is_empty()),
        labels: request.labels,
        env: request.env,
        secret_env: seal_secrets(&pool, &request.secret_env)?,
        hooks: request
            .hooks
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        auto_apply: request.auto_apply,
        ..StackRecord::default()
    };
    let created = state
        .store
        .create_stack(&record, archive.as_deref(), now_ms())
        .await?;
    tracing::info!(stack_id = %created.id, name = %created.name, "stack created");
    Ok((StatusCode::CREATED, Json(convert::stack(&created))))
}

#[utoipa::path(get, path = "/stacks", tag = "stacks", responses((status = 200, body = Vec<Stack>)))]
pub async fn list_stacks(
    _user: User,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<Stack>>> {
    let stacks = state.store.list_stacks().await?;
    Ok(Json(stacks.iter().map(convert::stack).collect()))
}

#[utoipa::path(get, path = "/stacks/{stack}", tag = "stacks", params(("stack" = String, Path)),
    responses((status = 200, body = Stack), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn show_stack(
    _user: User,
    State(state): State<AppState>,
    Path(stack): Path<String>,
) -> ApiResult<Json<Stack>> {
    Ok(Json(convert::stack(&find_stack(&state, &stack).await?)))
}

#[utoipa::path(patch, path = "/stacks/{stack}", tag = "stacks", params(("stack" = String, Path)),
    request_body = UpdateStack,
    responses((status = 200, body = Stack), (status = 400, body = gantry_wire::error::ErrorBody)))]
pub async fn update_stack(
    _user: User,
    State(state): State<AppState>,
    Path(stack): Path<String>,
    Json(request): Json<UpdateStack>,
) -> ApiResult<Json<Stack>> {
    let mut record = find_stack(&state, &stack).await?;
    validate_env("env", &request.env)?;
    validate_env("secret_env", &request.secret_env)?;
    validate_hooks(&request.hooks)?;
    if let Some(pool) = &request.pool {
        let pool = super::pools::find_pool(&state, pool)
            .await
            .map_err(|e| e.with_field("pool"))?;
        if pool.id != record.pool_id {
            // Secrets are sealed to the old pool's key: the new pool's
            // workers could not read them.
            let missing: Vec<&String> = record
                .secret_env
                .keys()
                .filter(|k| !request.secret_env.contains_key(*k) && !request.unset_env.contains(k))
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::invalid(
                    "secret_env",
                    format!(
                        "moving the stack to pool {} needs its secret variables again (they are encrypted to the old pool's key): pass --secret-env for {}",
                        pool.name,
                        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            record.pool_id = pool.id.clone();
            record.secret_env.clear();
        }
    }
    let pool = super::pools::find_pool(&state, &record.pool_id).await?;
    let mut archive = None;
    if let Some(url) = request.git_url.filter(|u| !u.trim().is_empty()) {
        record.git_url = Some(url);
        record.archive_sha256 = None;
        record.git_ref.get_or_insert_with(|| "HEAD".into());
    }
    if let Some(git_ref) = request.git_ref {
        if record.git_url.is_none() {
            return Err(ApiError::invalid(
                "git_ref",
                "the stack's source is an uploaded directory; a ref needs a git URL (--source URL)",
            ));
        }
        record.git_ref = Some(git_ref);
    }
    if let Some(data) = &request.archive {
        let (bytes, sha) = decode_archive(data)?;
        record.git_url = None;
        record.git_ref = None;
        record.archive_sha256 = Some(sha);
        archive = Some(bytes);
    }
    if let Some(root) = &request.project_root {
        record.project_root = validate_project_root(root)?;
    }
    if let Some(image) = request.image {
        record.image = Some(image).filter(|i| !i.trim().is_empty());
    }
    if let Some(tool) = request.tool {
        record.tool = tool.as_str().to_string();
    }
    if let Some(version) = &request.tool_version {
        record.tool_version = validate_tool_version(Some(version))?;
    }
    if let Some(path) = request.tool_path {
        record.tool_path = Some(path).filter(|p| !p.trim().is_empty());
    }
    if let Some(labels) = request.labels {
        record.labels = labels;
    }
    if let Some(auto_apply) = request.auto_apply {
        record.auto_apply = auto_apply;
    }
    for name in &request.unset_env {
        record.env.remove(name);
        record.secret_env.remove(name);
    }
    for (name, value) in request.env {
        record.secret_env.remove(&name);
        record.env.insert(name, value);
    }
    for (name, sealed) in seal_secrets(&pool, &request.secret_env)? {
        record.env.remove(&name);
        record.secret_env.insert(name, sealed);
    }
    for (hook, commands) in request.hooks {
        if commands.is_empty() {
            record.hooks.remove(&hook);
        } else {
            record.hooks.insert(hook, commands);
        }
    }
    let updated = state
        .store
        .update_stack(&record, archive.as_deref(), now_ms())
        .await?;
    Ok(Json(convert::stack(&updated)))
}

#[utoipa::path(delete, path = "/stacks/{stack}", tag = "stacks", params(("stack" = String, Path)),
    responses((status = 204), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn delete_stack(
    _user: User,
    State(state): State<AppState>,
    Path(stack): Path<String>,
) -> ApiResult<StatusCode> {
    let record = find_stack(&state, &stack).await?;
    state.store.delete_stack(&record.id).await?;
    tracing::info!(stack_id = %record.id, "stack deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a run on the stack. Runs on one stack run one at a time, in order.
#[utoipa::path(post, path = "/stacks/{stack}/runs", tag = "stacks", params(("stack" = String, Path)),
    request_body = TriggerRun,
    responses((status = 201, body = Run), (status = 404, body = gantry_wire::error::ErrorBody)))]
pub async fn trigger_run(
    _user: User,
    State(state): State<AppState>,
    Path(stack): Path<String>,
    Json(request): Json<TriggerRun>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let run = trigger(&state, &stack, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(super::runs::load_run(&state, &run.id).await?),
    ))
}

/// Queues a run on a stack (the API's and the web UI's).
pub(crate) async fn trigger(
    state: &AppState,
    stack: &str,
    request: TriggerRun,
) -> ApiResult<RunRecord> {
    let record = find_stack(state, stack).await?;
    if request.run_type == RunType::Task
        && (request.command.is_empty() || request.command[0].trim().is_empty())
    {
        return Err(ApiError::invalid(
            "command",
            "a task run needs a command: gantry run trigger STACK --type task -- CMD [ARGS…]",
        ));
    }
    if Tool::parse(&record.tool).is_none() {
        return Err(ApiError::invalid(
            "tool",
            format!("unknown tool {:?}", record.tool),
        ));
    }
    let run = state
        .store
        .insert_stack_run(&record, request.run_type, &request.command, now_ms())
        .await?;
    state.signals.run_ready(&record.pool_id);
    tracing::info!(run_id = %run.id, stack = %record.name, run_type = request.run_type.as_str(), state = %run.state, "stack run queued");
    Ok(run)
}

/// Applies a tracked or destroy run's saved plan: UNCONFIRMED → CONFIRMED,
/// then a worker of the pool applies exactly that plan.
#[utoipa::path(post, path = "/runs/{run}/confirm", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = Run), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn confirm_run(
    _user: User,
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Run>> {
    let record = confirm(&state, &run).await?;
    Ok(Json(super::runs::load_run(&state, &record.id).await?))
}

/// UNCONFIRMED → CONFIRMED (the API's and the web UI's).
pub(crate) async fn confirm(state: &AppState, run: &str) -> ApiResult<RunRecord> {
    let record = state.store.confirm_run(run, now_ms()).await?;
    state.signals.run_ready(&record.pool_id);
    state.signals.run_changed(&record.id);
    Ok(record)
}

/// Drops a tracked or destroy run's plan: UNCONFIRMED → DISCARDED; the state is untouched.
#[utoipa::path(post, path = "/runs/{run}/discard", tag = "runs", params(("run" = String, Path)),
    responses((status = 200, body = Run), (status = 409, body = gantry_wire::error::ErrorBody)))]
pub async fn discard_run(
    _user: User,
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Run>> {
    let record = discard(&state, &run).await?;
    Ok(Json(super::runs::load_run(&state, &record.id).await?))
}

/// UNCONFIRMED → DISCARDED (the API's and the web UI's).
pub(crate) async fn discard(state: &AppState, run: &str) -> ApiResult<RunRecord> {
    let record = state.store.discard_run(run, now_ms()).await?;
    crate::metrics::run_ended(state, &record);
    state.signals.run_ended(&record.id);
    state.signals.run_ready(&record.pool_id);
    Ok(record)
}
