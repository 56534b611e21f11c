//! The MLflow sync worker: copies experiments and runs into MLflow after the API committed
//! them, so the API never waits for MLflow.
//!
//! It claims what MLflow is behind on with a lease (several replicas work side by side), then
//! per run: makes sure the experiment exists, creates the MLflow run once (recording its id at
//! once, and looking for a run created by an interrupted earlier attempt before creating
//! another), logs the params, tags and the metric values not yet sent with `runs/log-batch`
//! within MLflow's limits, and mirrors status, end time and name. Only then does it record the
//! version it reached, so a failure anywhere means the next attempt redoes the same work;
//! MLflow ignores a metric value logged twice with the same key, step, timestamp and value,
//! and accepts a param logged again with the same value.
//!
//! While MLflow is unreachable the worker stops after the first failure of a pass, backs off
//! (capped), says so once per outage, and catches up when MLflow answers again. A refusal by
//! MLflow is recorded on that experiment or run and retried later with its own backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::adapters::ChangeSignal;
use crate::core::ports::{ExperimentStore, MlflowSyncStore, TrackingServer};
use crate::core::tracking::{
    chunk_for_mlflow, ExperimentClaim, RunClaim, SyncProgress, SyncTarget, TenantNamespace,
    TrackingError,
};
use crate::core::Error;
use crate::settings::MlflowSettings;
use crate::workers::{pause, worker_id, Backoff, DependencyWatch};

/// Metric values sent per run and pass; a run with more is copied over several passes.
const MAX_METRICS_PER_PASS: u32 = 10_000;
/// The longest wait before retrying something MLflow refused.
const MAX_REFUSAL_BACKOFF: Duration = Duration::from_secs(3600);

/// Why one item could not be copied.
#[derive(Debug)]
enum SyncError {
    Tracking(TrackingError),
    Store(Error),
}

impl From<TrackingError> for SyncError {
    fn from(e: TrackingError) -> Self {
        Self::Tracking(e)
    }
}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

/// How a pass ended.
enum PassOutcome {
    /// Items handled (copied, or refused and recorded).
    Done(usize),
    /// MLflow is unreachable; the rest of the pass was given back.
    Unavailable(String),
    /// The database failed.
    StoreFailed(Error),
}

pub struct MlflowSync {
    store: Arc<dyn MlflowSyncStore>,
    experiments: Arc<dyn ExperimentStore>,
    tracking: Arc<dyn TrackingServer>,
    signal: ChangeSignal,
    status: DependencyWatch,
    settings: MlflowSettings,
    worker_id: String,
}

impl MlflowSync {
    pub fn new(
        store: Arc<dyn MlflowSyncStore>,
        experiments: Arc<dyn ExperimentStore>,
        tracking: Arc<dyn TrackingServer>,
        signal: ChangeSignal,
        status: DependencyWatch,
        settings: MlflowSettings,
    ) -> Self {
        Self {
            store,
            experiments,
            tracking,
            signal,
            status,
            settings,
            worker_id: worker_id(),
        }
    }

    /// Copies until `shutdown`; the item in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(worker.id = %self.worker_id, "MLflow sync started");
        let mut backoff = Backoff::new(self.settings.max_backoff);
        while !shutdown.is_cancelled() {
            match self.pass(&shutdown).await {
                PassOutcome::Done(0) => {
                    backoff.reset();
                    tokio::select! {
                        () = self.signal.mlflow_notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                PassOutcome::Done(handled) => {
                    backoff.reset();
                    debug!(items = handled, "MLflow sync pass done");
                }
                PassOutcome::Unavailable(error) => {
                    if self.status.mark_down(&error) {
                        warn!(
                            mlflow.error = %error,
                            "MLflow is unreachable; runs wait in the database and will be copied \
                             when it answers"
                        );
                    }
                    pause(backoff.next(), &shutdown).await;
                }
                PassOutcome::StoreFailed(error) => {
                    warn!(%error, "MLflow sync cannot read its work from the database; retrying");
                    pause(backoff.next(), &shutdown).await;
                }
            }
        }
        info!(worker.id = %self.worker_id, "MLflow sync stopped");
    }

    async fn pass(&self, shutdown: &CancellationToken) -> PassOutcome {
        let batch = self.settings.sync_batch;
        let lease = self.settings.lease;
        let experiments = match self
            .store
            .claim_experiments(&self.worker_id, batch, lease)
            .await
        {
            Ok(claims) => claims,
            Err(e) => return PassOutcome::StoreFailed(e),
        };
        let runs = match self.store.claim_runs(&self.worker_id, batch, lease).await {
            Ok(claims) => claims,
            Err(e) => {
                let claimed = experiments
                    .iter()
                    .map(|c| (c.tenant, SyncTarget::Experiment(c.id)))
                    .collect();
                self.give_back(claimed).await;
                return PassOutcome::StoreFailed(e);
            }
        };
        let outage = AtomicBool::new(false);
        let first_outage: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let store_failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
        let mut handled = 0;

        let note = |result: Result<bool, SyncError>| match result {
            Ok(done) => usize::from(done),
            Err(SyncError::Tracking(e)) => {
                outage.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = first_outage.lock() {
                    slot.get_or_insert_with(|| e.to_string());
                }
                0
            }
            Err(SyncError::Store(e)) => {
                outage.store(true, Ordering::SeqCst);
                if let Ok(mut slot) = store_failure.lock() {
                    slot.get_or_insert(e);
                }
                0
            }
        };

        let skipped = Skipped::default();
        for claim in experiments {
            let skip = outage.load(Ordering::SeqCst) || shutdown.is_cancelled();
            handled += note(self.experiment(claim, skip, &skipped).await);
        }
        let results: Vec<Result<bool, SyncError>> = futures::stream::iter(runs)
            .map(|claim| {
                let skip = outage.load(Ordering::SeqCst) || shutdown.is_cancelled();
                self.run_claim(claim, skip, &outage, &skipped)
            })
            .buffer_unordered(self.settings.sync_concurrency)
            .collect()
            .await;
        for result in results {
            handled += note(result);
        }

        let outage_error = first_outage.into_inner().ok().flatten();
        // Items skipped because MLflow is down show that error, so the API can say why their
        // copy is behind; items skipped for a shutdown or a database failure are given back.
        match &outage_error {
            Some(error) => self.mark_waiting(skipped.take(), error).await,
            None => self.give_back(skipped.take()).await,
        }
        if let Some(error) = store_failure.into_inner().ok().flatten() {
            return PassOutcome::StoreFailed(error);
        }
        if let Some(error) = outage_error {
            return PassOutcome::Unavailable(error);
        }
        if handled > 0 {
            if let Some(outage) = self.status.mark_up() {
                info!(
                    outage_seconds = outage.num_seconds(),
                    "MLflow answers again; copying resumed"
                );
            }
        }
        PassOutcome::Done(handled)
    }

    /// Copies one claimed experiment; `Ok(true)` when handled, `Err` for an outage. A skipped
    /// claim is put on `skipped`, to be settled once the pass knows why it stopped.
    async fn experiment(
        &self,
        claim: ExperimentClaim,
        skip: bool,
        skipped: &Skipped,
    ) -> Result<bool, SyncError> {
        let target = SyncTarget::Experiment(claim.id);
        if skip {
            skipped.push(claim.tenant, target);
            return Ok(false);
        }
        let span = tracing::info_span!(
            "mlflow_sync_experiment",
            tenant.id = %claim.tenant,
            experiment.id = %claim.id,
            attempt = claim.attempts,
        );
        let result = async {
            let Some(experiment) = self
                .experiments
                .find_experiment(claim.tenant, claim.id)
                .await?
            else {
                self.store.release(claim.tenant, target).await?;
                return Ok(());
            };
            let ns = self.namespace(claim.tenant);
            let mlflow_id = self.tracking.ensure_experiment(&ns, &experiment).await?;
            if experiment.mlflow.id.as_deref() != Some(mlflow_id.as_str()) {
                self.store
                    .set_mlflow_id(claim.tenant, target, &mlflow_id)
                    .await?;
            }
            let progress = SyncProgress {
                version: Some(experiment.version),
                metric_seq: None,
            };
            self.store
                .record_synced(claim.tenant, target, progress)
                .await?;
            info!(mlflow.experiment_id = %mlflow_id, "experiment copied to MLflow");
            Ok(())
        }
        .instrument(span.clone())
        .await;
        self.settle(claim.tenant, target, claim.attempts, result)
            .instrument(span)
            .await
    }

    async fn run_claim(
        &self,
        claim: RunClaim,
        skip: bool,
        outage: &AtomicBool,
        skipped: &Skipped,
    ) -> Result<bool, SyncError> {
        let target = SyncTarget::Run(claim.id);
        if skip || outage.load(Ordering::SeqCst) {
            skipped.push(claim.tenant, target);
            return Ok(false);
        }
        let span = tracing::info_span!(
            "mlflow_sync_run",
            tenant.id = %claim.tenant,
            experiment.id = %claim.experiment,
            run.id = %claim.id,
            attempt = claim.attempts,
        );
        let result = self.copy_run(claim).instrument(span.clone()).await;
        self.settle(claim.tenant, target, claim.attempts, result)
            .instrument(span)
            .await
    }

    async fn copy_run(&self, claim: RunClaim) -> Result<(), SyncError> {
        let target = SyncTarget::Run(claim.id);
        let Some(work) = self
            .store
            .run_sync_work(
                claim.tenant,
                claim.experiment,
                claim.id,
                MAX_METRICS_PER_PASS,
            )
            .await?
        else {
            self.store.release(claim.tenant, target).await?;
            return Ok(());
        };
        let ns = self.namespace(claim.tenant);
        let mlflow_experiment = match work.experiment_mlflow_id.clone() {
            Some(id) => id,
            None => self.experiment_for_run(&ns, claim).await?,
        };
        let mlflow_run = match work.run.mlflow.id.clone() {
            Some(id) => id,
            None => {
                // An earlier attempt may have created the run and died before recording it.
                let earlier = if claim.attempts > 1 {
                    self.tracking
                        .find_run(&ns, &mlflow_experiment, claim.id)
                        .await?
                } else {
                    None
                };
                let id = match earlier {
                    Some(id) => id,
                    None => {
                        self.tracking
                            .create_run(&ns, &mlflow_experiment, &work.run)
                            .await?
                    }
                };
                self.store.set_mlflow_id(claim.tenant, target, &id).await?;
                id
            }
        };
        let chunks = chunk_for_mlflow(&work.metrics, &work.run.params, &work.run.tags);
        for chunk in &chunks {
            self.tracking.log_batch(&ns, &mlflow_run, chunk).await?;
        }
        self.tracking
            .update_run(&ns, &mlflow_run, &work.run)
            .await?;
        let progress = SyncProgress {
            version: (!work.more_metrics).then_some(work.run.version),
            metric_seq: Some(work.metric_seq),
        };
        self.store
            .record_synced(claim.tenant, target, progress)
            .await?;
        info!(
            mlflow.run_id = %mlflow_run,
            metrics = work.metrics.len(),
            requests = chunks.len(),
            complete = !work.more_metrics,
            "run copied to MLflow"
        );
        Ok(())
    }

    /// The MLflow id of a run's experiment that has not been copied yet: copies it now.
    async fn experiment_for_run(
        &self,
        ns: &TenantNamespace,
        claim: RunClaim,
    ) -> Result<String, SyncError> {
        let experiment = self
            .experiments
            .find_experiment(claim.tenant, claim.experiment)
            .await?
            .ok_or_else(|| Error::not_found("experiment", claim.experiment))?;
        let id = self.tracking.ensure_experiment(ns, &experiment).await?;
        let target = SyncTarget::Experiment(claim.experiment);
        self.store.set_mlflow_id(claim.tenant, target, &id).await?;
        Ok(id)
    }

    /// Records how an attempt ended. Refusals are recorded and retried later; an outage is
    /// recorded on the item and reported to the pass, which stops.
    async fn settle(
        &self,
        tenant: crate::core::TenantId,
        target: SyncTarget,
        attempts: i32,
        result: Result<(), SyncError>,
    ) -> Result<bool, SyncError> {
        match result {
            Ok(()) => Ok(true),
            Err(SyncError::Tracking(TrackingError::Unavailable(reason))) => {
                let error = TrackingError::Unavailable(reason);
                let message = error.to_string();
                self.store
                    .record_failure(tenant, target, &message, Utc::now())
                    .await?;
                Err(SyncError::Tracking(error))
            }
            Err(SyncError::Tracking(refused)) => {
                let message = refused.to_string();
                let wait = refusal_backoff(attempts);
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
                warn!(
                    error = %message,
                    retry_in_seconds = wait.as_secs(),
                    "MLflow refused the copy; it will be retried"
                );
                self.store
                    .record_failure(tenant, target, &message, retry_at)
                    .await?;
                Ok(true)
            }
            Err(SyncError::Store(e)) => {
                self.give_back(vec![(tenant, target)]).await;
                Err(SyncError::Store(e))
            }
        }
    }

    /// Records the outage (`error`, as MLflow's failure reads) on items the pass did not get
    /// to and gives their leases back; they are due again as soon as MLflow answers (the
    /// worker's own backoff paces the retries).
    async fn mark_waiting(&self, items: Vec<(crate::core::TenantId, SyncTarget)>, error: &str) {
        for (tenant, target) in items {
            let recorded = self
                .store
                .record_failure(tenant, target, error, Utc::now())
                .await;
            if let Err(error) = recorded {
                debug!(
                    %error,
                    "cannot record the MLflow outage on a sync item; its lease will expire"
                );
            }
        }
    }

    /// Gives leases back unworked; a failure here only delays the items until the lease ends.
    async fn give_back(&self, items: Vec<(crate::core::TenantId, SyncTarget)>) {
        for (tenant, target) in items {
            if let Err(error) = self.store.release(tenant, target).await {
                debug!(%error, "cannot release an MLflow sync lease; it will expire");
            }
        }
    }

    fn namespace(&self, tenant: crate::core::TenantId) -> TenantNamespace {
        TenantNamespace::new(tenant, self.settings.workspaces)
    }
}

/// Claims a pass did not work on.
#[derive(Default)]
struct Skipped(std::sync::Mutex<Vec<(crate::core::TenantId, SyncTarget)>>);

impl Skipped {
    fn push(&self, tenant: crate::core::TenantId, target: SyncTarget) {
        if let Ok(mut items) = self.0.lock() {
            items.push((tenant, target));
        }
    }

    fn take(&self) -> Vec<(crate::core::TenantId, SyncTarget)> {
        self.0
            .lock()
            .map(|mut items| std::mem::take(&mut *items))
            .unwrap_or_default()
    }
}

/// 30 s after the first refusal, doubling with each further one, at most an hour.
fn refusal_backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    (Duration::from_secs(30) * 2u32.pow(exponent)).min(MAX_REFUSAL_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_from_half_a_minute_to_an_hour() {
        assert_eq!(refusal_backoff(1), Duration::from_secs(30));
        assert_eq!(refusal_backoff(2), Duration::from_secs(60));
        assert_eq!(refusal_backoff(50), MAX_REFUSAL_BACKOFF);
    }
}
