//! Experiment tracking against a real MLflow server: what the service copies there is checked
//! through MLflow's own REST API.
//!
//! Most tests share the server `scripts/services.sh` starts (`AUMOS_MLOPS_MLFLOW_TRACKING_URI`);
//! every test has its own tenant, so its names never meet another test's. Tests that stop and
//! restart MLflow start their own server from the same installation (`AUMOS_TEST_MLFLOW_BIN`).

mod compare;
mod promotion;
mod sync;
mod workspaces;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    create_database, expect_problem, expect_status, Backend, PgDatabase, TestApp,
};

/// The shared MLflow server. Its absence is a set-up failure, never a reason to skip.
pub fn shared_mlflow() -> String {
    std::env::var("AUMOS_MLOPS_MLFLOW_TRACKING_URI")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:5000".to_owned())
}

fn mlflow_vars(uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AUMOS_MLOPS_MLFLOW_TRACKING_URI", uri.to_owned()),
        ("AUMOS_MLFLOW__POLL_INTERVAL_MS", "100".to_owned()),
        ("AUMOS_MLFLOW__MAX_BACKOFF_SECONDS", "1".to_owned()),
    ]
}

/// A service copying into the MLflow server at `uri`, on SQLite or on a PostgreSQL database
/// of its own. Not the shared one: every service on a database copies all of its runs, into
/// its own MLflow server, and a test's services stop abruptly when the test ends, leaving
/// claims that hold other tests' runs back until their lease lapses.
async fn spawn_with_mlflow(backend: Backend, uri: &str) -> TestApp {
    let database = match backend {
        Backend::Postgres => Some(create_database().await),
        Backend::Sqlite => None,
    };
    spawn_on_with_mlflow(database, uri).await
}

async fn spawn_on_with_mlflow(database: Option<PgDatabase>, uri: &str) -> TestApp {
    let vars = mlflow_vars(uri);
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_on(database, &borrowed).await
}

/// Calls MLflow's REST API directly.
struct Mlflow {
    base: String,
    http: reqwest::Client,
    /// Sent as `X-MLFLOW-WORKSPACE` when set.
    workspace: Option<String>,
}

impl Mlflow {
    fn at(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            workspace: None,
        }
    }

    /// A client addressing one workspace of a server run with `--enable-workspaces`.
    fn in_workspace(base: &str, workspace: &str) -> Self {
        Self {
            workspace: Some(workspace.to_owned()),
            ..Self::at(base)
        }
    }

    /// The raw answer, for tests that expect MLflow to refuse.
    async fn try_get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = self
            .http
            .get(format!("{}/api/2.0/mlflow/{path}", self.base))
            .query(query);
        if let Some(workspace) = &self.workspace {
            request = request.header("X-MLFLOW-WORKSPACE", workspace);
        }
        let response = request.send().await.expect("MLflow answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/2.0/mlflow/{path}", self.base))
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(workspace) = &self.workspace {
            request = request.header("X-MLFLOW-WORKSPACE", workspace);
        }
        let response = request.send().await.expect("MLflow answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "MLflow {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        self.call(Method::GET, path, query, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    async fn run(&self, run_id: &str) -> Value {
        self.get("runs/get", &[("run_id", run_id)]).await["run"].clone()
    }

    async fn history(&self, run_id: &str, key: &str) -> Vec<Value> {
        let body = self
            .get(
                "metrics/get-history",
                &[("run_id", run_id), ("metric_key", key)],
            )
            .await;
        body["metrics"].as_array().cloned().unwrap_or_default()
    }

    /// Every run of an MLflow experiment matching `filter`, in `order_by`.
    async fn search(&self, experiment: &str, filter: &str, order_by: &[&str]) -> Vec<Value> {
        let body = self
            .post(
                "runs/search",
                json!({
                    "experiment_ids": [experiment],
                    "filter": filter,
                    "order_by": order_by,
                    "max_results": 1000,
                }),
            )
            .await;
        body["runs"].as_array().cloned().unwrap_or_default()
    }
}

/// `key` → `value` of an MLflow list of `{key, value}`.
fn pairs(list: &Value) -> Vec<(String, Value)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| (p["key"].as_str().unwrap().to_owned(), p["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn lookup(list: &Value, key: &str) -> Option<Value> {
    pairs(list)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// An MLflow server of a test's own, which the test can stop and start again on the same port
/// and data.
struct MlflowServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `mlflow server` arguments, such as `--enable-workspaces`.
    args: Vec<String>,
}

impl MlflowServer {
    fn with_args(args: &[&str]) -> Self {
        let mut server = Self::new();
        server.args = args.iter().map(|a| (*a).to_owned()).collect();
        server
    }

    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            args: Vec::new(),
        }
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let binary = std::env::var("AUMOS_TEST_MLFLOW_BIN").expect(
            "AUMOS_TEST_MLFLOW_BIN names the mlflow executable (scripts/services.sh sets it)",
        );
        let store = format!("sqlite:///{}/mlflow.db", self.dir.path().display());
        let artifacts = self.dir.path().join("artifacts");
        let child = Command::new(binary)
            .args(["server", "--backend-store-uri", &store])
            .arg("--default-artifact-root")
            .arg(&artifacts)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--workers", "1"])
            .args(&self.args)
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("mlflow starts");
        self.child = Some(child);
        let health = format!("{}/health", self.uri());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = reqwest::get(&health).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "MLflow did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the server's whole process group (its workers too).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runs_path(experiment: &str) -> String {
    format!("/api/v1/experiments/{experiment}/runs")
}

/// Waits until the run's copy in MLflow is in sync, and returns the run.
async fn synced_run(app: &TestApp, experiment: &str, run: &str) -> Value {
    let path = format!("{}/{run}", runs_path(experiment));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = expect_status(app.get(&path).await, StatusCode::OK).await;
        if body["mlflow"]["sync_state"] == "synced" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "run never reached MLflow: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn synced_experiment(app: &TestApp, experiment: &str) -> Value {
    let path = format!("/api/v1/experiments/{experiment}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = expect_status(app.get(&path).await, StatusCode::OK).await;
        if body["mlflow"]["sync_state"] == "synced" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "experiment never reached MLflow: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
