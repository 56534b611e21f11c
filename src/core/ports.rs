//! The port traits: what the domain needs from storage. Adapters in `crate::adapters` implement
//! them for PostgreSQL and SQLite; the same contract tests run against both.
//!
//! Every method takes the tenant first. Implementations must scope every statement to it; the
//! PostgreSQL adapter additionally sets it for row-level security.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::core::experiment::{Experiment, ExperimentFilter};
use crate::core::pagination::PageRequest;
use crate::core::run::{LogBatch, Run};
use crate::core::run_query::RunOrder;
use crate::core::{ExperimentId, Result, RunId, TenantId};

#[async_trait]
pub trait ExperimentStore: Send + Sync + 'static {
    /// Stores a new experiment; a duplicate name for the tenant is `Error::Conflict` on `name`.
    async fn insert_experiment(&self, tenant: TenantId, experiment: &Experiment) -> Result<()>;

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
    async fn insert_run(&self, tenant: TenantId, run: &Run, batch: &LogBatch) -> Result<()>;

    async fn find_run(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
    ) -> Result<Option<Run>>;

    /// Up to `page.fetch_limit()` runs of the experiment in `order`, after `page.after`.
    async fn list_runs(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        order: &RunOrder,
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
    ) -> Result<()>;

    /// Saves a run's status, end time and name if its stored version is still
    /// `expected_version`, bumping it; otherwise `Error::Conflict` on `version`.
    async fn update_run(&self, tenant: TenantId, run: &Run, expected_version: i64) -> Result<()>;
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
