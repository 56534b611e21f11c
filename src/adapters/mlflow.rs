//! The MLflow adapter: MLflow's REST API 2.0 over HTTP.
//!
//! Every call is made within one tenant's namespace: names carry the tenant, or the request
//! carries the tenant's workspace. The service only ever addresses MLflow objects by ids it
//! stored for the tenant itself, and checks the tenant tag on anything it finds by name.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::core::experiment::Experiment;
use crate::core::ports::TrackingServer;
use crate::core::run::Run;
use crate::core::tracking::{
    LogChunk, RegisteredVersion, TenantNamespace, TrackingError, EXPERIMENT_TAG, RUN_TAG,
    TENANT_TAG,
};
use crate::core::RunId;

const WORKSPACE_HEADER: &str = "X-MLFLOW-WORKSPACE";

pub struct MlflowClient {
    http: reqwest::Client,
    base: Url,
    /// Workspaces known to exist, so each is created once per process.
    workspaces: Mutex<HashSet<String>>,
}

/// MLflow's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct Tag {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct MlflowExperiment {
    experiment_id: String,
    #[serde(default)]
    lifecycle_stage: String,
    #[serde(default)]
    tags: Vec<Tag>,
}

impl MlflowExperiment {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct ModelVersion {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
}

impl MlflowClient {
    /// A client for the tracking server at `base` (e.g. `http://mlflow:5000`).
    pub fn new(base: Url, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("aumos-mlops-lifecycle/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            workspaces: Mutex::new(HashSet::new()),
        })
    }

    fn url(&self, path: &str) -> Result<Url, TrackingError> {
        let mut url = self.base.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        Ok(url)
    }

    /// One call; `query` for GETs, `body` for POSTs. MLflow's own errors (4xx with an
    /// `error_code`) are `Rejected`; anything else is `Unavailable`.
    async fn call<T: DeserializeOwned>(
        &self,
        ns: Option<&TenantNamespace>,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<T, TrackingError> {
        let mut request = self.http.request(method, self.url(path)?);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(workspace) = ns.and_then(|n| n.workspace.as_deref()) {
            request = request.header(WORKSPACE_HEADER, workspace);
        }
        let response = request
            .send()
            .await
            .map_err(|e| TrackingError::Unavailable(describe(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| TrackingError::Unavailable(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                TrackingError::Unavailable(format!("unreadable answer from {path}: {e}"))
            });
        }
        Err(classify(status, &text))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        ns: &TenantNamespace,
        path: &str,
        body: Value,
    ) -> Result<T, TrackingError> {
        self.call(Some(ns), Method::POST, path, &[], Some(body))
            .await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        ns: &TenantNamespace,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, TrackingError> {
        self.call(Some(ns), Method::GET, path, query, None).await
    }

    /// Creates the tenant's workspace the first time this process addresses it.
    async fn ensure_workspace(&self, ns: &TenantNamespace) -> Result<(), TrackingError> {
        let Some(workspace) = &ns.workspace else {
            return Ok(());
        };
        if self.known_workspace(workspace) {
            return Ok(());
        }
        let created: Result<Value, _> = self
            .call(
                None,
                Method::POST,
                "api/3.0/mlflow/workspaces",
                &[],
                Some(json!({
                    "name": workspace,
                    "description": format!("aumos tenant {}", ns.tenant),
                })),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(e) if already_exists(&e) => {}
            Err(e) => return Err(e),
        }
        if let Ok(mut known) = self.workspaces.lock() {
            known.insert(workspace.clone());
        }
        Ok(())
    }

    fn known_workspace(&self, workspace: &str) -> bool {
        self.workspaces
            .lock()
            .map(|known| known.contains(workspace))
            .unwrap_or(false)
    }

    async fn experiment_by_name(
        &self,
        ns: &TenantNamespace,
        name: &str,
    ) -> Result<MlflowExperiment, TrackingError> {
        #[derive(Deserialize)]
        struct Found {
            experiment: MlflowExperiment,
        }
        let found: Found = self
            .get(
                ns,
                "api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await?;
        Ok(found.experiment)
    }

    async fn version_of_run(
        &self,
        ns: &TenantNamespace,
        name: &str,
        mlflow_run: &str,
    ) -> Result<Option<ModelVersion>, TrackingError> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!("name = {} and run_id = {}", quote(name), quote(mlflow_run));
        let found: Found = self
            .get(
                ns,
                "api/2.0/mlflow/model-versions/search",
                &[("filter", &filter), ("max_results", "10")],
            )
            .await?;
        Ok(found.model_versions.into_iter().next())
    }
}

#[async_trait]
impl TrackingServer for MlflowClient {
    async fn ensure_experiment(
        &self,
        ns: &TenantNamespace,
        experiment: &Experiment,
    ) -> Result<String, TrackingError> {
        self.ensure_workspace(ns).await?;
        let name = ns.experiment_name(&experiment.name);
        let ours = experiment.id.to_string();
        let tenant = ns.tenant.to_string();
        let mut tags = vec![
            json!({"key": TENANT_TAG, "value": tenant}),
            json!({"key": EXPERIMENT_TAG, "value": ours}),
        ];
        tags.extend(
            experiment
                .tags
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v})),
        );
        if let Some(description) = &experiment.description {
            tags.push(json!({"key": "mlflow.note.content", "value": description}));
        }
        #[derive(Deserialize)]
        struct Created {
            experiment_id: String,
        }
        let created: Result<Created, _> = self
            .post(
                ns,
                "api/2.0/mlflow/experiments/create",
                json!({"name": name, "tags": tags}),
            )
            .await;
        match created {
            Ok(created) => Ok(created.experiment_id),
            Err(e) if already_exists(&e) => {
                // Created by an earlier attempt, or by someone else: only ours is adopted.
                let found = self.experiment_by_name(ns, &name).await?;
                let same = found.tag(EXPERIMENT_TAG) == Some(ours.as_str())
                    && found.tag(TENANT_TAG) == Some(tenant.as_str());
                if !same {
                    return Err(TrackingError::Rejected {
                        code: "RESOURCE_ALREADY_EXISTS".into(),
                        message: format!(
                            "MLflow already has an experiment named {name:?} that this service \
                             did not create for experiment {ours}; rename or delete it in MLflow"
                        ),
                    });
                }
                if found.lifecycle_stage == "deleted" {
                    return Err(TrackingError::Rejected {
                        code: "INVALID_STATE".into(),
                        message: format!(
                            "the MLflow experiment {name:?} was deleted in MLflow; restore it \
                             there to resume copying"
                        ),
                    });
                }
                Ok(found.experiment_id)
            }
            Err(e) => Err(e),
        }
    }

    async fn find_run(
        &self,
        ns: &TenantNamespace,
        mlflow_experiment: &str,
        run: RunId,
    ) -> Result<Option<String>, TrackingError> {
        #[derive(Deserialize)]
        struct Info {
            run_id: String,
        }
        #[derive(Deserialize)]
        struct Found {
            info: Info,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            runs: Vec<Found>,
        }
        let filter = format!("tags.`{RUN_TAG}` = {}", quote(&run.to_string()));
        let page: Page = self
            .post(
                ns,
                "api/2.0/mlflow/runs/search",
                json!({
                    "experiment_ids": [mlflow_experiment],
                    "filter": filter,
                    "run_view_type": "ALL",
                    "max_results": 1,
                }),
            )
            .await?;
        Ok(page.runs.into_iter().next().map(|r| r.info.run_id))
    }

    async fn create_run(
        &self,
        ns: &TenantNamespace,
        mlflow_experiment: &str,
        run: &Run,
    ) -> Result<String, TrackingError> {
        let mut tags = vec![
            json!({"key": TENANT_TAG, "value": ns.tenant.to_string()}),
            json!({"key": RUN_TAG, "value": run.id.to_string()}),
        ];
        tags.extend(run.tags.iter().map(|(k, v)| json!({"key": k, "value": v})));
        #[derive(Deserialize)]
        struct Info {
            run_id: String,
        }
        #[derive(Deserialize)]
        struct Created {
            info: Info,
        }
        #[derive(Deserialize)]
        struct Answer {
            run: Created,
        }
        let answer: Answer = self
            .post(
                ns,
                "api/2.0/mlflow/runs/create",
                json!({
                    "experiment_id": mlflow_experiment,
                    "run_name": run.name,
                    "start_time": run.start_time.timestamp_millis(),
                    "tags": tags,
                }),
            )
            .await?;
        Ok(answer.run.info.run_id)
    }

    async fn log_batch(
        &self,
        ns: &TenantNamespace,
        mlflow_run: &str,
        chunk: &LogChunk,
    ) -> Result<(), TrackingError> {
        let metrics: Vec<Value> = chunk
            .metrics
            .iter()
            .map(|m| {
                json!({
                    "key": m.key,
                    "value": m.value,
                    "timestamp": m.timestamp.timestamp_millis(),
                    "step": m.step,
                })
            })
            .collect();
        let pairs = |items: &[(String, String)]| -> Vec<Value> {
            items
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        };
        let _: Value = self
            .post(
                ns,
                "api/2.0/mlflow/runs/log-batch",
                json!({
                    "run_id": mlflow_run,
                    "metrics": metrics,
                    "params": pairs(&chunk.params),
                    "tags": pairs(&chunk.tags),
                }),
            )
            .await?;
        Ok(())
    }

    async fn update_run(
        &self,
        ns: &TenantNamespace,
        mlflow_run: &str,
        run: &Run,
    ) -> Result<(), TrackingError> {
        let mut body = json!({
            "run_id": mlflow_run,
            "status": run.status.as_str(),
            "run_name": run.name,
        });
        if let Some(end) = run.end_time {
            body["end_time"] = json!(end.timestamp_millis());
        }
        let _: Value = self.post(ns, "api/2.0/mlflow/runs/update", body).await?;
        Ok(())
    }

    async fn register_model_version(
        &self,
        ns: &TenantNamespace,
        model_name: &str,
        mlflow_run: &str,
        alias: &str,
    ) -> Result<RegisteredVersion, TrackingError> {
        self.ensure_workspace(ns).await?;
        let name = ns.model_name(model_name);
        let tenant = ns.tenant.to_string();
        let created: Result<Value, _> = self
            .post(
                ns,
                "api/2.0/mlflow/registered-models/create",
                json!({
                    "name": name,
                    "tags": [{"key": TENANT_TAG, "value": tenant}],
                }),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(e) if already_exists(&e) => {
                #[derive(Deserialize)]
                struct Model {
                    #[serde(default)]
                    tags: Vec<Tag>,
                }
                #[derive(Deserialize)]
                struct Found {
                    registered_model: Model,
                }
                let found: Found = self
                    .get(
                        ns,
                        "api/2.0/mlflow/registered-models/get",
                        &[("name", &name)],
                    )
                    .await?;
                let owner = found
                    .registered_model
                    .tags
                    .iter()
                    .find(|t| t.key == TENANT_TAG)
                    .map(|t| t.value.as_str());
                if owner != Some(tenant.as_str()) {
                    return Err(TrackingError::Rejected {
                        code: "RESOURCE_ALREADY_EXISTS".into(),
                        message: format!(
                            "MLflow already has a registered model named {name:?} that this \
                             service did not create for this tenant"
                        ),
                    });
                }
            }
            Err(e) => return Err(e),
        }
        let version = match self.version_of_run(ns, &name, mlflow_run).await? {
            Some(existing) => existing,
            None => {
                #[derive(Deserialize)]
                struct Created {
                    model_version: ModelVersion,
                }
                let created: Created = self
                    .post(
                        ns,
                        "api/2.0/mlflow/model-versions/create",
                        json!({
                            "name": name,
                            "source": format!("runs:/{mlflow_run}/model"),
                            "run_id": mlflow_run,
                            "tags": [{"key": TENANT_TAG, "value": tenant}],
                        }),
                    )
                    .await?;
                created.model_version
            }
        };
        let _: Value = self
            .post(
                ns,
                "api/2.0/mlflow/registered-models/alias",
                json!({"name": name, "alias": alias, "version": version.version}),
            )
            .await?;
        let number = version.version.parse().map_err(|_| {
            TrackingError::Unavailable(format!(
                "MLflow answered a non-numeric version {:?}",
                version.version
            ))
        })?;
        Ok(RegisteredVersion {
            name: version.name,
            version: number,
            source: version.source,
        })
    }

    async fn health(&self) -> Result<(), TrackingError> {
        let response = self
            .http
            .get(self.url("health")?)
            .send()
            .await
            .map_err(|e| TrackingError::Unavailable(describe(&e)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(TrackingError::Unavailable(format!(
                "/health answered {}",
                response.status()
            )))
        }
    }
}

/// A string literal in MLflow's search syntax.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn already_exists(error: &TrackingError) -> bool {
    matches!(error, TrackingError::Rejected { code, .. } if code == "RESOURCE_ALREADY_EXISTS")
}

/// MLflow's 4xx answers carry an `error_code`: the request was refused. Server errors, rate
/// limits and answers that are not MLflow's (a proxy's 502, say) mean "try again later".
fn classify(status: StatusCode, body: &str) -> TrackingError {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    match parsed {
        Some(e)
            if status.is_client_error()
                && status != StatusCode::TOO_MANY_REQUESTS
                && !e.error_code.is_empty() =>
        {
            TrackingError::Rejected {
                code: e.error_code,
                message: first_line(&e.message),
            }
        }
        _ => TrackingError::Unavailable(format!("HTTP {status}: {}", first_line(body))),
    }
}

/// MLflow's messages can carry SQL and stack traces after the first line; keep the part a
/// person can act on, bounded.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    line.chars().take(500).collect()
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "request timed out".into()
    } else if error.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_refusals_and_outages_are_told_apart() {
        let refused = classify(
            StatusCode::BAD_REQUEST,
            r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad\nSQL: ..."}"#,
        );
        let proxy = classify(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        let busy = classify(
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}"#,
        );

        assert_eq!(
            refused,
            TrackingError::Rejected {
                code: "INVALID_PARAMETER_VALUE".into(),
                message: "bad".into()
            }
        );
        assert!(proxy.is_unavailable());
        assert!(busy.is_unavailable());
    }

    #[test]
    fn search_literals_escape_quotes() {
        assert_eq!(quote("it's"), r"'it\'s'");
    }
}
