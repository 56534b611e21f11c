//! Request tracing, request ids and Prometheus metrics.
//!
//! One middleware opens the request span (method, route, request id; the auth middleware adds
//! the tenant), logs the finished request with its status and latency, and counts it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Instrument;

use crate::core::ports::StoreHealth;
use crate::workers::rollout_controller::RolloutMetrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Request ids are UUIDv7 unless the caller sent one.
#[derive(Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The service's Prometheus registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pool: Family<PoolLabels, Gauge>,
    store: Arc<dyn StoreHealth>,
}

impl Metrics {
    pub fn new(service: &str, store: Arc<dyn StoreHealth>, rollout: &RolloutMetrics) -> Self {
        let mut registry = Registry::with_prefix("aumos");
        rollout.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to serve HTTP requests, by route and method",
            latency.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections: open, idle and the configured maximum",
            pool.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("service", service.to_owned()),
                ("database", store.backend().to_owned()),
            ]),
        );
        Self {
            registry,
            requests,
            latency,
            pool,
            store,
        }
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let (route, method) = (route.to_owned(), method.to_owned());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method.clone(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }

    /// The text exposition, with pool figures read at scrape time.
    pub fn render(&self) -> String {
        let stats = self.store.pool_stats();
        for (state, value) in [
            ("open", stats.size),
            ("idle", stats.idle),
            ("max", stats.max),
        ] {
            self.pool
                .get_or_create(&PoolLabels {
                    state: state.into(),
                })
                .set(i64::from(value));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("cannot encode metrics");
        }
        text
    }
}

/// Middleware: the request span, the request log line and the request metrics.
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        http.method = %method,
        http.route = %route,
        request.id = %request_id,
        tenant.id = tracing::field::Empty,
        auth.subject = tracing::field::Empty,
    );

    let response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe(&route, &method, status, elapsed.as_secs_f64());
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if matches!(route.as_str(), "/live" | "/ready" | "/metrics") {
            tracing::debug!(http.status = status, duration_ms, "request finished");
        } else {
            tracing::info!(http.status = status, duration_ms, "request finished");
        }
    });
    response
}
