//! Probes and metrics: `/live`, `/ready`, `/metrics`. None needs a token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;

/// How long `/ready` waits for the database before calling it down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "alive")]
    pub status: &'static str,
}

/// The state of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyStatus {
    /// `up`, `down`, `degraded` or `disabled`.
    #[schema(example = "up")]
    pub status: &'static str,
    /// Which implementation is in use, such as `postgres` or `sqlite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why the dependency is not up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (all up), `degraded` (serving without an optional dependency) or `unavailable`.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, DependencyStatus>,
}

/// Liveness: 200 while the process serves requests
#[utoipa::path(get, path = "/live", tag = "probes", responses((status = 200, body = Liveness)))]
pub async fn live() -> axum::Json<Liveness> {
    axum::Json(Liveness { status: "alive" })
}

/// Readiness: 200 when the database answers, 503 when it does not
#[utoipa::path(
    get,
    path = "/ready",
    tag = "probes",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "The database is unreachable", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = &state.store_health;
    let started = Instant::now();
    let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
    let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let database = match ping {
        Ok(Ok(())) => DependencyStatus {
            status: "up",
            backend: Some(store.backend().into()),
            latency_ms,
            error: None,
        },
        Ok(Err(error)) => DependencyStatus {
            status: "down",
            backend: Some(store.backend().into()),
            latency_ms,
            error: Some(error.to_string()),
        },
        Err(_) => DependencyStatus {
            status: "down",
            backend: Some(store.backend().into()),
            latency_ms,
            error: Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
        },
    };
    let up = database.status == "up";
    if !up {
        tracing::warn!(
            error = database.error.as_deref(),
            "readiness check: database is down"
        );
    }
    let checks = BTreeMap::from([("database", database)]);
    let (status, text) = if up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        axum::Json(Readiness {
            status: text,
            checks,
        }),
    )
}

/// Prometheus metrics in the text exposition format
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
