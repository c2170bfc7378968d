//! Prometheus metrics: `GET /metrics` (any API token) and, with
//! `--metrics-listen`, the same without authentication on an internal port.
//!
//! Three kinds, by where their value comes from:
//! - counters and histograms in this process, updated where runs end, are
//!   leased, and where log chunks and HTTP requests arrive ([`Metrics`]);
//! - the pool gauges, computed from the store at each scrape ([`pools`]),
//!   so every control plane sharing a database reports the same values;
//! - the process's own, read from `/proc` at each scrape ([`process`]).
//!
//! The text is OpenMetrics (what prometheus-client writes) when the scraper
//! asks for it, else the Prometheus text format ([`text`]), which
//! `promtool check metrics` and older scrapers read.

pub mod http;
pub mod pools;
mod process;
mod text;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use gantry_store::RunRecord;
use gantry_wire::run::RunState;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunEndLabels {
    pub run_type: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunTypeLabels {
    pub run_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub run_type: String,
    pub phase: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The counters and histograms of this process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs_ended: Family<RunEndLabels, Counter>,
    run_duration: Histograms<RunEndLabels>,
    phase_duration: Histograms<PhaseLabels>,
    dispatch_latency: Histograms<RunTypeLabels>,
    log_bytes: Counter,
    pub(crate) http: http::HttpMetrics,
}

/// Dispatch: 5 ms to about 80 s.
fn dispatch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Phases and whole runs: 100 ms to about 5 h.
fn run_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 3.0, 12))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![(
                "version".to_string(),
                gantry_wire::VERSION.to_string(),
            )])
            .set(1);
        registry.register(
            "gantry_build_info",
            "The control plane's version (the value is always 1)",
            build_info,
        );
        let runs_ended = Family::default();
        registry.register(
            "gantry_runs_ended",
            "Runs that reached a terminal state, by run type and final state",
            runs_ended.clone(),
        );
        let run_duration = Histograms::new_with_constructor(run_buckets as fn() -> Histogram);
        registry.register(
            "gantry_run_duration_seconds",
            "From submission to the end, by run type and final state",
            run_duration.clone(),
        );
        let phase_duration = Histograms::new_with_constructor(run_buckets as fn() -> Histogram);
        registry.register(
            "gantry_run_phase_duration_seconds",
            "Time runs spent in each state they left (QUEUED, READY, PREPARING, PLANNING, UNCONFIRMED, APPLYING…), observed when the run ends",
            phase_duration.clone(),
        );
        let dispatch_latency =
            Histograms::new_with_constructor(dispatch_buckets as fn() -> Histogram);
        registry.register(
            "gantry_run_dispatch_latency_seconds",
            "From READY (or CONFIRMED) to leased by a worker",
            dispatch_latency.clone(),
        );
        let log_bytes = Counter::default();
        registry.register(
            "gantry_log_bytes",
            "Bytes of run log stored (a chunk sent again is not counted twice)",
            log_bytes.clone(),
        );
        let http = http::HttpMetrics::register(&mut registry);
        Metrics {
            registry,
            runs_ended,
            run_duration,
            phase_duration,
            dispatch_latency,
            log_bytes,
            http,
        }
    }
}

impl Metrics {
    pub fn log_bytes_stored(&self, bytes: usize) {
        self.log_bytes.inc_by(bytes as u64);
    }
}

/// A run ended: counts it, and observes its duration and the time it spent
/// in each state, from its recorded transitions. In the background: the
/// caller's answer does not wait for the extra read.
pub fn run_ended(state: &AppState, run: &RunRecord) {
    if !run.state.is_terminal() {
        return;
    }
    let state = state.clone();
    let labels = RunEndLabels {
        run_type: run.run_type.as_str().to_string(),
        state: run.state.as_str().to_string(),
    };
    let run_id = run.id.clone();
    tokio::spawn(async move { observe_end(&state, &run_id, labels).await });
}

/// Runs ended by an operation that names them only (a pool reset or
/// deletion): each is read back first.
pub fn runs_ended_by_id(state: &AppState, run_ids: &[String]) {
    let state = state.clone();
    let run_ids = run_ids.to_vec();
    tokio::spawn(async move {
        for run_id in run_ids {
            if let Ok(Some(run)) = state.store.find_run(&run_id).await {
                if run.state.is_terminal() {
                    let labels = RunEndLabels {
                        run_type: run.run_type.as_str().to_string(),
                        state: run.state.as_str().to_string(),
                    };
                    observe_end(&state, &run_id, labels).await;
                }
            }
        }
    });
}

async fn observe_end(state: &AppState, run_id: &str, labels: RunEndLabels) {
    let metrics = &state.metrics;
    metrics.runs_ended.get_or_create(&labels).inc();
    let transitions = match state.store.run_transitions(run_id).await {
        Ok(transitions) => transitions,
        Err(error) => {
            tracing::debug!(%run_id, %error, "run metrics: transitions unreadable");
            return;
        }
    };
    for pair in transitions.windows(2) {
        metrics
            .phase_duration
            .get_or_create(&PhaseLabels {
                run_type: labels.run_type.clone(),
                phase: pair[0].state.as_str().to_string(),
            })
            .observe(seconds(pair[1].at - pair[0].at));
    }
    if let (Some(first), Some(last)) = (transitions.first(), transitions.last()) {
        metrics
            .run_duration
            .get_or_create(&labels)
            .observe(seconds(last.at - first.at));
    }
}

/// Runs were leased: observes how long each waited, from the time it
/// became READY (or CONFIRMED, for an apply) to its claim. In the
/// background, off the poll's answer.
pub fn runs_leased(state: &AppState, runs: &[RunRecord]) {
    let state = state.clone();
    let runs: Vec<(String, String)> = runs
        .iter()
        .map(|r| (r.id.clone(), r.run_type.as_str().to_string()))
        .collect();
    tokio::spawn(async move {
        for (run_id, run_type) in runs {
            let Ok(transitions) = state.store.run_transitions(&run_id).await else {
                continue;
            };
            // The claim is the last transition; the wait began at the last
            // READY or CONFIRMED before it.
            let Some((claim, before)) = transitions.split_last() else {
                continue;
            };
            let Some(ready) = before
                .iter()
                .rev()
                .find(|t| matches!(t.state, RunState::Ready | RunState::Confirmed))
            else {
                continue;
            };
            state
                .metrics
                .dispatch_latency
                .get_or_create(&RunTypeLabels { run_type })
                .observe(seconds(claim.at - ready.at));
        }
    });
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything, as the scraper asked: OpenMetrics when its `Accept` names it.
pub async fn render(state: &AppState, openmetrics: bool) -> ApiResult<String> {
    let mut scrape = Registry::default();
    pools::register(&mut scrape, &pools::summaries(state).await?);
    process::register(&mut scrape);
    let mut out = String::new();
    encode_registry(&mut out, &state.metrics.registry)
        .and_then(|_| encode_registry(&mut out, &scrape))
        .and_then(|_| encode_eof(&mut out))
        .map_err(|_| {
            ApiError::new(
                gantry_wire::error::ErrorCode::Internal,
                "metrics could not be encoded",
            )
        })?;
    Ok(if openmetrics {
        out
    } else {
        text::prometheus_text(&out)
    })
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

async fn respond(state: &AppState, headers: &HeaderMap) -> ApiResult<Response> {
    let openmetrics = wants_openmetrics(headers);
    let body = render(state, openmetrics).await?;
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

/// `GET /metrics`, with any API token as a Bearer token.
pub async fn scrape(
    _user: User,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    respond(&state, &headers).await
}

/// `GET /metrics` on `--metrics-listen`: no authentication, for a port
/// only the monitoring network reaches.
async fn scrape_unauthenticated(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    respond(&state, &headers).await
}

/// Serves `/metrics` alone on `listener`, until the process ends.
pub async fn serve_unauthenticated(listener: tokio::net::TcpListener, state: AppState) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape_unauthenticated))
        .fallback(crate::api::not_found)
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the --metrics-listen server stopped");
    }
}
