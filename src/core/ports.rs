//! The port traits: what the domain needs from storage. Adapters in `crate::adapters` implement
//! them for PostgreSQL and SQLite; the same contract tests run against both.
//!
//! Every method takes the tenant first. Implementations must scope every statement to it; the
//! PostgreSQL adapter additionally sets it for row-level security.
//!
//! Every write takes the domain events describing it and appends them to the outbox in the
//! same transaction: if the change is refused or rolled back, so are its events. Events are
//! appended after the aggregate's row is written or locked, so for any one aggregate the
//! outbox order is the commit order.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::core::deployment::{
    Deployment, DeploymentFilter, HistoryEntry, ProbeResult, StableChange, StableVersion,
    TrafficReport,
};
use crate::core::events::{AggregateKind, Backlog, DomainEvent, EventFilter, StoredEvent};
use crate::core::experiment::{Experiment, ExperimentFilter};
use crate::core::model::{Model, Promotion};
use crate::core::pagination::PageRequest;
use crate::core::run::{LogBatch, Run};
use crate::core::run_query::RunQuery;
use crate::core::tracking::{
    ExperimentClaim, LogChunk, RegisteredVersion, RunClaim, RunSyncWork, SyncProgress, SyncTarget,
    TenantNamespace, TrackingError,
};
use crate::core::{DeploymentId, ExperimentId, ModelId, Result, RunId, TenantId};

#[async_trait]
pub trait ExperimentStore: Send + Sync + 'static {
    /// Stores a new experiment; a duplicate name for the tenant is `Error::Conflict` on `name`.
    async fn insert_experiment(
        &self,
        tenant: TenantId,
        experiment: &Experiment,
        events: &[DomainEvent],
    ) -> Result<()>;

    async fn find_experiment(
        &self,
        tenant: TenantId,
        id: ExperimentId,
    ) -> Result<Option<Experiment>>;

    /// Up to `page.fetch_limit()` experiments, newest first, after `page.after`.
    async fn list_experiments(
        &self,
        tenant: TenantId,
        filter: &ExperimentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Experiment>>;
}

#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Stores a new run with its first batch; an unknown experiment is `Error::NotFound`.
    async fn insert_run(
        &self,
        tenant: TenantId,
        run: &Run,
        batch: &LogBatch,
        events: &[DomainEvent],
    ) -> Result<()>;

    async fn find_run(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
    ) -> Result<Option<Run>>;

    /// Up to `page.fetch_limit()` runs of the experiment matching `query.filter`, in
    /// `query.order`, after `page.after`.
    async fn list_runs(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        query: &RunQuery,
        page: &PageRequest,
    ) -> Result<Vec<Run>>;

    /// Appends metrics, logs params and upserts tags in one transaction. A param already logged
    /// with a different value is `Error::Conflict` and nothing of the batch is stored; an unknown
    /// run is `Error::NotFound`.
    async fn log_batch(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
        batch: &LogBatch,
        now: DateTime<Utc>,
        events: &[DomainEvent],
    ) -> Result<()>;

    /// Saves a run's status, end time and name if its stored version is still
    /// `expected_version`, bumping it; otherwise `Error::Conflict` on `version`.
    async fn update_run(
        &self,
        tenant: TenantId,
        run: &Run,
        expected_version: i64,
        events: &[DomainEvent],
    ) -> Result<()>;
}

/// Connection pool figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// What `/ready` and `/metrics` ask of the database.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// A round trip to the database.
    async fn ping(&self) -> Result<()>;

    fn pool_stats(&self) -> PoolStats;
}

/// The tenant's audit trail: its events, oldest first.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Up to `page.fetch_limit()` events after `page.after`, in outbox order.
    async fn list_events(
        &self,
        tenant: TenantId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Vec<StoredEvent>>;
}

/// What the relay needs of the outbox. Unlike every other port these reach across tenants:
/// the relay publishes everyone's events.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims the pending events of up to `max_aggregates` aggregates for `lease`, whole
    /// chains in outbox order; an aggregate is claimed by one relay at a time.
    async fn claim(
        &self,
        relay: &str,
        max_aggregates: u32,
        lease: Duration,
    ) -> Result<Vec<StoredEvent>>;

    /// Records that the broker acknowledged the events at these outbox positions.
    async fn mark_published(&self, sequences: &[i64]) -> Result<()>;

    /// Gives claimed events back after a failed publish, recording the error.
    async fn release(&self, relay: &str, sequences: &[i64], error: &str) -> Result<()>;

    async fn backlog(&self) -> Result<Backlog>;

    /// Deletes events published before `before`; returns how many.
    async fn purge_published(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// Where published events go (Kafka).
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Makes sure the topics of these aggregate kinds exist.
    async fn prepare(&self, kinds: &[AggregateKind]) -> Result<(), String>;

    /// Publishes events in order and reports each one's outcome once the broker has
    /// acknowledged or refused it.
    async fn publish(&self, events: &[StoredEvent]) -> Vec<Result<(), String>>;

    /// Waits up to `timeout` for messages still in flight.
    async fn flush(&self, timeout: Duration);
}

/// What the MLflow sync worker needs of the store. Claims reach across tenants (the worker
/// copies everyone's data); everything else runs inside the owning tenant's scope.
#[async_trait]
pub trait MlflowSyncStore: Send + Sync + 'static {
    /// Leases up to `max` experiments that MLflow is behind on and that are due, counting an
    /// attempt on each.
    async fn claim_experiments(
        &self,
        worker: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Vec<ExperimentClaim>>;

    /// Leases up to `max` runs that MLflow is behind on and that are due.
    async fn claim_runs(&self, worker: &str, max: u32, lease: Duration) -> Result<Vec<RunClaim>>;

    /// The run as stored, its experiment's MLflow id, and up to `max_metrics` metric values
    /// not yet sent. `None` when the run no longer exists.
    async fn run_sync_work(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
        max_metrics: u32,
    ) -> Result<Option<RunSyncWork>>;

    /// Records the MLflow id of an object as soon as MLflow created it.
    async fn set_mlflow_id(&self, tenant: TenantId, target: SyncTarget, id: &str) -> Result<()>;

    /// Records a successful attempt and gives the lease back.
    async fn record_synced(
        &self,
        tenant: TenantId,
        target: SyncTarget,
        progress: SyncProgress,
    ) -> Result<()>;

    /// Records a failed attempt with its error; the next one is due at `retry_at`.
    async fn record_failure(
        &self,
        tenant: TenantId,
        target: SyncTarget,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<()>;

    /// Gives a lease back without an attempt having been made (the worker stopped early).
    async fn release(&self, tenant: TenantId, target: SyncTarget) -> Result<()>;

    /// How many experiments and runs MLflow is behind on, across tenants.
    async fn sync_backlog(&self) -> Result<Backlog>;
}

/// An MLflow tracking server and model registry, addressed within one tenant's namespace.
#[async_trait]
pub trait TrackingServer: Send + Sync + 'static {
    /// The MLflow id of the experiment, creating it (tagged with the tenant and the
    /// service's id) if needed. An MLflow experiment of that name that the service did not
    /// create for this experiment is refused.
    async fn ensure_experiment(
        &self,
        ns: &TenantNamespace,
        experiment: &Experiment,
    ) -> Result<String, TrackingError>;

    /// The MLflow run created earlier for `run`, if any (found by its tag).
    async fn find_run(
        &self,
        ns: &TenantNamespace,
        mlflow_experiment: &str,
        run: RunId,
    ) -> Result<Option<String>, TrackingError>;

    /// Creates the MLflow run, with the run's name, start time and tags.
    async fn create_run(
        &self,
        ns: &TenantNamespace,
        mlflow_experiment: &str,
        run: &Run,
    ) -> Result<String, TrackingError>;

    /// One `runs/log-batch` request.
    async fn log_batch(
        &self,
        ns: &TenantNamespace,
        mlflow_run: &str,
        chunk: &LogChunk,
    ) -> Result<(), TrackingError>;

    /// Mirrors the run's status, end time and name.
    async fn update_run(
        &self,
        ns: &TenantNamespace,
        mlflow_run: &str,
        run: &Run,
    ) -> Result<(), TrackingError>;

    /// Registers the model logged by `mlflow_run` as a version of `model_name` (creating
    /// the registered model if needed) and points `alias` at it. A version registered from
    /// the same run before is reused rather than registered twice.
    async fn register_model_version(
        &self,
        ns: &TenantNamespace,
        model_name: &str,
        mlflow_run: &str,
        alias: &str,
    ) -> Result<RegisteredVersion, TrackingError>;

    /// Whether MLflow answers.
    async fn health(&self) -> Result<(), TrackingError>;
}

/// Registered models and their versions.
#[async_trait]
pub trait ModelStore: Send + Sync + 'static {
    /// Records a promotion in one transaction: the tenant's model of that name (created with
    /// `proposed_model_id` if it has none), the version (once), the alias now pointing at it,
    /// and the event `Promotion::event` makes for the model's id. Returns the model as stored.
    async fn record_promotion(&self, promotion: &Promotion) -> Result<Model>;

    async fn find_model(&self, tenant: TenantId, id: ModelId) -> Result<Option<Model>>;

    /// Up to `page.fetch_limit()` models, newest first, after `page.after`.
    async fn list_models(&self, tenant: TenantId, page: &PageRequest) -> Result<Vec<Model>>;
}

/// Deployments, their history, and the traffic the serving layer reports for them.
#[async_trait]
pub trait DeploymentStore: Send + Sync + 'static {
    /// Stores a new deployment with its first history entries and their events. Another
    /// active deployment of the same model in the same environment is `Error::Conflict` on
    /// `target_environment`, naming it.
    async fn insert_deployment(
        &self,
        deployment: &Deployment,
        history: &[HistoryEntry],
        events: &[DomainEvent],
    ) -> Result<()>;

    async fn find_deployment(
        &self,
        tenant: TenantId,
        id: DeploymentId,
    ) -> Result<Option<Deployment>>;

    /// Up to `page.fetch_limit()` deployments, newest first, after `page.after`.
    async fn list_deployments(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Vec<Deployment>>;

    /// Saves a decision if the stored version is still `expected_version` (otherwise
    /// `Error::Conflict` on `version`): writes `deployment` (whose `version` the caller has
    /// bumped), releases any controller claim, appends the history and its events, applies the
    /// stable-version change, and drops reports older than the analysis window.
    async fn save_deployment(
        &self,
        deployment: &Deployment,
        expected_version: i64,
        history: &[HistoryEntry],
        stable: Option<StableChange>,
        events: &[DomainEvent],
    ) -> Result<()>;

    /// Up to `page.fetch_limit()` history entries, oldest first, after `page.after`.
    async fn list_history(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<Vec<HistoryEntry>>;

    /// Stores a traffic report of the deployment's serving layer.
    async fn insert_report(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        report: &TrafficReport,
    ) -> Result<()>;

    /// The reports received since `since`.
    async fn reports_since(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        since: DateTime<Utc>,
    ) -> Result<Vec<TrafficReport>>;

    /// The model's stable version in the environment, if a deployment made one.
    async fn stable_version(
        &self,
        tenant: TenantId,
        model: ModelId,
        environment: &str,
    ) -> Result<Option<StableVersion>>;

    /// The active deployment of the model in the environment, if any.
    async fn active_deployment(
        &self,
        tenant: TenantId,
        model: ModelId,
        environment: &str,
    ) -> Result<Option<DeploymentId>>;
}

/// What the rollout controller needs beyond the store. Claims reach across tenants: the
/// controller drives everyone's deployments.
#[async_trait]
pub trait RolloutQueue: Send + Sync + 'static {
    /// Leases up to `max` deployments whose next look is due, most overdue first.
    async fn claim_due(&self, worker: &str, max: u32, lease: Duration) -> Result<Vec<Deployment>>;

    /// Gives a claim back without a decision; the deployment is due again at once.
    async fn release(&self, tenant: TenantId, id: DeploymentId, worker: &str) -> Result<()>;
}

/// Probes a variant's health endpoint: a 2xx answer within the timeout is healthy.
#[async_trait]
pub trait HealthProber: Send + Sync + 'static {
    async fn probe(&self, url: &str) -> ProbeResult;
}
