//! The rollout controller: drives every active deployment through its strategy.
//!
//! Each pass claims the deployments whose next look is due (a lease with `SKIP LOCKED` on
//! PostgreSQL, so replicas share the work and never hold the same deployment), then for each:
//! probes the variants' health URLs, reads the traffic reported in the analysis window,
//! applies the pure decision of `core::deployment::machine::tick`, and saves it with a check on
//! the version it read. A person's command saved in between wins: the controller's decision is
//! dropped and the deployment looked at again. A replica that dies mid-pass leaves leases that
//! expire after `AUMOS_CONTROLLER__LEASE_SECONDS`; any replica then resumes at the same step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::adapters::ChangeSignal;
use crate::core::deployment::machine::{self, Observations};
use crate::core::deployment::{Deployment, Role, TransitionKind};
use crate::core::ports::{DeploymentStore, HealthProber, RolloutQueue};
use crate::core::services::save_decision;
use crate::core::Error;
use crate::settings::ControllerSettings;
use crate::workers::{pause, worker_id, Backoff};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    kind: String,
}

/// What the controller counts for `/metrics`.
#[derive(Clone)]
pub struct RolloutMetrics {
    ticks: Counter,
    tick_seconds: Histogram,
    lag_seconds: Histogram,
    probes: Family<ProbeLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
}

fn fine_histogram() -> Histogram {
    // 0.5 ms to about 12 s in steps of 1.5x, fine enough for percentiles.
    Histogram::new(exponential_buckets(0.0005, 1.5, 26))
}

impl Default for RolloutMetrics {
    fn default() -> Self {
        Self {
            ticks: Counter::default(),
            tick_seconds: fine_histogram(),
            lag_seconds: fine_histogram(),
            probes: Family::default(),
            transitions: Family::default(),
        }
    }
}

impl RolloutMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_ticks",
            "Deployments the rollout controller looked at",
            self.ticks.clone(),
        );
        registry.register(
            "controller_tick_duration_seconds",
            "Time to probe, decide and save one deployment",
            self.tick_seconds.clone(),
        );
        registry.register(
            "controller_tick_lag_seconds",
            "How late a deployment's look started after it was due",
            self.lag_seconds.clone(),
        );
        registry.register(
            "controller_probes",
            "Health probes by outcome (healthy, unhealthy)",
            self.probes.clone(),
        );
        registry.register(
            "controller_transitions",
            "Deployment transitions decided by the controller, by kind",
            self.transitions.clone(),
        );
    }
}

pub struct RolloutController {
    queue: Arc<dyn RolloutQueue>,
    store: Arc<dyn DeploymentStore>,
    prober: Arc<dyn HealthProber>,
    signal: ChangeSignal,
    settings: ControllerSettings,
    metrics: RolloutMetrics,
    worker_id: String,
}

impl RolloutController {
    pub fn new(
        queue: Arc<dyn RolloutQueue>,
        store: Arc<dyn DeploymentStore>,
        prober: Arc<dyn HealthProber>,
        signal: ChangeSignal,
        settings: ControllerSettings,
        metrics: RolloutMetrics,
    ) -> Self {
        Self {
            queue,
            store,
            prober,
            signal,
            settings,
            metrics,
            worker_id: worker_id(),
        }
    }

    /// Drives deployments until `shutdown`; the pass in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(worker.id = %self.worker_id, "rollout controller started");
        let mut backoff = Backoff::new(Duration::from_secs(10));
        let mut failing = false;
        while !shutdown.is_cancelled() {
            let claimed = self
                .queue
                .claim_due(&self.worker_id, self.settings.batch, self.settings.lease)
                .await;
            match claimed {
                Err(error) => {
                    if !failing {
                        warn!(%error, "the rollout controller cannot claim deployments; retrying");
                        failing = true;
                    }
                    pause(backoff.next(), &shutdown).await;
                }
                Ok(claimed) if claimed.is_empty() => {
                    backoff.reset();
                    failing = false;
                    tokio::select! {
                        () = self.signal.deployments_notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Ok(claimed) => {
                    backoff.reset();
                    failing = false;
                    futures::stream::iter(claimed)
                        .for_each_concurrent(self.settings.concurrency, |d| self.drive(d))
                        .await;
                }
            }
        }
        info!(worker.id = %self.worker_id, "rollout controller stopped");
    }

    async fn drive(&self, deployment: Deployment) {
        let span = tracing::info_span!(
            "rollout_tick",
            tenant.id = %deployment.tenant_id,
            deployment.id = %deployment.id,
            deployment.strategy = %deployment.strategy(),
        );
        async {
            let started = Instant::now();
            if let Some(due) = deployment.next_tick_at {
                let lag = (chrono::Utc::now() - due).num_microseconds().unwrap_or(0);
                self.metrics.lag_seconds.observe(lag.max(0) as f64 / 1e6);
            }
            if let Err(error) = self.tick(&deployment).await {
                let (tenant, id) = (deployment.tenant_id, deployment.id);
                match &error {
                    Error::Conflict { field, .. } if field.as_deref() == Some("version") => {
                        debug!("the deployment changed meanwhile; it is looked at again");
                    }
                    _ => warn!(%error, "the controller's decision could not be made or saved; retrying"),
                }
                if let Err(error) = self.queue.release(tenant, id, &self.worker_id).await {
                    debug!(%error, "cannot release the claim; it will expire");
                }
            }
            self.metrics.ticks.inc();
            self.metrics
                .tick_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        .instrument(span)
        .await
    }

    async fn tick(&self, current: &Deployment) -> Result<(), Error> {
        let observations = self.observe(current).await?;
        let now = crate::core::run::now();
        let decision = machine::tick(current, &observations, now);
        let decision = save_decision(self.store.as_ref(), current, decision).await?;
        let deployment = &decision.deployment;
        for entry in &decision.history {
            self.metrics
                .transitions
                .get_or_create(&TransitionLabels {
                    kind: entry.kind.as_str().to_owned(),
                })
                .inc();
            let weights = deployment.state.traffic.weights(deployment.strategy());
            let reason = entry.reason.as_deref().unwrap_or_default();
            match entry.kind {
                TransitionKind::RolledBack | TransitionKind::Failed => warn!(
                    deployment.status = %entry.to_status,
                    deployment.step = entry.step,
                    reason,
                    "deployment {}",
                    entry.kind.as_str().replace('_', " ")
                ),
                TransitionKind::TrafficShifted => info!(
                    deployment.step = entry.step,
                    deployment.mirror_percent = entry.mirror_percent,
                    traffic = ?weights,
                    reason,
                    "traffic shifted"
                ),
                _ => info!(
                    deployment.status = %entry.to_status,
                    reason,
                    "deployment {}",
                    entry.kind.as_str().replace('_', " ")
                ),
            }
        }
        Ok(())
    }

    /// Probes both variants at once and reads the reports inside the analysis window.
    async fn observe(&self, d: &Deployment) -> Result<Observations, Error> {
        let candidate = self.prober.probe(&d.spec.candidate_health_url);
        let baseline = async {
            match &d.spec.baseline_health_url {
                Some(url) => Some(self.prober.probe(url).await),
                None => None,
            }
        };
        let (candidate, baseline) = tokio::join!(candidate, baseline);
        let mut probes = vec![(Role::Candidate, candidate)];
        probes.extend(baseline.map(|p| (Role::Baseline, p)));
        for (_, probe) in &probes {
            let outcome = if probe.ok { "healthy" } else { "unhealthy" };
            self.metrics
                .probes
                .get_or_create(&ProbeLabels {
                    outcome: outcome.to_owned(),
                })
                .inc();
        }
        let reports = self
            .store
            .reports_since(d.tenant_id, d.id, d.reports_from(chrono::Utc::now()))
            .await?;
        Ok(Observations { probes, reports })
    }
}
