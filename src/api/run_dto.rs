//! Request and response bodies of the run routes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::core::run::{Metric, MetricInput, NewRunInput, Run};

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
}

impl From<Run> for RunResponse {
    fn from(r: Run) -> Self {
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
    /// `metrics.<key>`, `start_time`, `end_time` or `run_name`, then `ASC` (default) or
    /// `DESC`. Without it runs come newest first.
    #[param(example = "metrics.auc DESC")]
    pub order_by: Option<String>,
}
