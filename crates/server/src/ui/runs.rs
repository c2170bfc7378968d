//! The runs list (filters, pages) and a run's page: its state and
//! timeline, why it waits, plan, outputs, the tail of its log, and the
//! Confirm, Discard and Stop buttons.

use std::hash::{Hash, Hasher};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use gantry_store::{RunPage, RunRecord, TransitionRecord};
use gantry_wire::run::{RunState, RunType};
use gantry_wire::stack::{PlanSummary, RunOutput};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, action_button, ago, run_state, shell, Nav};
use super::session::{Action, UiSession};
use super::{live, non_empty, waiting};
use crate::error::{ApiError, ApiResult};
use crate::state::{now_ms, AppState};

const PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pool: Option<String>,
    stack: Option<String>,
    state: Option<String>,
    #[serde(rename = "type")]
    run_type: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    session: UiSession,
    Query(query): Query<ListQuery>,
) -> Response {
    match render_list(&state, &query).await {
        Ok(body) => shell(&state, Some(&session), "Runs", Nav::Runs, body),
        Err(error) => layout::api_error(error),
    }
}

async fn render_list(state: &AppState, query: &ListQuery) -> ApiResult<Markup> {
    let pools = state.store.list_pools().await?;
    let stacks = state.store.list_stacks().await?;
    let pool_id = match non_empty(&query.pool) {
        Some(name) => Some(crate::api::find_pool(state, name).await?.id),
        None => None,
    };
    let stack_id = match non_empty(&query.stack) {
        Some(name) => Some(crate::api::find_stack(state, name).await?.id),
        None => None,
    };
    let run_state = match non_empty(&query.state) {
        Some(s) => Some(
            RunState::parse(s)
                .ok_or_else(|| ApiError::invalid("state", format!("{s:?} is not a run state")))?,
        ),
        None => None,
    };
    let run_type = match non_empty(&query.run_type) {
        Some(t) => Some(
            RunType::parse(t)
                .ok_or_else(|| ApiError::invalid("type", format!("{t:?} is not a run type")))?,
        ),
        None => None,
    };
    let runs = state
        .store
        .page_runs(&RunPage {
            pool_id,
            stack_id,
            state: run_state,
            run_type,
            active_only: false,
            before: non_empty(&query.before).map(str::to_string),
            limit: PAGE_SIZE,
        })
        .await?;
    let selected = |value: &Option<String>, option: &str| non_empty(value) == Some(option);
    // The next page keeps the filters and moves the cursor.
    let next = (runs.len() as u32 == PAGE_SIZE).then(|| {
        let mut params = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("pool", &query.pool),
            ("stack", &query.stack),
            ("state", &query.state),
            ("type", &query.run_type),
        ] {
            if let Some(value) = non_empty(value) {
                params.append_pair(key, value);
            }
        }
        params.append_pair("before", &runs.last().expect("a full page").id);
        format!("/runs?{}", params.finish())
    });
    Ok(html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "Pool" select name="pool" {
                option value="" { "any" }
                @for pool in &pools { option value=(pool.name) selected[selected(&query.pool, &pool.name)] { (pool.name) } }
            } }
            label { "Stack" select name="stack" {
                option value="" { "any" }
                @for stack in &stacks { option value=(stack.name) selected[selected(&query.stack, &stack.name)] { (stack.name) } }
            } }
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in RunState::ALL { option value=(s.as_str()) selected[selected(&query.state, s.as_str())] { (s.as_str()) } }
            } }
            label { "Type" select name="type" {
                option value="" { "any" }
                @for t in [RunType::Task, RunType::Proposed, RunType::Tracked, RunType::Destroy] {
                    option value=(t.as_str()) selected[selected(&query.run_type, t.as_str())] { (t.as_str()) }
                }
            } }
            button type="submit" { "Filter" }
        }
        @if runs.is_empty() {
            p.muted { "No runs match." }
        } @else {
            (super::overview::run_table(&runs, now_ms()))
        }
        nav.pager aria-label="Pages" {
            @if non_empty(&query.before).is_some() { a href="/runs" { "Newest" } }
            @if let Some(next) = next { a href=(next) rel="next" { "Older runs" } }
        }
    })
}

pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(run): Path<String>,
) -> Response {
    match render_page(&state, &session, &run).await {
        Ok(response) => response,
        Err(error) => layout::api_error(error),
    }
}

async fn render_page(state: &AppState, session: &UiSession, run_id: &str) -> ApiResult<Response> {
    let run = state
        .store
        .find_run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id:?}")))?;
    let (version, section) = live_section(state, session, &run).await?;
    let tail = live::log_window(state, &run.id, None).await?;
    let events = format!("/runs/{}/events?from={}", run.id, tail.next);
    let body = html! {
        h1 { "Run " code { (run.id) } }
        p id="live-status" role="status" aria-live="polite" {}
        section id="run-live" data-version=(version) tabindex="-1" aria-label="Run state" { (section) }
        section aria-labelledby="log-h" {
            h2 id="log-h" { "Log" }
            @if let Some(older) = &tail.older {
                p { a id="log-older" href={ "/runs/" (run.id) "/log?before=" (older) } { "Load older lines" } }
            }
            pre id="log" tabindex="0" aria-label="Run log" data-events=(events) data-next=(tail.next) {
                (maud::PreEscaped(tail.html))
            }
        }
    };
    Ok(shell(
        state,
        Some(session),
        &format!("Run {}", run.id),
        Nav::Runs,
        body,
    ))
}

/// The part of the run page that follows the run: re-rendered and sent
/// over the event stream whenever it changes. Returns (version, markup).
pub async fn live_section(
    state: &AppState,
    session: &UiSession,
    run: &RunRecord,
) -> ApiResult<(String, Markup)> {
    let transitions = state.store.run_transitions(&run.id).await?;
    let why = waiting::why(state, run).await?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        run.state.as_str(),
        run.updated_at,
        run.stop_requested,
        &why,
        transitions.len(),
    )
        .hash(&mut hasher);
    let version = format!("{:x}", hasher.finish());
    Ok((
        version,
        render_live(state, session, run, &transitions, why.as_deref()),
    ))
}

fn render_live(
    state: &AppState,
    session: &UiSession,
    run: &RunRecord,
    transitions: &[TransitionRecord],
    why: Option<&str>,
) -> Markup {
    let now = now_ms();
    let plan: Option<PlanSummary> = run
        .plan
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok());
    let outputs: Vec<RunOutput> = run
        .outputs
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    let button = |verb: &str, label: &str, class: &str| {
        action_button(
            state,
            session,
            &format!("/runs/{}/{verb}", run.id),
            label,
            class,
            true,
        )
    };
    html! {
        p { "State " strong data-state=(run.state.as_str()) { (run_state(run.state)) }
            @if run.stop_requested && !run.state.is_terminal() { " " span.muted { "(stop requested)" } } }
        @if let Some(why) = why { p.waiting-why data-why="" { "Why it waits: " (why) } }
        @if run.state == RunState::Unconfirmed || !run.state.is_terminal() {
            div.actions {
                @if run.state == RunState::Unconfirmed {
                    (button("confirm", "Confirm", "primary"))
                    (button("discard", "Discard", "danger"))
                }
                // An UNCONFIRMED run holds no worker: Discard ends it.
                @if !run.state.is_terminal() && run.state != RunState::Unconfirmed && !run.stop_requested {
                    (button("stop", "Stop", "danger"))
                }
            }
        }
        dl.facts {
            dt { "Type" } dd { (run.run_type.as_str()) }
            dt { "Pool" } dd { a href={ "/pools/" (run.pool_name) } { (run.pool_name) } }
            @if let Some(stack) = &run.stack_name { dt { "Stack" } dd { a href={ "/stacks/" (stack) } { (stack) } } }
            @if !run.command.is_empty() { dt { "Command" } dd { code { (run.command.join(" ")) } } }
            @if let Some(worker) = &run.worker_id { dt { "Worker" } dd { code { (worker) } } }
            @if let Some(sha) = &run.commit_sha { dt { "Commit" } dd { code { (sha) } } }
            @if let Some(code) = run.exit_code { dt { "Exit code" } dd { (code) } }
            @if let Some(reason) = &run.reason { dt { "Reason" } dd { (reason) } }
            dt { "Queued" } dd { (ago(run.created_at, now)) }
        }
        @if let Some(plan) = plan {
            h2 { "Plan" }
            p data-plan="" { strong { (plan.to_string()) } }
            @if !plan.resources.is_empty() {
                ul.changes {
                    @for change in &plan.resources {
                        li { code { (change.address) } " " span.muted { (change.action) } }
                    }
                }
            }
        }
        @if !outputs.is_empty() {
            h2 { "Outputs" }
            div.scroll { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                tbody { @for output in &outputs {
                    tr { td { code { (output.name) } }
                         td { @if output.sensitive { span.muted { "(sensitive)" } } @else { code { (output.value.to_string()) } } } }
                } }
            } }
        }
        h2 { "Timeline" }
        ol.timeline {
            @for t in transitions {
                li { (run_state(t.state)) " " (ago(t.at, now))
                     @if let Some(reason) = &t.reason { " — " (reason) } }
            }
        }
    }
}

/// Back to the run page. ui.js sends these forms without leaving the page
/// and only reads an error; without it, the browser follows the redirect.
fn act(run: &str, result: ApiResult<RunRecord>) -> Response {
    match result {
        Ok(_) => Redirect::to(&format!("/runs/{run}")).into_response(),
        Err(error) => layout::api_error(error),
    }
}

pub async fn confirm(
    State(state): State<AppState>,
    Path(run): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    act(&run, crate::api::confirm(&state, &run).await)
}

pub async fn discard(
    State(state): State<AppState>,
    Path(run): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    act(&run, crate::api::discard(&state, &run).await)
}

pub async fn stop(
    State(state): State<AppState>,
    Path(run): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    act(&run, crate::api::stop(&state, &run).await)
}
