//! Mirroring experiments and runs into an MLflow tracking server.
//!
//! The service's database is the record; MLflow is a copy that data scientists browse with
//! MLflow's own UI and clients. Each experiment and run carries its MLflow id and how far the
//! copy is behind. Every write bumps an aggregate's `version`; the copy is in sync once the
//! version it was last brought to has caught up.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::core::run::{Metric, Run};
use crate::core::{ExperimentId, RunId, TenantId};

/// MLflow's limits on one `runs/log-batch` request.
pub const MLFLOW_MAX_METRICS_PER_REQUEST: usize = 1000;
pub const MLFLOW_MAX_PARAMS_PER_REQUEST: usize = 100;
pub const MLFLOW_MAX_TAGS_PER_REQUEST: usize = 100;
pub const MLFLOW_MAX_ITEMS_PER_REQUEST: usize = 1000;

/// Tags the service puts on every MLflow object it creates.
pub const TENANT_TAG: &str = "aumos.tenant_id";
pub const EXPERIMENT_TAG: &str = "aumos.experiment_id";
pub const RUN_TAG: &str = "aumos.run_id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Changed since the last copy; no attempt has failed since.
    Pending,
    /// MLflow holds the latest version.
    Synced,
    /// The last attempt failed; it will be retried.
    Failed,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Synced => "synced",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an experiment or run stands in MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowLink {
    /// MLflow's id for the object, once it was created there.
    pub id: Option<String>,
    pub state: SyncState,
    pub last_error: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
}

impl Default for MlflowLink {
    /// A new aggregate: not yet in MLflow.
    fn default() -> Self {
        Self {
            id: None,
            state: SyncState::Pending,
            last_error: None,
            synced_at: None,
        }
    }
}

impl MlflowLink {
    /// The link as stored: in sync when the synced version caught up with the aggregate's.
    pub fn from_stored(
        id: Option<String>,
        version: i64,
        synced_version: i64,
        last_error: Option<String>,
        synced_at: Option<DateTime<Utc>>,
    ) -> Self {
        let state = if synced_version >= version {
            SyncState::Synced
        } else if last_error.is_some() {
            SyncState::Failed
        } else {
            SyncState::Pending
        };
        Self {
            id,
            state,
            last_error,
            synced_at,
        }
    }
}

/// Where one tenant's objects live in MLflow. Either every name carries the tenant (one
/// shared MLflow namespace), or the tenant has a workspace of its own (MLflow servers run with
/// workspaces enabled), where names stay as the tenant chose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNamespace {
    pub tenant: TenantId,
    /// The `X-MLFLOW-WORKSPACE` to send, in workspace mode.
    pub workspace: Option<String>,
}

impl TenantNamespace {
    pub fn new(tenant: TenantId, workspaces: bool) -> Self {
        Self {
            tenant,
            // MLflow workspace names are lowercase letters, digits and inner hyphens.
            workspace: workspaces.then(|| format!("tenant-{tenant}")),
        }
    }

    /// `<tenant>/<name>`, or the name itself inside the tenant's workspace.
    pub fn experiment_name(&self, name: &str) -> String {
        match self.workspace {
            Some(_) => name.to_owned(),
            None => format!("{}/{name}", self.tenant),
        }
    }

    /// `<tenant>.<name>` (MLflow refuses `/` in model names), or the name itself inside the
    /// tenant's workspace.
    pub fn model_name(&self, name: &str) -> String {
        match self.workspace {
            Some(_) => name.to_owned(),
            None => format!("{}.{name}", self.tenant),
        }
    }
}

/// An experiment claimed for copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExperimentClaim {
    pub tenant: TenantId,
    pub id: ExperimentId,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// A run claimed for copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunClaim {
    pub tenant: TenantId,
    pub experiment: ExperimentId,
    pub id: RunId,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// What is still to be copied of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSyncWork {
    /// The run as stored now; `version` is what the copy reaches once this work is done.
    pub run: Run,
    /// The run's experiment's MLflow id, once the experiment is there.
    pub experiment_mlflow_id: Option<String>,
    /// Metric values not yet sent, in the order they were logged.
    pub metrics: Vec<Metric>,
    /// The sequence number of the last of `metrics` (or the current mark when there are none).
    pub metric_seq: i64,
    /// More metrics wait beyond `metrics`: this pass copies only part of the run.
    pub more_metrics: bool,
}

impl RunSyncWork {
    /// The work from the metric rows read after `mark`, in sequence order: at most
    /// `max_metrics` of them are taken, and one more row read means more remain.
    pub fn assemble(
        run: Run,
        experiment_mlflow_id: Option<String>,
        mark: i64,
        mut pending: Vec<(i64, Metric)>,
        max_metrics: u32,
    ) -> Self {
        let limit = usize::try_from(max_metrics).unwrap_or(usize::MAX);
        let more_metrics = pending.len() > limit;
        pending.truncate(limit);
        let metric_seq = pending.last().map_or(mark, |(seq, _)| *seq);
        Self {
            run,
            experiment_mlflow_id,
            metrics: pending.into_iter().map(|(_, m)| m).collect(),
            metric_seq,
            more_metrics,
        }
    }
}

/// What to record after an attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    /// The version the copy reached, or `None` when it is still behind (part of a run).
    pub version: Option<i64>,
    /// For runs: the last metric sent.
    pub metric_seq: Option<i64>,
}

/// The object a sync record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTarget {
    Experiment(ExperimentId),
    Run(RunId),
}

/// One `runs/log-batch` request's worth of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogChunk {
    pub metrics: Vec<Metric>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

impl LogChunk {
    fn len(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }
}

/// Splits params, tags and metrics into requests within MLflow's limits, keeping the metrics
/// in their order. Params and tags go first, so a run's identity is in MLflow before its
/// metric history.
pub fn chunk_for_mlflow(
    metrics: &[Metric],
    params: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
) -> Vec<LogChunk> {
    let mut chunks = Vec::new();
    let mut current = LogChunk::default();
    let mut params = params.iter().peekable();
    let mut tags = tags.iter().peekable();
    let mut metrics = metrics.iter().peekable();
    loop {
        let room = MLFLOW_MAX_ITEMS_PER_REQUEST.saturating_sub(current.len());
        if room > 0 && current.params.len() < MLFLOW_MAX_PARAMS_PER_REQUEST {
            if let Some((k, v)) = params.next() {
                current.params.push((k.clone(), v.clone()));
                continue;
            }
        }
        if room > 0 && current.tags.len() < MLFLOW_MAX_TAGS_PER_REQUEST {
            if let Some((k, v)) = tags.next() {
                current.tags.push((k.clone(), v.clone()));
                continue;
            }
        }
        if room > 0 && current.metrics.len() < MLFLOW_MAX_METRICS_PER_REQUEST {
            if let Some(m) = metrics.next() {
                current.metrics.push(m.clone());
                continue;
            }
        }
        let more = params.peek().is_some() || tags.peek().is_some() || metrics.peek().is_some();
        if current.len() > 0 {
            chunks.push(std::mem::take(&mut current));
        }
        if !more {
            return chunks;
        }
    }
}

/// Why a call to MLflow failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingError {
    /// MLflow could not be reached or answered with a server error: try again later.
    Unavailable(String),
    /// MLflow refused the request (`error_code` and message): the data or the namespace is at
    /// fault, and retrying unchanged will not help soon.
    Rejected { code: String, message: String },
}

impl TrackingError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl fmt::Display for TrackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(reason) => write!(f, "MLflow is unavailable: {reason}"),
            Self::Rejected { code, message } => write!(f, "MLflow refused: {code}: {message}"),
        }
    }
}

impl std::error::Error for TrackingError {}

/// A model version registered in MLflow's model registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    /// The registered model's full name in MLflow (namespaced).
    pub name: String,
    pub version: i64,
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn metrics(n: usize) -> Vec<Metric> {
        (0..n)
            .map(|i| Metric {
                key: format!("m{}", i % 7),
                value: i as f64,
                step: i as i64,
                timestamp: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
            })
            .collect()
    }

    fn map(prefix: &str, n: usize) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("{prefix}{i:04}"), "v".into()))
            .collect()
    }

    #[test]
    fn a_small_run_fits_one_request() {
        let chunks = chunk_for_mlflow(&metrics(10), &map("p", 5), &map("t", 3));

        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 18);
    }

    #[test]
    fn large_runs_are_split_within_every_limit_and_keep_metric_order() {
        let all = metrics(2500);
        let chunks = chunk_for_mlflow(&all, &map("p", 250), &map("t", 120));

        for chunk in &chunks {
            assert!(chunk.params.len() <= MLFLOW_MAX_PARAMS_PER_REQUEST);
            assert!(chunk.tags.len() <= MLFLOW_MAX_TAGS_PER_REQUEST);
            assert!(chunk.metrics.len() <= MLFLOW_MAX_METRICS_PER_REQUEST);
            assert!(chunk.len() <= MLFLOW_MAX_ITEMS_PER_REQUEST);
        }
        let sent: Vec<Metric> = chunks.iter().flat_map(|c| c.metrics.clone()).collect();
        assert_eq!(sent, all);
        assert_eq!(chunks.iter().map(|c| c.params.len()).sum::<usize>(), 250);
        assert_eq!(chunks.iter().map(|c| c.tags.len()).sum::<usize>(), 120);
    }

    #[test]
    fn nothing_to_send_is_no_request() {
        assert!(chunk_for_mlflow(&[], &BTreeMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_link_is_synced_when_its_version_caught_up_and_failed_while_an_error_stands() {
        let synced = MlflowLink::from_stored(Some("7".into()), 3, 3, None, None);
        let failed = MlflowLink::from_stored(None, 2, 0, Some("down".into()), None);
        let pending = MlflowLink::from_stored(Some("7".into()), 4, 3, None, None);

        assert_eq!(synced.state, SyncState::Synced);
        assert_eq!(failed.state, SyncState::Failed);
        assert_eq!(pending.state, SyncState::Pending);
    }

    #[test]
    fn names_carry_the_tenant_unless_it_has_a_workspace() {
        let tenant = TenantId::generate();
        let shared = TenantNamespace::new(tenant, false);
        let own = TenantNamespace::new(tenant, true);

        assert_eq!(shared.experiment_name("churn"), format!("{tenant}/churn"));
        assert_eq!(shared.model_name("churn"), format!("{tenant}.churn"));
        assert_eq!(own.experiment_name("churn"), "churn");
        assert_eq!(own.workspace, Some(format!("tenant-{tenant}")));
    }
}
