//! The outbox relay: claims pending events, publishes them to Kafka in order per aggregate, and
//! marks each one published only after the broker acknowledged it.
//!
//! While Kafka is down the API keeps working and events wait in the outbox; the relay retries
//! with capped exponential backoff, says so once per outage (not once per event), and catches
//! up in order when the broker returns. Several replicas relay side by side: an aggregate's
//! events are claimed by one relay at a time (see `Outbox::claim`), so in the normal case
//! nothing is published twice. After a crash between publishing and marking, an event can be
//! sent again; consumers de-duplicate on `ce_id`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::adapters::ChangeSignal;
use crate::core::events::{AggregateKind, StoredEvent};
use crate::core::ports::{EventPublisher, Outbox};
use crate::settings::OutboxSettings;
use crate::workers::{pause, worker_id, Backoff, DependencyWatch};

/// How long the relay waits at shutdown for messages already handed to the producer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often published events past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    signal: ChangeSignal,
    status: DependencyWatch,
    settings: OutboxSettings,
    relay_id: String,
}

impl OutboxRelay {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        signal: ChangeSignal,
        status: DependencyWatch,
        settings: OutboxSettings,
    ) -> Self {
        let relay_id = worker_id();
        Self {
            outbox,
            publisher,
            signal,
            status,
            settings,
            relay_id,
        }
    }

    /// The relay's view of Kafka, for `/ready`.
    pub fn status(&self) -> DependencyWatch {
        self.status.clone()
    }

    /// Relays until `shutdown`, then finishes the batch in flight and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(relay.id = %self.relay_id, "outbox relay started");
        let mut backoff = Backoff::new(self.settings.max_backoff);
        let mut topics_ready = false;
        let mut next_purge = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            if !topics_ready {
                if let Err(error) = self.publisher.prepare(&AggregateKind::ALL).await {
                    self.kafka_down(&error);
                    pause(backoff.next(), &shutdown).await;
                    continue;
                }
                topics_ready = true;
            }
            if tokio::time::Instant::now() >= next_purge {
                self.purge().await;
                next_purge += PURGE_EVERY;
            }
            let lease = self.settings.lease;
            let batch = match self
                .outbox
                .claim(&self.relay_id, self.settings.batch_aggregates, lease)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    warn!(%error, "outbox relay cannot claim events; retrying");
                    pause(backoff.next(), &shutdown).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    () = self.signal.relay_notified() => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            match self.publish(&batch).await {
                Ok(count) => {
                    debug!(events = count, "events published");
                    self.kafka_up();
                    backoff.reset();
                }
                Err(error) => {
                    self.kafka_down(&error);
                    // A restarted broker may have forgotten its topics.
                    topics_ready = false;
                    pause(backoff.next(), &shutdown).await;
                }
            }
        }
        self.publisher.flush(FLUSH_TIMEOUT).await;
        info!(relay.id = %self.relay_id, "outbox relay stopped");
    }

    /// Publishes a claimed batch; acknowledged events are marked published even when others
    /// fail. After a failure, the rest of that aggregate's chain is given back unsent, so its
    /// order holds.
    async fn publish(&self, batch: &[StoredEvent]) -> Result<usize, String> {
        let outcomes = self.publisher.publish(batch).await;
        let mut published: Vec<i64> = Vec::new();
        let mut failed: Vec<i64> = Vec::new();
        let mut blocked: HashSet<Uuid> = HashSet::new();
        let mut first_error: Option<String> = None;
        for (stored, outcome) in batch.iter().zip(outcomes) {
            let aggregate = stored.event.aggregate_id;
            match outcome {
                Ok(()) if !blocked.contains(&aggregate) => published.push(stored.sequence),
                Ok(()) => failed.push(stored.sequence),
                Err(error) => {
                    blocked.insert(aggregate);
                    failed.push(stored.sequence);
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Err(error) = self.outbox.mark_published(&published).await {
            // They reached Kafka; they will be sent again and consumers drop the duplicates.
            warn!(
                %error,
                events = published.len(),
                "cannot mark published events; they will be resent"
            );
        }
        match first_error {
            None => Ok(published.len()),
            Some(error) => {
                if let Err(db) = self.outbox.release(&self.relay_id, &failed, &error).await {
                    warn!(
                        error = %db,
                        "cannot release unpublished events; their lease will expire"
                    );
                }
                Err(error)
            }
        }
    }

    fn kafka_down(&self, error: &str) {
        if self.status.mark_down(error) {
            warn!(
                kafka.error = error,
                "Kafka is unreachable; events wait in the outbox and will be retried"
            );
        }
    }

    fn kafka_up(&self) {
        if let Some(outage) = self.status.mark_up() {
            info!(
                outage_seconds = outage.num_seconds(),
                "Kafka is reachable again; publishing resumed"
            );
        }
    }

    async fn purge(&self) {
        let Some(retention) = self.settings.retention else {
            return;
        };
        let Ok(retention) = chrono::Duration::from_std(retention) else {
            return;
        };
        match self.outbox.purge_published(Utc::now() - retention).await {
            Ok(0) => {}
            Ok(deleted) => info!(events = deleted, "published events past retention deleted"),
            Err(error) => warn!(%error, "cannot delete events past retention"),
        }
    }
}
