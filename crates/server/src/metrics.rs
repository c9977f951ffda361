//! Prometheus metrics for every role: requests by role, method, route and
//! status, their latency, and requests in flight, served at `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Role;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    role: &'static str,
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// The process's metrics, shared by every role.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RoleLabels, Histogram>,
    in_flight: Family<RoleLabels, Gauge>,
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("avail");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RoleLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let in_flight = Family::<RoleLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            in_flight.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            latency,
            in_flight,
        }))
    }
}

/// Middleware counting every request of a role.
pub async fn track(
    State((metrics, role)): State<(Metrics, Role)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let role_labels = RoleLabels { role: role.name() };
    let gauge = metrics.0.in_flight.get_or_create(&role_labels).clone();
    gauge.inc();
    let started = Instant::now();
    let response = next.run(req).await;
    gauge.dec();
    metrics
        .0
        .latency
        .get_or_create(&role_labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .0
        .requests
        .get_or_create(&RequestLabels {
            role: role.name(),
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`.
pub async fn render(State(metrics): State<Metrics>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &metrics.0.registry) {
        Ok(()) => (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}
