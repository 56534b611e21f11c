//! Probes and metrics: `/live`, `/ready`, `/metrics`. None needs a token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::workers::DependencyState;

/// How long `/ready` waits for the database before calling it down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "alive")]
    pub status: &'static str,
}

/// The state of one dependency.
#[derive(Debug, Default, Serialize, ToSchema)]
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
    /// Outbox only: events not yet acknowledged by Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_events: Option<i64>,
    /// MLflow only: experiments and runs changed since they were last copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_sync: Option<i64>,
    /// Age of the oldest pending event (outbox) or change not yet copied (MLflow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_pending_seconds: Option<f64>,
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

/// Readiness: 200 when the database answers (degraded without Kafka or MLflow), else 503
#[utoipa::path(
    get,
    path = "/ready",
    tag = "probes",
    responses(
        (status = 200, description = "Ready to serve, possibly degraded", body = Readiness),
        (status = 503, description = "The database is unreachable", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = database_status(&state).await;
    let database_up = database.status == "up";
    let mut checks = BTreeMap::from([("database", database)]);
    if database_up {
        checks.insert("outbox", outbox_status(&state).await);
    }
    checks.insert("kafka", kafka_status(&state));
    checks.insert("mlflow", mlflow_status(&state, database_up).await);

    let degraded = checks
        .values()
        .any(|c| matches!(c.status, "down" | "degraded"));
    let (code, status) = match (database_up, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    (code, axum::Json(Readiness { status, checks }))
}

async fn database_status(state: &AppState) -> DependencyStatus {
    let store = &state.store_health;
    let started = Instant::now();
    let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
    let error = match ping {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
    };
    if let Some(error) = &error {
        tracing::warn!(%error, "readiness check: database is down");
    }
    DependencyStatus {
        status: if error.is_none() { "up" } else { "down" },
        backend: Some(store.backend().into()),
        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        error,
        ..Default::default()
    }
}

async fn outbox_status(state: &AppState) -> DependencyStatus {
    match state.outbox.backlog().await {
        Ok(backlog) => DependencyStatus {
            status: "up",
            pending_events: Some(backlog.pending),
            oldest_pending_seconds: backlog.oldest.map(|oldest| {
                (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
            }),
            ..Default::default()
        },
        Err(error) => DependencyStatus {
            status: "degraded",
            error: Some(error.to_string()),
            ..Default::default()
        },
    }
}

fn kafka_status(state: &AppState) -> DependencyStatus {
    let Some(relay) = &state.relay_status else {
        return DependencyStatus {
            status: "disabled",
            error: Some("AUMOS_KAFKA__BROKERS is empty: events stay in the outbox".into()),
            ..Default::default()
        };
    };
    match relay.get() {
        DependencyState::Up => DependencyStatus {
            status: "up",
            ..Default::default()
        },
        DependencyState::Starting => DependencyStatus {
            status: "starting",
            ..Default::default()
        },
        DependencyState::Down { since, error } => DependencyStatus {
            status: "degraded",
            error: Some(format!("{error} (since {})", since.to_rfc3339())),
            ..Default::default()
        },
    }
}

/// MLflow answers its `/health` within the ping timeout, with how far the copy is behind.
async fn mlflow_status(state: &AppState, database_up: bool) -> DependencyStatus {
    let Some(mlflow) = &state.mlflow else {
        return DependencyStatus {
            status: "disabled",
            error: Some(
                "AUMOS_MLOPS_MLFLOW_TRACKING_URI is empty: nothing is copied to MLflow".into(),
            ),
            ..Default::default()
        };
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(PING_TIMEOUT, mlflow.tracking.health()).await;
    let error = match answer {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
    };
    let backlog = if database_up {
        mlflow.sync.sync_backlog().await.ok()
    } else {
        None
    };
    DependencyStatus {
        status: if error.is_none() { "up" } else { "degraded" },
        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        error,
        pending_sync: backlog.as_ref().map(|b| b.pending),
        oldest_pending_seconds: backlog
            .and_then(|b| b.oldest)
            .map(|oldest| (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0),
        ..Default::default()
    }
}

/// Prometheus metrics in the text exposition format
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format", body = String,
               content_type = "text/plain"))
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
