//! HTTP requests by route template (never the raw path: IDs would make a
//! series per run), method and status, with their latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

/// 1 ms to about 24 s (a launcher's poll is held up to 25 s).
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 12))
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let requests = Family::default();
        registry.register(
            "gantry_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let duration = Family::new_with_constructor(buckets as fn() -> Histogram);
        registry.register(
            "gantry_http_request_duration_seconds",
            "Time to answer HTTP requests (long-polls included), by method and route template",
            duration.clone(),
        );
        HttpMetrics { requests, duration }
    }
}

/// A route template, or `unmatched` for a path no route has.
fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// The standard methods by name; anything else is `other` (a client
/// choosing methods must not choose series).
fn method(request: &Request) -> &'static str {
    use axum::http::Method;
    match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware: applied to a router's routes, where the matched route is known.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route(&request);
    let method = method(&request).to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics.http;
    metrics
        .duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}
