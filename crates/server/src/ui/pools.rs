//! A pool's page: its workers (drain, undrain), its pending runs, cycle,
//! and reset (which shows the new token once).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use gantry_store::RunPage;
use gantry_wire::pool::ResetPool;
use maud::html;
use serde::Deserialize;

use super::layout::{self, action_button, ago, csrf_field, run_link, shell, worker_state, Nav};
use super::session::{Action, UiSession};
use crate::convert;
use crate::state::{now_ms, AppState};

pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(pool): Path<String>,
) -> Response {
    match render(&state, &session, &pool).await {
        Ok(response) => response,
        Err(error) => layout::api_error(error),
    }
}

async fn render(
    state: &AppState,
    session: &UiSession,
    pool: &str,
) -> crate::error::ApiResult<Response> {
    let pool = crate::api::find_pool(state, pool).await?;
    let now = now_ms();
    let lease = crate::api::lease_ms(state);
    let workers = state.store.list_workers(Some(&pool.id), false).await?;
    let pending = state
        .store
        .page_runs(&RunPage {
            pool_id: Some(pool.id.clone()),
            active_only: true,
            limit: 50,
            ..RunPage::default()
        })
        .await?;
    let body = html! {
        h1 { "Pool " (pool.name) }
        @if !pool.description.is_empty() { p { (pool.description) } }
        dl.facts {
            dt { "ID" } dd { code { (pool.id) } }
            dt { "Key fingerprint" } dd { code { (pool.key.key_fingerprint) } }
            dt { "Generation" } dd { (pool.generation) }
            dt { "Last cycled" } dd { @match pool.cycled_at { Some(at) => (ago(at, now)), None => "never" } }
        }
        section aria-labelledby="workers-h" {
            h2 id="workers-h" { "Workers (" (workers.len()) ")" }
            @if workers.is_empty() {
                p.muted { "No worker is connected. Start " code { "gantry-launcher" } " with this pool's token and private key." }
            } @else {
                div.scroll { table.stack-on-narrow {
                    thead { tr { th scope="col" { "Worker" } th scope="col" { "State" } th scope="col" { "Version" }
                                 th scope="col" { "Tags" } th scope="col" { "Current run" } th scope="col" { "Last seen" }
                                 th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody {
                        @for record in &workers {
                            @let worker = convert::worker(record, now, lease);
                            tr data-worker=(worker.id) {
                                td data-label="Worker" { code { (worker.id) } br; span.muted { (worker.hostname) } }
                                td data-label="State" { (worker_state(worker.state)) }
                                td data-label="Version" { (worker.version) }
                                td data-label="Tags" {
                                    @for (key, value) in &worker.tags { code { (key) "=" (value) } " " }
                                }
                                td data-label="Current run" {
                                    @for run in &worker.running { (run_link(run)) " " }
                                }
                                td data-label="Last seen" { (ago(record.last_seen, now)) }
                                td {
                                    @if worker.drain {
                                        (action_button(state, session, &format!("/workers/{}/undrain", worker.id),
                                            "Undrain", "", false))
                                    } @else {
                                        (action_button(state, session, &format!("/workers/{}/drain", worker.id),
                                            "Drain", "", false))
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section aria-labelledby="pending-h" {
            h2 id="pending-h" { "Runs not yet ended (" (pending.len()) ")" }
            @if pending.is_empty() { p.muted { "None." } } @else { (super::overview::run_table(&pending, now)) }
        }
        section aria-labelledby="cycle-h" {
            h2 id="cycle-h" { "Cycle" }
            p { "Every worker now connected finishes its runs and exits, to be replaced by one with fresh configuration." }
            (action_button(state, session, &format!("/pools/{}/cycle", pool.name), "Cycle the pool's workers", "danger", false))
        }
        section aria-labelledby="reset-h" {
            h2 id="reset-h" { "Reset" }
            p { "A new CSR: the old token, and every worker session made with it, stop working at once. The new token is shown once." }
            form method="post" action={ "/pools/" (pool.name) "/reset" } {
                (csrf_field(state, session))
                label for="csr" { "New CSR (PEM, from " code { "gantry pool keygen" } ")" }
                textarea id="csr" name="csr" required {}
                p { label { input type="checkbox" name="force" value="true"; " Reset even if stacks hold values sealed to the old key (their waiting plans are discarded)" } }
                button.danger type="submit" { "Reset the pool" }
            }
        }
    };
    Ok(shell(
        state,
        Some(session),
        &format!("Pool {}", pool.name),
        Nav::Overview,
        body,
    ))
}

fn back_to(path: String) -> Response {
    Redirect::to(&path).into_response()
}

pub async fn drain(
    State(state): State<AppState>,
    Path(worker): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    set_drain(&state, &worker, true).await
}

pub async fn undrain(
    State(state): State<AppState>,
    Path(worker): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    set_drain(&state, &worker, false).await
}

async fn set_drain(state: &AppState, worker: &str, drain: bool) -> Response {
    match crate::api::set_drain(state, worker, drain).await {
        Ok(record) => back_to(format!("/pools/{}", record.pool_name)),
        Err(error) => layout::api_error(error),
    }
}

pub async fn cycle(
    State(state): State<AppState>,
    Path(pool): Path<String>,
    _action: Action<serde::de::IgnoredAny>,
) -> Response {
    match crate::api::cycle(&state, &pool).await {
        Ok(record) => back_to(format!("/pools/{}", record.name)),
        Err(error) => layout::api_error(error),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csr: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pool): Path<String>,
    action: Action<ResetForm>,
) -> Response {
    let request = ResetPool {
        csr: action.form.csr,
        force: action.form.force.is_some(),
    };
    let reset = match crate::api::reset(&state, &headers, &pool, request).await {
        Ok(reset) => reset,
        Err(error) => return layout::api_error(error),
    };
    let body = html! {
        h1 { "Pool " (reset.name) " reset" }
        p.notice role="alert" { "This is the pool's new token. It is shown once: store it now (as the pool's config file, or in your secret store beside the private key)." }
        code.secret data-token="pool" { (reset.token) }
        @if !reset.runs_discarded.is_empty() {
            p { "Plans discarded (sealed to the old key): " @for run in &reset.runs_discarded { (run_link(run)) " " } }
        }
        @if !reset.stacks_affected.is_empty() {
            p { "Set these stacks' secret variables again: "
                @for stack in &reset.stacks_affected { a href={ "/stacks/" (stack.name) } { (stack.name) } " " } }
        }
        p { a href={ "/pools/" (reset.name) } { "Back to the pool" } }
    };
    shell(
        &state,
        Some(&action.session),
        "Pool reset",
        Nav::Overview,
        body,
    )
}
