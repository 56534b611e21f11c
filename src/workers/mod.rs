//! Background loops. Each takes the shared shutdown token and is safe to run on several
//! replicas at once.

pub mod mlflow_sync;
pub mod outbox_relay;
pub mod rollout_controller;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// What a worker last saw of the external system it feeds, for `/ready`.
#[derive(Debug, Clone, PartialEq)]
pub enum DependencyState {
    /// Not contacted yet.
    Starting,
    Up,
    Down {
        since: DateTime<Utc>,
        error: String,
    },
}

/// A worker's view of its dependency, shared with the readiness probe.
#[derive(Debug, Clone)]
pub struct DependencyWatch(Arc<RwLock<DependencyState>>);

impl Default for DependencyWatch {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(DependencyState::Starting)))
    }
}

impl DependencyWatch {
    pub fn get(&self) -> DependencyState {
        match self.0.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records a failure; `true` when this starts an outage (so it is reported once).
    pub fn mark_down(&self, error: &str) -> bool {
        let mut slot = match self.0.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let since = match &*slot {
            DependencyState::Down { since, .. } => Some(*since),
            _ => None,
        };
        *slot = DependencyState::Down {
            since: since.unwrap_or_else(Utc::now),
            error: error.to_owned(),
        };
        since.is_none()
    }

    /// Records a success; the length of the outage it ends, if it ends one.
    pub fn mark_up(&self) -> Option<chrono::Duration> {
        let mut slot = match self.0.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let previous = std::mem::replace(&mut *slot, DependencyState::Up);
        match previous {
            DependencyState::Down { since, .. } => Some(Utc::now() - since),
            _ => None,
        }
    }
}

/// A name for this worker instance, unique across replicas: host, process and a random tag.
pub(crate) fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Sleeps for `duration` unless shutdown comes first.
pub(crate) async fn pause(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Exponential backoff from 250 ms up to a cap, with a little jitter so replicas drift apart.
pub(crate) struct Backoff {
    current: Duration,
    cap: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_millis(250);

    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            current: Self::START,
            cap,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.cap);
        let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
        (wait + jitter).min(self.cap)
    }

    pub(crate) fn reset(&mut self) {
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

    #[test]
    fn an_outage_is_reported_once_and_its_length_when_it_ends() {
        let status = DependencyWatch::default();

        assert!(status.mark_down("refused"));
        assert!(!status.mark_down("refused again"));
        assert!(
            matches!(status.get(), DependencyState::Down { error, .. } if error == "refused again")
        );
        assert!(status.mark_up().is_some());
        assert!(status.mark_up().is_none());
    }
}
