//! `/`: the login form without a session; with one, every pool with its
//! workers and pending runs, then recent runs and runs needing attention.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use gantry_store::{RunPage, RunRecord};
use gantry_wire::pool::WorkerState;
use gantry_wire::run::RunState;
use maud::{html, Markup};

use super::layout::{self, ago, run_link, run_state, shell, Nav};
use super::session;
use crate::convert;
use crate::state::{now_ms, AppState};

#[derive(Default)]
struct Counts {
    total: usize,
    busy: usize,
    idle: usize,
    drained: usize,
    lost: usize,
}

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = session::current(&state, &headers).await else {
        return Html(layout::login_page(None).into_string()).into_response();
    };
    match render(&state).await {
        Ok(body) => shell(&state, Some(&session), "Overview", Nav::Overview, body),
        Err(error) => layout::api_error(error),
    }
}

async fn render(state: &AppState) -> crate::error::ApiResult<Markup> {
    let now = now_ms();
    let lease = crate::api::lease_ms(state);
    let pools = state.store.list_pools().await?;
    let mut counts: HashMap<String, Counts> = HashMap::new();
    for worker in state.store.list_workers(None, false).await? {
        let entry = counts.entry(worker.pool_id.clone()).or_default();
        entry.total += 1;
        match convert::worker(&worker, now, lease).state {
            WorkerState::Busy => entry.busy += 1,
            WorkerState::Idle => entry.idle += 1,
            WorkerState::Drained => entry.drained += 1,
            WorkerState::Lost => entry.lost += 1,
            WorkerState::Gone => {}
        }
    }
    let recent = state
        .store
        .page_runs(&RunPage {
            limit: 15,
            ..RunPage::default()
        })
        .await?;
    let mut attention = Vec::new();
    for (run_state, limit) in [
        (RunState::Unconfirmed, 20),
        (RunState::Lost, 20),
        (RunState::Failed, 10),
    ] {
        attention.extend(
            state
                .store
                .page_runs(&RunPage {
                    state: Some(run_state),
                    limit,
                    ..RunPage::default()
                })
                .await?,
        );
    }
    Ok(html! {
        h1 { "Overview" }
        section aria-labelledby="pools-h" {
            h2 id="pools-h" { "Worker pools" }
            @if pools.is_empty() {
                p.muted { "No pools yet: create one with " code { "gantry pool create NAME --csr pool.csr" } "." }
            }
            div.cards {
                @for pool in &pools {
                    @let c = counts.remove(&pool.id).unwrap_or_default();
                    article.card data-pool=(pool.name) {
                        h3 { a href={ "/pools/" (pool.name) } { (pool.name) } }
                        dl.counts {
                            div { dt { "workers" } dd data-count="total" { (c.total) } }
                            div { dt { "busy" } dd data-count="busy" { (c.busy) } }
                            div { dt { "idle" } dd data-count="idle" { (c.idle) } }
                            div { dt { "drained" } dd data-count="drained" { (c.drained) } }
                            @if c.lost > 0 { div { dt { "lost" } dd data-count="lost" { (c.lost) } } }
                            div { dt { "pending runs" } dd data-count="pending" { (pool.queued_runs) } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="attention-h" {
            h2 id="attention-h" { "Needing attention" }
            @if attention.is_empty() {
                p.muted { "Nothing: no run waits for a confirmation, none failed or was lost." }
            } @else {
                (run_table(&attention, now))
            }
        }
        section aria-labelledby="recent-h" {
            h2 id="recent-h" { "Recent runs" }
            @if recent.is_empty() {
                p.muted { "No runs yet." }
            } @else {
                (run_table(&recent, now))
                p { a href="/runs" { "All runs" } }
            }
        }
    })
}

/// The runs table shared by the overview, the runs list and the pool and
/// stack pages.
pub fn run_table(runs: &[RunRecord], now: i64) -> Markup {
    html! {
        div.scroll {
            table.stack-on-narrow {
                thead { tr { th scope="col" { "Run" } th scope="col" { "State" } th scope="col" { "Type" }
                             th scope="col" { "Pool" } th scope="col" { "Stack" } th scope="col" { "Queued" }
                             th scope="col" { "Why" } } }
                tbody {
                    @for run in runs {
                        tr data-run=(run.id) {
                            td data-label="Run" { (run_link(&run.id)) }
                            td data-label="State" { (run_state(run.state)) }
                            td data-label="Type" { (run.run_type.as_str()) }
                            td data-label="Pool" { a href={ "/pools/" (run.pool_name) } { (run.pool_name) } }
                            td data-label="Stack" {
                                @if let Some(stack) = &run.stack_name { a href={ "/stacks/" (stack) } { (stack) } }
                            }
                            td data-label="Queued" { (ago(run.created_at, now)) }
                            td data-label="Why" { @if let Some(reason) = &run.reason { (reason) } }
                        }
                    }
                }
            }
        }
    }
}
