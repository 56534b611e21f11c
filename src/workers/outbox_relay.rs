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
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::adapters::OutboxSignal;
use crate::core::events::{AggregateKind, StoredEvent};
use crate::core::ports::{EventPublisher, Outbox};
use crate::settings::OutboxSettings;

/// How long the relay waits at shutdown for messages already handed to the producer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often published events past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// What the relay last saw of Kafka, for `/ready`.
#[derive(Debug, Clone, PartialEq)]
pub enum KafkaState {
    /// Not contacted yet.
    Starting,
    Up,
    Down {
        since: DateTime<Utc>,
        error: String,
    },
}

/// Shared view of the relay's state.
#[derive(Debug, Clone)]
pub struct RelayStatus(Arc<RwLock<KafkaState>>);

impl Default for RelayStatus {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(KafkaState::Starting)))
    }
}

impl RelayStatus {
    pub fn get(&self) -> KafkaState {
        match self.0.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, state: KafkaState) -> KafkaState {
        match self.0.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, state),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), state),
        }
    }
}

pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    signal: OutboxSignal,
    status: RelayStatus,
    settings: OutboxSettings,
    relay_id: String,
}

impl OutboxRelay {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        signal: OutboxSignal,
        status: RelayStatus,
        settings: OutboxSettings,
    ) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "relay".to_owned());
        let relay_id = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
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
    pub fn status(&self) -> RelayStatus {
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
                    () = self.signal.notified() => {}
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
            warn!(%error, events = published.len(), "cannot mark published events; they will be resent");
        }
        match first_error {
            None => Ok(published.len()),
            Some(error) => {
                if let Err(db) = self.outbox.release(&self.relay_id, &failed, &error).await {
                    warn!(error = %db, "cannot release unpublished events; their lease will expire");
                }
                Err(error)
            }
        }
    }

    fn kafka_down(&self, error: &str) {
        let previous = self.status.set(KafkaState::Down {
            since: Utc::now(),
            error: error.to_owned(),
        });
        match previous {
            KafkaState::Down { since, .. } => {
                // Still the same outage: keep its start, say nothing new.
                self.status.set(KafkaState::Down {
                    since,
                    error: error.to_owned(),
                });
            }
            _ => warn!(
                kafka.error = error,
                "Kafka is unreachable; events wait in the outbox and will be retried"
            ),
        }
    }

    fn kafka_up(&self) {
        if let KafkaState::Down { since, .. } = self.status.set(KafkaState::Up) {
            let seconds = (Utc::now() - since).num_seconds();
            info!(
                outage_seconds = seconds,
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

/// Sleeps for `duration` unless shutdown comes first.
async fn pause(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Exponential backoff from 250 ms up to a cap, with a little jitter so replicas drift apart.
struct Backoff {
    current: Duration,
    cap: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_millis(250);

    fn new(cap: Duration) -> Self {
        Self {
            current: Self::START,
            cap,
        }
    }

    fn next(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.cap);
        let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
        (wait + jitter).min(self.cap)
    }

    fn reset(&mut self) {
        self.current = Self::START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(2));

        let waits: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        backoff.reset();

        assert!(waits[0] < Duration::from_millis(600));
        assert_eq!(waits[5], Duration::from_secs(2));
        assert!(backoff.next() < Duration::from_millis(600));
    }
}
