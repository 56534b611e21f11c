//! Deployments driven by the real rollout controller against real HTTP health endpoints,
//! which the tests make fail on cue. Models are promoted through the real MLflow server.

/// Runs each scenario `fn(Backend)` once per storage adapter, as `sqlite` and `postgres` tests.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name(super::Backend::Postgres).await
                }
            }
        )*
    };
}

mod canary;
mod commands;
mod kafka;
mod replicas;
mod strategies;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    collect_pages, create_database, expect_problem, expect_status, problem_fields, Backend,
    PgDatabase, TestApp,
};
use crate::mlflow::shared_mlflow;

/// A variant's health endpoint: answers `GET /health` with the status it is set to.
struct HealthEndpoint {
    url: String,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct EndpointState {
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
}

async fn answer(State(state): State<EndpointState>) -> AxumStatus {
    state.hits.fetch_add(1, Ordering::SeqCst);
    AxumStatus::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(AxumStatus::OK)
}

impl HealthEndpoint {
    async fn start() -> Self {
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicU64::new(0));
        let state = EndpointState {
            status: status.clone(),
            hits: hits.clone(),
        };
        let router = axum::Router::new()
            .route("/health", axum::routing::get(answer))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a health endpoint");
        let url = format!("http://{}/health", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("health endpoint serves");
        });
        Self {
            url,
            status,
            hits,
            task,
        }
    }

    /// From now on the endpoint answers 500.
    fn fail(&self) {
        self.status.store(500, Ordering::SeqCst);
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings for a service whose deployments move in fractions of a second.
fn fast_vars() -> Vec<(&'static str, String)> {
    vec![
        ("AUMOS_MLOPS_MLFLOW_TRACKING_URI", shared_mlflow()),
        ("AUMOS_MLFLOW__POLL_INTERVAL_MS", "100".to_owned()),
        ("AUMOS_CONTROLLER__POLL_INTERVAL_MS", "50".to_owned()),
        // The variants' health endpoints run in the test, on loopback.
        (
            "AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS",
            "127.0.0.0/8".to_owned(),
        ),
    ]
}

/// A service on SQLite, or on a PostgreSQL database of its own. Not the shared one: every
/// service on a database drives all of its deployments, and a test's services stop abruptly
/// when the test ends, so another test's deployment could wait out a stale lease.
async fn spawn(backend: Backend) -> TestApp {
    let vars = fast_vars();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let database = match backend {
        Backend::Postgres => Some(create_database().await),
        Backend::Sqlite => None,
    };
    TestApp::spawn_on(database, &borrowed).await
}

async fn spawn_on(database: &PgDatabase) -> TestApp {
    let vars = fast_vars();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_on(Some(database.clone()), &borrowed).await
}

/// Promotes a finished run and returns the model's id; its version is 1.
async fn promoted_model(app: &TestApp) -> String {
    promote_run_of(app, "deploy-me").await
}

/// Promotes a finished run of a new experiment named `experiment` into the model `churn`,
/// adding a version, and returns the model's id.
async fn promote_run_of(app: &TestApp, experiment: &str) -> String {
    let experiment = app.create_experiment(experiment).await;
    let run = app
        .create_run(
            &experiment,
            &json!({"status": "FINISHED", "metrics": [{"key": "auc", "value": 0.9}]}),
        )
        .await;
    let promoted = expect_status(
        app.post(
            &format!(
                "/api/v1/experiments/{experiment}/runs/{}/promote",
                run["id"].as_str().expect("run id")
            ),
            &json!({"model_name": "churn"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    promoted["model_id"].as_str().expect("model id").to_owned()
}

/// An analysis that probes every 100 ms and steps every 300 ms.
fn fast_analysis() -> Value {
    json!({
        "step_percent": 10,
        "step_interval_seconds": 0.3,
        "probe_interval_seconds": 0.1,
        "window_seconds": 2,
        "error_threshold": 0.05,
        "min_samples": 2,
        "progress_deadline_seconds": 10
    })
}

/// A canary from 10% that walks in steps of 10.
fn canary(model: &str, environment: &str, health: &HealthEndpoint) -> Value {
    json!({
        "model_id": model,
        "model_version": 1,
        "strategy": "canary",
        "target_environment": environment,
        "traffic_split": {"stable": 90, "canary": 10},
        "health_check_url": health.url,
        "analysis": fast_analysis()
    })
}

/// A canary at 10% whose next step is a minute away, once the controller started it.
async fn started_slow_canary(app: &TestApp, model: &str, health: &HealthEndpoint) -> String {
    let mut body = canary(model, "production", health);
    body["analysis"]["step_interval_seconds"] = json!(60);
    let id = create(app, &body).await["id"].as_str().unwrap().to_owned();
    wait_until(app, &id, Duration::from_secs(10), |d| {
        d["status"] == "progressing"
    })
    .await;
    id
}

async fn create(app: &TestApp, body: &Value) -> Value {
    expect_status(
        app.post("/api/v1/deployments", body).await,
        StatusCode::CREATED,
    )
    .await
}

async fn deployment(app: &TestApp, id: &str) -> Value {
    expect_status(
        app.get(&format!("/api/v1/deployments/{id}")).await,
        StatusCode::OK,
    )
    .await
}

/// Polls the deployment until `done` holds, for at most `limit`.
async fn wait_until(
    app: &TestApp,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let current = deployment(app, id).await;
        if done(&current) {
            return current;
        }
        assert!(
            started.elapsed() < limit,
            "the deployment did not get there within {limit:?}: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the deployment to end and returns it.
async fn wait_for_end(app: &TestApp, id: &str) -> Value {
    wait_until(app, id, Duration::from_secs(30), |d| {
        !matches!(
            d["status"].as_str(),
            Some("pending" | "progressing" | "paused")
        )
    })
    .await
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    collect_pages(app, &format!("/api/v1/deployments/{id}/history"), 100).await
}

fn kinds(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|h| h["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The candidate's weight after each traffic shift, in order.
fn candidate_weights(history: &[Value], variant: &str) -> Vec<u64> {
    history
        .iter()
        .filter(|h| h["kind"] == "traffic_shifted")
        .map(|h| h["traffic_split"][variant].as_u64().unwrap_or(u64::MAX))
        .collect()
}

/// The types of the deployment's lifecycle events, oldest first.
async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    collect_pages(
        app,
        &format!("/api/v1/events?aggregate_type=deployment&aggregate_id={id}"),
        100,
    )
    .await
    .iter()
    .map(|e| {
        e["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("com.aumos.mlops.deployment.")
            .trim_end_matches(".v1")
            .to_owned()
    })
    .collect()
}
