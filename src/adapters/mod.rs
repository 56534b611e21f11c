//! Adapters: the ports of `crate::core` implemented against real systems.

pub mod kafka;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

/// Wakes the outbox relay of this process as soon as a transaction with events commits, so
/// events do not wait for the next poll. Relays of other replicas find them by polling.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<tokio::sync::Notify>);

impl OutboxSignal {
    /// Called after a commit that appended events.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Completes at the next `notify` (or at once if one came since the last wait).
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}
