//! A run page's live parts: the tail of the log (never the whole of it),
//! older lines on request, and the event stream that follows the run.
//!
//! The stream wakes on the run's signal (a new chunk, a state change) and
//! also every [`POLL`]: signals are in-process, and on a store shared by
//! several replicas the change may have landed on another one.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use maud::html;
use serde::Deserialize;

use super::ansi::AnsiRenderer;
use super::layout::{self, shell, Nav};
use super::session::{self, UiSession};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How much log a page opens with, and each "older" step adds.
pub const WINDOW_BYTES: usize = 128 * 1024;
/// How much new log one event carries at most.
const EVENT_BYTES: usize = 256 * 1024;
/// The longest a stream sleeps without looking at the store.
const POLL: Duration = Duration::from_secs(2);
/// A stream ends after this; the browser reconnects where it left off.
const STREAM_LIFE: Duration = Duration::from_secs(10 * 60);

/// A window of the log: its HTML, where the part before it starts (if
/// anything is before it), and the chunk after it.
pub struct LogWindow {
    pub html: String,
    /// A cursor for `?before=`: `SEQ` or `SEQ.OFFSET`.
    pub older: Option<String>,
    pub next: u64,
}

fn parse_cursor(text: &str) -> Option<(u64, usize)> {
    match text.split_once('.') {
        Some((seq, offset)) => Some((seq.parse().ok()?, offset.parse().ok()?)),
        None => Some((text.parse().ok()?, 0)),
    }
}

/// The last [`WINDOW_BYTES`] or so of the log before `before` (the end when
/// `None`), cut at a line start.
pub async fn log_window(
    state: &AppState,
    run_id: &str,
    before: Option<(u64, usize)>,
) -> ApiResult<LogWindow> {
    let upto = match before {
        None => None,
        Some((0, 0)) => {
            return Ok(LogWindow {
                html: String::new(),
                older: None,
                next: 0,
            })
        }
        Some((seq, 0)) => Some(seq - 1),
        Some((seq, _)) => Some(seq),
    };
    let mut chunks = state
        .store
        .read_log_tail(run_id, upto, WINDOW_BYTES)
        .await?;
    let next = chunks.last().map_or(0, |c| c.seq + 1);
    if let (Some((seq, offset)), Some(last)) = (before, chunks.last_mut()) {
        if offset > 0 && last.seq == seq {
            last.data.truncate(offset);
        }
    }
    let total: usize = chunks.iter().map(|c| c.data.len()).sum();
    // Cut the first chunk so that the window stays near its size, at the
    // start of a line where there is one.
    let mut start = (0usize, 0usize);
    if let Some(first) = chunks.first() {
        if total > WINDOW_BYTES {
            let excess = (total - WINDOW_BYTES).min(first.data.len());
            let cut = first.data[excess..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(excess, |p| excess + p + 1);
            start = (0, cut);
        }
    }
    let mut renderer = AnsiRenderer::default();
    let mut html = String::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let from = if index == start.0 { start.1 } else { 0 };
        html.push_str(&renderer.push(&chunk.data[from.min(chunk.data.len())..]));
    }
    let older = chunks.first().and_then(|first| {
        let offset = if start.1 > 0 { start.1 } else { 0 };
        (first.seq > 0 || offset > 0).then(|| match offset {
            0 => first.seq.to_string(),
            offset => format!("{}.{offset}", first.seq),
        })
    });
    Ok(LogWindow { html, older, next })
}

#[derive(Deserialize)]
pub struct OlderQuery {
    before: String,
}

/// `GET /runs/{run}/log?before=CURSOR`: the lines before the cursor, as a
/// page of its own (ui.js takes the lines out of it and prepends them).
pub async fn older(
    State(state): State<AppState>,
    session: UiSession,
    Path(run): Path<String>,
    Query(query): Query<OlderQuery>,
) -> Response {
    let Some(before) = parse_cursor(&query.before) else {
        return layout::api_error(ApiError::invalid(
            "before",
            "`before` is a log position from the run page, e.g. 12 or 12.4096",
        ));
    };
    match log_window(&state, &run, Some(before)).await {
        Ok(window) => {
            let body = html! {
                h1 { "Earlier log of run " a href={ "/runs/" (run) } { code { (run) } } }
                @if let Some(older) = &window.older {
                    p { a id="log-older" href={ "/runs/" (run) "/log?before=" (older) } { "Load older lines" } }
                } @else {
                    p.muted { "This is the start of the log." }
                }
                pre id="log" tabindex="0" aria-label="Run log" { (maud::PreEscaped(window.html)) }
            };
            shell(&state, Some(&session), "Earlier log", Nav::Runs, body)
        }
        Err(error) => layout::api_error(error),
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    from: u64,
}

struct Follow {
    state: AppState,
    headers: HeaderMap,
    run_id: String,
    next: u64,
    renderer: AnsiRenderer,
    version: String,
    started: tokio::time::Instant,
    /// Events ready to send, oldest first.
    queue: std::collections::VecDeque<Event>,
    done: bool,
}

/// `GET /runs/{run}/events?from=SEQ`: `log` events (new lines as HTML,
/// and the chunk to resume at, also the event ID so a reconnecting browser
/// resumes there), `run` events (the re-rendered state section), then `end`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: UiSession,
    Path(run): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Response {
    drop(session);
    if let Err(error) = state
        .store
        .find_run(&run)
        .await
        .map_err(ApiError::from)
        .and_then(|r| r.ok_or_else(|| ApiError::not_found(format!("run {run:?}"))))
    {
        return layout::api_error(error);
    }
    // A reconnecting EventSource says where it was.
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(query.from);
    let follow = Follow {
        state,
        headers,
        run_id: run,
        next: from,
        renderer: AnsiRenderer::default(),
        version: String::new(),
        started: tokio::time::Instant::now(),
        queue: Default::default(),
        done: false,
    };
    Sse::new(stream(follow))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(event) = follow.queue.pop_front() {
                return Some((Ok(event), follow));
            }
            if follow.done || follow.started.elapsed() > STREAM_LIFE {
                return None;
            }
            // Arm the wake-up before reading, so a change in between is not missed.
            let signal = follow.state.signals.run(&follow.run_id);
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match step(&mut follow).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => return None,
            }
            let _ = tokio::time::timeout(POLL, notified).await;
        }
    })
}

/// Reads what changed into the queue; true when something did.
async fn step(follow: &mut Follow) -> ApiResult<bool> {
    let state = &follow.state;
    // The session is checked again: a revoked token or an expired cookie ends the stream.
    let Some(session) = session::current(state, &follow.headers).await else {
        follow.done = true;
        return Ok(false);
    };
    let Some(run) = state.store.find_run(&follow.run_id).await? else {
        follow.done = true;
        return Ok(false);
    };
    let chunks = state
        .store
        .read_log_chunks(&follow.run_id, follow.next, EVENT_BYTES)
        .await?;
    if let Some(last) = chunks.last() {
        follow.next = last.seq + 1;
        let mut html = String::new();
        for chunk in &chunks {
            html.push_str(&follow.renderer.push(&chunk.data));
        }
        let data = serde_json::json!({ "html": html, "next": follow.next });
        follow.queue.push_back(
            Event::default()
                .event("log")
                .id(follow.next.to_string())
                .data(data.to_string()),
        );
    }
    let (version, section) = super::runs::live_section(state, &session, &run).await?;
    if version != follow.version {
        follow.version = version.clone();
        let data = serde_json::json!({ "html": section.into_string(), "version": version });
        follow
            .queue
            .push_back(Event::default().event("run").data(data.to_string()));
    }
    if run.state.is_terminal() && chunks.is_empty() {
        match state
            .store
            .next_stored_log_seq(&follow.run_id, follow.next)
            .await?
        {
            None => {
                follow
                    .queue
                    .push_back(Event::default().event("end").data("{}"));
                follow.done = true;
            }
            // The run ended with chunks its worker never uploaded (it was
            // lost): say so and go on after them.
            Some(after) if after > follow.next => {
                let html = format!(
                    "\n[log chunks {}–{} are missing: the worker that had them was lost]\n",
                    follow.next,
                    after - 1
                );
                follow.next = after;
                let data = serde_json::json!({ "html": html, "next": follow.next });
                follow.queue.push_back(
                    Event::default()
                        .event("log")
                        .id(follow.next.to_string())
                        .data(data.to_string()),
                );
            }
            Some(_) => {}
        }
    }
    Ok(!follow.queue.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gantry_store::NewRun;
    use gantry_wire::run::RunType;

    use super::{log_window, parse_cursor, WINDOW_BYTES};

    #[tokio::test]
    async fn a_long_log_opens_at_its_tail_and_older_windows_give_back_every_byte() {
        let state = crate::ui::tests::memory_state().await;
        let store = &state.store;
        let pool = store
            .create_pool(
                &gantry_store::NewPool {
                    name: "p".into(),
                    description: String::new(),
                    key: gantry_store::PoolKey {
                        public_key_pem: "pem".into(),
                        key_fingerprint: "fp".into(),
                        credential_hash: "hash".into(),
                    },
                },
                1,
            )
            .await
            .unwrap();
        let run = store
            .insert_run(
                &NewRun {
                    pool_id: pool.id.clone(),
                    run_type: RunType::Task,
                    command: vec!["true".into()],
                    env: BTreeMap::new(),
                    image: None,
                },
                1,
            )
            .await
            .unwrap();
        let lease = store
            .claim_runs(&pool.id, "w", 1, i64::MAX, 2)
            .await
            .unwrap()[0]
            .lease_id
            .clone()
            .unwrap();
        // ~600 KB of numbered lines in 7,000-byte chunks that split lines.
        let text: String = (0..40_000).map(|i| format!("line {i} & more\n")).collect();
        for (seq, chunk) in text.as_bytes().chunks(7000).enumerate() {
            store
                .put_log_chunk(&run.id, &lease, seq as u64, chunk)
                .await
                .unwrap();
        }
        let plain = |html: &str| html.replace("&amp;", "&");

        let tail = log_window(&state, &run.id, None).await.unwrap();
        let shown = plain(&tail.html).len();
        assert!(
            (WINDOW_BYTES - 7000..=WINDOW_BYTES).contains(&shown),
            "{shown} bytes"
        );
        assert!(tail.html.starts_with("line "), "cut at a line start");
        assert!(plain(&tail.html).ends_with("line 39999 & more\n"));
        assert_eq!(tail.next, text.len().div_ceil(7000) as u64);

        let mut whole = plain(&tail.html);
        let mut older = tail.older;
        let mut windows = 1;
        while let Some(cursor) = older {
            let window = log_window(&state, &run.id, parse_cursor(&cursor))
                .await
                .unwrap();
            whole.insert_str(0, &plain(&window.html));
            older = window.older;
            windows += 1;
            assert!(windows < 20, "the walk ends");
        }
        assert!(windows >= 4, "{windows} windows");
        assert_eq!(whole, text, "every byte, once, in order");
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor("12"), Some((12, 0)));
        assert_eq!(parse_cursor("12.4096"), Some((12, 4096)));
        assert_eq!(parse_cursor("x"), None);
    }
}
