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

use crate::core::events::{AggregateKind, Backlog, DomainEvent, EventFilter, StoredEvent};
use crate::core::experiment::{Experiment, ExperimentFilter};
use crate::core::pagination::PageRequest;
use crate::core::run::{LogBatch, Run};
use crate::core::run_query::RunOrder;
use crate::core::{ExperimentId, Result, RunId, TenantId};

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
