//! Adapters: the ports of `crate::core` implemented against real systems.

pub mod http_probe;
pub mod kafka;
pub mod mlflow;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

/// Wakes this process's background workers (the outbox relay, the MLflow sync, the rollout
/// controller) as soon as a transaction that changed something commits, so they do not wait
/// for their next poll. Workers of other replicas find the change by polling.
#[derive(Debug, Clone, Default)]
pub struct ChangeSignal {
    relay: Arc<tokio::sync::Notify>,
    mlflow: Arc<tokio::sync::Notify>,
    deployments: Arc<tokio::sync::Notify>,
}

impl ChangeSignal {
    /// Called after a commit that appended events (every change appends one).
    pub fn notify(&self) {
        self.relay.notify_one();
        self.mlflow.notify_one();
    }

    /// Completes at the next `notify` (or at once if one came since the last wait).
    pub async fn relay_notified(&self) {
        self.relay.notified().await;
    }

    /// The same, for the MLflow sync worker.
    pub async fn mlflow_notified(&self) {
        self.mlflow.notified().await;
    }

    /// Called after a commit that made a deployment due now (created, or commanded).
    pub fn notify_deployments(&self) {
        self.deployments.notify_one();
    }

    /// Completes at the next `notify_deployments`.
    pub async fn deployments_notified(&self) {
        self.deployments.notified().await;
    }
}
