use std::sync::Arc;

use tracing::{info, warn};

use crate::core::events::DomainEvent;
use crate::core::pagination::{Page, PageRequest};
use crate::core::ports::{ExperimentStore, RunStore};
use crate::core::run::{self, LogBatch, NewRun, Run, RunUpdate};
use crate::core::run_query::RunQuery;
use crate::core::{Error, ExperimentId, Result, RunId, TenantId};

/// How often an update is retried when another writer changed the run in between.
const UPDATE_ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct RunService {
    experiments: Arc<dyn ExperimentStore>,
    runs: Arc<dyn RunStore>,
}

impl RunService {
    pub fn new(experiments: Arc<dyn ExperimentStore>, runs: Arc<dyn RunStore>) -> Self {
        Self { experiments, runs }
    }

    /// The tag of run page tokens for `query`: a token only continues the listing it came from.
    pub fn ordering_tag(query: &RunQuery) -> String {
        format!("runs:{}", query.describe())
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, experiment.id = %experiment))]
    pub async fn create(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        new: NewRun,
    ) -> Result<Run> {
        let batch = new.batch.clone();
        let run = Run::create(tenant, experiment, new, run::now());
        let events = [DomainEvent::run_created(&run)];

        self.runs.insert_run(tenant, &run, &batch, &events).await?;

        info!(run.id = %run.id, run.status = %run.status, "run created");
        Ok(run)
    }

    pub async fn get(&self, tenant: TenantId, experiment: ExperimentId, id: RunId) -> Result<Run> {
        self.runs
            .find_run(tenant, experiment, id)
            .await?
            .ok_or_else(|| Error::not_found("run", id))
    }

    pub async fn list(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        query: &RunQuery,
        page: &PageRequest,
    ) -> Result<Page<Run>> {
        if self
            .experiments
            .find_experiment(tenant, experiment)
            .await?
            .is_none()
        {
            return Err(Error::not_found("experiment", experiment));
        }

        let rows = self.runs.list_runs(tenant, experiment, query, page).await?;

        let ordering = Self::ordering_tag(query);
        Ok(Page::from_overfetch(rows, page, &ordering, |r: &Run| {
            (query.order.sort_values(r), *r.id.as_uuid())
        }))
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, run.id = %id))]
    pub async fn log_batch(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        id: RunId,
        batch: LogBatch,
    ) -> Result<Run> {
        if !batch.is_empty() {
            let now = run::now();
            let events = [DomainEvent::run_batch_logged(
                tenant, experiment, id, &batch, now,
            )];
            self.runs
                .log_batch(tenant, experiment, id, &batch, now, &events)
                .await?;
        }

        self.get(tenant, experiment, id).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, run.id = %id))]
    pub async fn update(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        id: RunId,
        update: RunUpdate,
    ) -> Result<Run> {
        for attempt in 1..=UPDATE_ATTEMPTS {
            let mut run = self.get(tenant, experiment, id).await?;
            let (version, previous_status) = (run.version, run.status);
            if !run.apply(&update, run::now())? {
                return Ok(run);
            }
            let events = [DomainEvent::run_updated(&run, previous_status)];
            match self.runs.update_run(tenant, &run, version, &events).await {
                Ok(()) => {
                    run.version = version + 1;
                    info!(run.status = %run.status, "run updated");
                    return Ok(run);
                }
                Err(Error::Conflict { field, .. })
                    if field.as_deref() == Some("version") && attempt < UPDATE_ATTEMPTS =>
                {
                    warn!(attempt, "run changed while updating it; retrying");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(
            "version",
            "the run is being changed by others; try again",
        ))
    }
}
