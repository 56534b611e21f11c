//! Request and response bodies of the run routes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::core::run::{Metric, MetricInput, NewRunInput, Run};
use crate::core::tracking::MlflowLink;

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RunStatus)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatusSchema {
    Running,
    Finished,
    Failed,
    Killed,
}

/// One metric value to log.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricRequest {
    #[schema(example = "val_loss")]
    pub key: String,
    /// A finite number.
    #[schema(example = 0.231)]
    pub value: f64,
    /// Training step; 0 when absent.
    #[serde(default)]
    pub step: Option<i64>,
    /// When the value was measured; the time of the request when absent.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

impl From<MetricRequest> for MetricInput {
    fn from(m: MetricRequest) -> Self {
        Self {
            key: m.key,
            value: m.value,
            step: m.step,
            timestamp: m.timestamp,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricResponse {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp: DateTime<Utc>,
}

impl From<Metric> for MetricResponse {
    fn from(m: Metric) -> Self {
        Self {
            key: m.key,
            value: m.value,
            step: m.step,
            timestamp: m.timestamp,
        }
    }
}

/// A new run. Without `status` it starts RUNNING; with FINISHED, FAILED or KILLED it is stored
/// complete (its `end_time` defaults to now).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// Generated when absent.
    #[serde(default)]
    #[schema(example = "xgboost-depth-6")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<RunStatusSchema>)]
    pub status: Option<String>,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// At most 100; values up to 6000 characters; immutable once logged.
    #[serde(default)]
    #[schema(example = json!({"max_depth": "6", "learning_rate": "0.1"}))]
    pub params: BTreeMap<String, String>,
    /// At most 1000 per request.
    #[serde(default)]
    pub metrics: Vec<MetricRequest>,
    /// At most 100 per request.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl From<CreateRunRequest> for NewRunInput {
    fn from(r: CreateRunRequest) -> Self {
        Self {
            name: r.name,
            status: r.status,
            start_time: r.start_time,
            end_time: r.end_time,
            metrics: r.metrics.into_iter().map(Into::into).collect(),
            params: r.params,
            tags: r.tags,
        }
    }
}

/// Metrics to append, params to log (once each) and tags to set, with MLflow's limits.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatchRequest {
    #[serde(default)]
    pub metrics: Vec<MetricRequest>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRunRequest {
    #[serde(default)]
    #[schema(value_type = Option<RunStatusSchema>)]
    pub status: Option<String>,
    /// Defaults to now when the run ends.
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    pub id: Uuid,
    pub experiment_id: Uuid,
    pub name: String,
    #[schema(value_type = RunStatusSchema)]
    pub status: String,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub params: BTreeMap<String, String>,
    /// The latest value of each metric (highest step, then latest timestamp).
    pub metrics: Vec<MetricResponse>,
    pub tags: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// The run's copy in MLflow; absent when MLflow is turned off.
    pub mlflow: Option<MlflowSyncResponse>,
}

impl RunResponse {
    /// The response for `run`, with its MLflow copy when MLflow is on.
    pub fn of(r: Run, mlflow_on: bool) -> Self {
        let mlflow = mlflow_on.then(|| MlflowSyncResponse::run(&r.mlflow));
        Self {
            id: r.id.into(),
            experiment_id: r.experiment_id.into(),
            name: r.name,
            status: r.status.as_str().to_owned(),
            start_time: r.start_time,
            end_time: r.end_time,
            params: r.params,
            metrics: r.metrics.into_iter().map(Into::into).collect(),
            tags: r.tags,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            mlflow,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunResponse>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// MLflow search syntax, comparisons joined by `and`: `metrics.<key>` with
    /// `= != > >= < <=` and a number; `params.<key>`, `tags.<key>`, `attributes.status` and
    /// `attributes.run_name` with `=` or `!=` and a quoted string; `attributes.start_time` and
    /// `attributes.end_time` with a number of milliseconds since the epoch.
    #[param(
        example = "metrics.auc > 0.8 and params.model = 'xgboost' and attributes.status = 'FINISHED'"
    )]
    pub filter: Option<String>,
    /// Up to 5 comma-separated keys, each `metrics.<key>`, `params.<key>`, `tags.<key>`,
    /// `start_time`, `end_time` or `run_name`, then `ASC` (default) or `DESC`. Runs without a
    /// value come last. Without it runs come newest first.
    #[param(example = "metrics.auc DESC, start_time DESC")]
    pub order_by: Option<String>,
    /// Comma-separated metric keys: only these metrics are returned (empty: none).
    #[param(example = "auc,loss")]
    pub metric_keys: Option<String>,
    /// Comma-separated param keys: only these params are returned (empty: none).
    #[param(example = "model,max_depth")]
    pub param_keys: Option<String>,
}

/// Which columns of each run a listing returns: `None` keeps all.
#[derive(Debug, Clone, Default)]
pub struct RunColumns {
    pub metric_keys: Option<Vec<String>>,
    pub param_keys: Option<Vec<String>>,
}

impl RunColumns {
    /// Parses comma-separated key lists.
    pub fn parse(metric_keys: Option<&str>, param_keys: Option<&str>) -> Self {
        let keys = |text: &str| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Self {
            metric_keys: metric_keys.map(keys),
            param_keys: param_keys.map(keys),
        }
    }

    /// Drops the metrics and params that were not asked for.
    pub fn apply(&self, run: &mut RunResponse) {
        if let Some(keys) = &self.metric_keys {
            run.metrics.retain(|m| keys.contains(&m.key));
        }
        if let Some(keys) = &self.param_keys {
            run.params.retain(|k, _| keys.contains(k));
        }
    }
}

/// Where an experiment or run stands in MLflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct MlflowSyncResponse {
    /// MLflow's experiment id (on experiments), once created there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// MLflow's run id (on runs), once created there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `pending` (changed since the last copy), `synced`, or `failed` (the last attempt
    /// failed with `last_error`; it is retried).
    #[schema(example = "synced")]
    pub sync_state: &'static str,
    pub last_error: Option<String>,
    /// When the last copy succeeded.
    pub synced_at: Option<DateTime<Utc>>,
}

impl MlflowSyncResponse {
    pub fn experiment(link: &MlflowLink) -> Self {
        Self {
            experiment_id: link.id.clone(),
            run_id: None,
            sync_state: link.state.as_str(),
            last_error: link.last_error.clone(),
            synced_at: link.synced_at,
        }
    }

    pub fn run(link: &MlflowLink) -> Self {
        Self {
            experiment_id: None,
            run_id: link.id.clone(),
            sync_state: link.state.as_str(),
            last_error: link.last_error.clone(),
            synced_at: link.synced_at,
        }
    }
}
