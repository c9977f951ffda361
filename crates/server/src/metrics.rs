//! Prometheus metrics for every role: requests by role, method, route and
//! status, their latency, requests in flight, and each listener's connections
//! (open, shed at the cap, closed for a timeout, failed accepts), served at
//! `/metrics`.
//!
//! Every label takes a bounded set of values whatever clients send: methods
//! other than the standard nine count as `OTHER`, paths that match no route as
//! `unmatched`, so invented methods and random paths cannot grow the registry.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
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
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    role: &'static str,
    phase: &'static str,
}

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The method label: the method's name for the nine of RFC 9110 and RFC 5789,
/// `OTHER` for anything a client invented.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// One role's connection metrics, as its listener updates them.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections answered `503` and closed because the role was at its cap.
    pub shed: Counter,
    /// `accept` failures other than a client giving up (EMFILE, ENFILE, ENOMEM…).
    pub accept_errors: Counter,
    timed_out: Family<TimeoutLabels, Counter>,
    role: &'static str,
}

impl ConnectionMetrics {
    /// A connection closed because it made no progress in `phase`
    /// (`handshake`, `header`, `idle` or `response`).
    pub fn timed_out(&self, phase: &'static str) {
        self.timed_out
            .get_or_create(&TimeoutLabels {
                role: self.role,
                phase,
            })
            .inc();
    }
}

/// The process's metrics, shared by every role.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RoleLabels, Histogram>,
    in_flight: Family<RoleLabels, Gauge>,
    connections_open: Family<RoleLabels, Gauge>,
    connections_shed: Family<RoleLabels, Counter>,
    accept_errors: Family<RoleLabels, Counter>,
    connections_timed_out: Family<TimeoutLabels, Counter>,
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
        let connections_open = Family::<RoleLabels, Gauge>::default();
        let connections_shed = Family::<RoleLabels, Counter>::default();
        let accept_errors = Family::<RoleLabels, Counter>::default();
        let connections_timed_out = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "http_connections_open",
            "Open HTTP connections",
            connections_open.clone(),
        );
        registry.register(
            "http_connections_shed",
            "Connections refused with 503 because the role was at its connection cap",
            connections_shed.clone(),
        );
        registry.register(
            "http_accept_errors",
            "Failures to accept a connection (file descriptors or memory exhausted)",
            accept_errors.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "Connections closed for sending no headers, sitting idle, or not reading a response",
            connections_timed_out.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            latency,
            in_flight,
            connections_open,
            connections_shed,
            accept_errors,
            connections_timed_out,
        }))
    }

    /// The connection metrics of `role`'s listener.
    pub fn connections(&self, role: Role) -> ConnectionMetrics {
        let labels = RoleLabels { role: role.name() };
        ConnectionMetrics {
            open: self.0.connections_open.get_or_create(&labels).clone(),
            shed: self.0.connections_shed.get_or_create(&labels).clone(),
            accept_errors: self.0.accept_errors.get_or_create(&labels).clone(),
            timed_out: self.0.connections_timed_out.clone(),
            role: role.name(),
        }
    }
}

/// Middleware counting every request of a role.
pub async fn track(
    State((metrics, role)): State<(Metrics, Role)>,
    req: Request,
    next: Next,
) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let role_labels = RoleLabels { role: role.name() };
    // Decremented on drop, so that a request whose client went away still leaves.
    struct InFlight(Gauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let in_flight = InFlight(metrics.0.in_flight.get_or_create(&role_labels).clone());
    in_flight.0.inc();
    let started = Instant::now();
    let response = next.run(req).await;
    drop(in_flight);
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
