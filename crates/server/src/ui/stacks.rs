//! Stacks: the list, a stack's page (its settings, runs, trigger, state
//! lock and unlock, state versions), a version's download, and the diff
//! between two versions.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use gantry_store::RunPage;
use gantry_wire::run::RunType;
use gantry_wire::stack::TriggerRun;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, ago, csrf_field, shell, Nav};
use super::session::{Action, UiSession};
use crate::error::{ApiError, ApiResult};
use crate::state::{now_ms, AppState};

pub async fn list(State(state): State<AppState>, session: UiSession) -> Response {
    let stacks = match state.store.list_stacks().await {
        Ok(stacks) => stacks,
        Err(error) => return layout::api_error(error.into()),
    };
    let body = html! {
        h1 { "Stacks" }
        @if stacks.is_empty() {
            p.muted { "No stacks yet: create one with " code { "gantry stack create NAME --pool POOL --source DIR" } "." }
        } @else {
            div.scroll { table.stack-on-narrow {
                thead { tr { th scope="col" { "Stack" } th scope="col" { "Pool" } th scope="col" { "Source" }
                             th scope="col" { "Tool" } th scope="col" { "State serial" } } }
                tbody { @for stack in &stacks {
                    @let shown = crate::convert::stack(stack);
                    tr {
                        td data-label="Stack" { a href={ "/stacks/" (stack.name) } { (stack.name) } }
                        td data-label="Pool" { a href={ "/pools/" (stack.pool_name) } { (stack.pool_name) } }
                        td data-label="Source" { (source(&shown)) }
                        td data-label="Tool" { (shown.tool.as_str()) @if let Some(v) = &shown.tool_version { " " (v) } }
                        td data-label="State serial" { @match stack.state_serial { Some(s) => (s), None => "none" } }
                    }
                } }
            } }
        }
    };
    shell(&state, Some(&session), "Stacks", Nav::Stacks, body)
}

fn source(stack: &gantry_wire::stack::Stack) -> Markup {
    html! {
        @match &stack.git_url {
            Some(url) => { code { (url) } @if let Some(r) = &stack.git_ref { " @ " code { (r) } } }
            None => "uploaded directory",
        }
        @if !stack.project_root.is_empty() { " / " code { (stack.project_root) } }
    }
}

pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(stack): Path<String>,
) -> Response {
    match render(&state, &session, &stack).await {
        Ok(body) => body,
        Err(error) => layout::api_error(error),
    }
}

async fn render(state: &AppState, session: &UiSession, name: &str) -> ApiResult<Response> {
    let record = crate::api::find_stack(state, name).await?;
    let stack = crate::convert::stack(&record);
    let now = now_ms();
    let runs = state
        .store
        .page_runs(&RunPage {
            stack_id: Some(record.id.clone()),
            limit: 20,
            ..RunPage::default()
        })
        .await?;
    let lock = state.store.state_lock(&record.id).await?;
    let lost = state.store.lost_run(&record.id).await?;
    let versions = state.store.state_versions(&record.id).await?;
    let base = format!("/stacks/{}", record.name);
    let body = html! {
        h1 { "Stack " (record.name) }
        dl.facts {
            dt { "Pool" } dd { a href={ "/pools/" (record.pool_name) } { (record.pool_name) } }
            dt { "Source" } dd { (source(&stack)) }
            dt { "Tool" } dd { (stack.tool.as_str()) @if let Some(v) = &stack.tool_version { " " (v) } }
            @if let Some(image) = &stack.image { dt { "Image" } dd { code { (image) } } }
            dt { "Auto-apply" } dd { @if stack.auto_apply { "yes" } @else { "no: tracked runs wait for a confirmation" } }
            @if !stack.labels.is_empty() { dt { "Labels" } dd { (stack.labels.join(", ")) } }
            @if !stack.env.is_empty() { dt { "Variables" } dd { @for (k, v) in &stack.env { code { (k) "=" (v) } " " } } }
            @if !stack.secret_env.is_empty() { dt { "Secret variables" } dd { @for k in &stack.secret_env { code { (k) } " " } } }
        }
        section aria-labelledby="trigger-h" {
            h2 id="trigger-h" { "Trigger a run" }
            div.actions {
                @for (run_type, label, class) in [(RunType::Proposed, "Plan (proposed)", ""),
                                                  (RunType::Tracked, "Plan and apply (tracked)", "primary"),
                                                  (RunType::Destroy, "Destroy", "danger")] {
                    form.inline method="post" action={ (base) "/runs" } {
                        (csrf_field(state, session))
                        input type="hidden" name="type" value=(run_type.as_str());
                        button type="submit" class=(class) { (label) }
                    }
                }
            }
        }
        section aria-labelledby="runs-h" {
            h2 id="runs-h" { "Runs" }
            @if runs.is_empty() { p.muted { "None yet." } } @else {
                (super::overview::run_table(&runs, now))
                p { a href={ "/runs?stack=" (record.name) } { "All runs of this stack" } }
            }
        }
        section aria-labelledby="lock-h" {
            h2 id="lock-h" { "State lock" }
            @match &lock {
                None => p data-lock="free" { "Not locked." },
                Some(info) => {
                    p data-lock="held" { "Locked: " }
                    pre.diff { (pretty(info.as_bytes())) }
                    @if let Some(lost) = &lost {
                        p.notice { "Held by run " (layout::run_link(&lost.id)) ", LOST: its worker was lost during the apply, which may have changed resources. Unlocking gives up on it (it ends FAILED); check the resources against the state first." }
                    }
                    form method="post" action={ (base) "/unlock" } {
                        (csrf_field(state, session))
                        @if lost.is_some() { input type="hidden" name="end_lost_run" value="true"; }
                        button.danger type="submit" { "Force unlock" }
                    }
                }
            }
        }
        section aria-labelledby="versions-h" {
            h2 id="versions-h" { "State versions" }
            @if versions.is_empty() { p.muted { "No state yet." } } @else {
                @if versions.len() > 1 {
                    form.filters method="get" action={ (base) "/diff" } {
                        label { "From" select name="from" { @for (i, v) in versions.iter().enumerate() {
                            option value=(v.version) selected[i == 1] { "version " (v.version) } } } }
                        label { "To" select name="to" { @for (i, v) in versions.iter().enumerate() {
                            option value=(v.version) selected[i == 0] { "version " (v.version) } } } }
                        button type="submit" { "Compare" }
                    }
                }
                div.scroll { table.stack-on-narrow {
                    thead { tr { th scope="col" { "Version" } th scope="col" { "Serial" } th scope="col" { "Resources" }
                                 th scope="col" { "Run" } th scope="col" { "Saved" } th scope="col" { "File" } } }
                    tbody { @for v in &versions {
                        tr {
                            td data-label="Version" { (v.version) }
                            td data-label="Serial" { (v.serial) }
                            td data-label="Resources" { (v.resources) }
                            td data-label="Run" { @if let Some(run) = &v.run_id { (layout::run_link(run)) } }
                            td data-label="Saved" { (ago(v.created_at, now)) }
                            td data-label="File" { a href={ (base) "/state/" (v.version) } download { "Download" } }
                        }
                    } }
                } }
            }
        }
    };
    Ok(shell(
        state,
        Some(session),
        &format!("Stack {}", record.name),
        Nav::Stacks,
        body,
    ))
}

fn pretty(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).to_string())
}

#[derive(Deserialize)]
pub struct TriggerForm {
    #[serde(rename = "type")]
    run_type: String,
}

pub async fn trigger(
    State(state): State<AppState>,
    Path(stack): Path<String>,
    action: Action<TriggerForm>,
) -> Response {
    let Some(run_type) = RunType::parse(&action.form.run_type).filter(|t| *t != RunType::Task)
    else {
        return layout::api_error(ApiError::invalid(
            "type",
            "trigger a proposed, tracked or destroy run",
        ));
    };
    let request = TriggerRun {
        run_type,
        command: Vec::new(),
    };
    match crate::api::trigger(&state, &stack, request).await {
        Ok(run) => Redirect::to(&format!("/runs/{}", run.id)).into_response(),
        Err(error) => layout::api_error(error),
    }
}

#[derive(Deserialize)]
pub struct UnlockForm {
    #[serde(default)]
    end_lost_run: Option<String>,
}

pub async fn unlock(
    State(state): State<AppState>,
    Path(stack): Path<String>,
    action: Action<UnlockForm>,
) -> Response {
    let result = async {
        let record = crate::api::find_stack(&state, &stack).await?;
        crate::api::force_unlock(&state, &record, action.form.end_lost_run.is_some()).await?;
        Ok::<_, ApiError>(record)
    }
    .await;
    match result {
        Ok(record) => Redirect::to(&format!("/stacks/{}", record.name)).into_response(),
        Err(error) => layout::api_error(error),
    }
}

async fn version_bytes(
    state: &AppState,
    stack: &str,
    version: i64,
) -> ApiResult<(String, Vec<u8>)> {
    let record = crate::api::find_stack(state, stack).await?;
    let (_, data) = state
        .store
        .state_version(&record.id, version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("state version {version} of stack {}", record.name))
        })?;
    Ok((record.name, data))
}

pub async fn download(
    State(state): State<AppState>,
    _session: UiSession,
    Path((stack, version)): Path<(String, i64)>,
) -> Response {
    match version_bytes(&state, &stack, version).await {
        Ok((name, data)) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}-v{version}.tfstate\""),
                ),
            ],
            data,
        )
            .into_response(),
        Err(error) => layout::api_error(error),
    }
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
}

/// A line diff of the two versions' JSON, pretty-printed so that it is
/// line-oriented whatever wrote it.
pub async fn diff(
    State(state): State<AppState>,
    session: UiSession,
    Path(stack): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Response {
    let result = async {
        let (name, from) = version_bytes(&state, &stack, query.from).await?;
        let (_, to) = version_bytes(&state, &stack, query.to).await?;
        Ok::<_, ApiError>((name, pretty(&from), pretty(&to)))
    }
    .await;
    let (name, from, to) = match result {
        Ok(texts) => texts,
        Err(error) => return layout::api_error(error),
    };
    let diff = similar::TextDiff::from_lines(&from, &to);
    let body = html! {
        h1 { "Stack " (name) ": version " (query.from) " → " (query.to) }
        p { a href={ "/stacks/" (name) } { "Back to the stack" } }
        @if from == to { p { "The two versions are identical." } }
        pre.diff aria-label="Differences" {
            @for group in diff.grouped_ops(3) {
                "⋯\n"
                @for op in &group {
                    @for change in diff.iter_changes(op) {
                        @match change.tag() {
                            similar::ChangeTag::Delete => span.del { "- " (change.value()) },
                            similar::ChangeTag::Insert => span.add { "+ " (change.value()) },
                            similar::ChangeTag::Equal => span { "  " (change.value()) },
                        }
                    }
                }
            }
        }
    };
    shell(&state, Some(&session), "State diff", Nav::Stacks, body)
}
