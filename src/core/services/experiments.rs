use std::sync::Arc;

use tracing::info;

use crate::core::events::DomainEvent;
use crate::core::experiment::{Experiment, ExperimentFilter, NewExperiment};
use crate::core::pagination::{Page, PageRequest};
use crate::core::ports::ExperimentStore;
use crate::core::{run, Error, ExperimentId, Result, TenantId};

/// The ordering tag of experiment page tokens: newest first.
pub const EXPERIMENT_ORDERING: &str = "experiments:id DESC";

#[derive(Clone)]
pub struct ExperimentService {
    store: Arc<dyn ExperimentStore>,
}

impl ExperimentService {
    pub fn new(store: Arc<dyn ExperimentStore>) -> Self {
        Self { store }
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, experiment.name = new.name()))]
    pub async fn create(&self, tenant: TenantId, new: NewExperiment) -> Result<Experiment> {
        let experiment = Experiment::create(tenant, new, run::now());
        let events = [DomainEvent::experiment_created(&experiment)];

        self.store
            .insert_experiment(tenant, &experiment, &events)
            .await?;

        info!(experiment.id = %experiment.id, "experiment created");
        Ok(experiment)
    }

    pub async fn get(&self, tenant: TenantId, id: ExperimentId) -> Result<Experiment> {
        self.store
            .find_experiment(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("experiment", id))
    }

    pub async fn list(
        &self,
        tenant: TenantId,
        filter: &ExperimentFilter,
        page: &PageRequest,
    ) -> Result<Page<Experiment>> {
        let rows = self.store.list_experiments(tenant, filter, page).await?;

        Ok(Page::from_overfetch(
            rows,
            page,
            EXPERIMENT_ORDERING,
            |e: &Experiment| (Vec::new(), *e.id.as_uuid()),
        ))
    }
}
