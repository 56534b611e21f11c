use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::core::model::{Direction, Model, Promotion, PromotionRequest};
use crate::core::pagination::{Page, PageRequest};
use crate::core::ports::{ExperimentStore, ModelStore, RunStore, TrackingServer};
use crate::core::run::{self, Run, RunStatus};
use crate::core::run_query::{
    Comparator, Condition, FilterField, FilterValue, RunFilter, RunOrder, RunQuery, RunSortKey,
    SortTerm,
};
use crate::core::tracking::{SyncState, TenantNamespace, TrackingError};
use crate::core::{Error, ExperimentId, ModelId, Result, RunId, TenantId};

pub const MODEL_ORDERING: &str = "models:id DESC";

/// How often a promotion looks again whether its run reached MLflow.
const SYNC_POLL: Duration = Duration::from_millis(200);

/// The outcome of a promotion: the model as stored and the version just promoted.
#[derive(Debug, Clone, PartialEq)]
pub struct Promoted {
    pub model: Model,
    pub version: i64,
    pub alias: String,
    pub run: Run,
}

#[derive(Clone)]
pub struct ModelService {
    models: Arc<dyn ModelStore>,
    experiments: Arc<dyn ExperimentStore>,
    runs: Arc<dyn RunStore>,
    /// `None` when MLflow is turned off: nothing can be registered then.
    tracking: Option<Arc<dyn TrackingServer>>,
    workspaces: bool,
    sync_wait: Duration,
}

impl ModelService {
    pub fn new(
        models: Arc<dyn ModelStore>,
        experiments: Arc<dyn ExperimentStore>,
        runs: Arc<dyn RunStore>,
        tracking: Option<Arc<dyn TrackingServer>>,
        workspaces: bool,
        sync_wait: Duration,
    ) -> Self {
        Self {
            models,
            experiments,
            runs,
            tracking,
            workspaces,
            sync_wait,
        }
    }

    /// Registers the model of a FINISHED run as a new version in MLflow's registry, points the
    /// alias at it and records it. A run not yet in MLflow is waited for, briefly.
    #[tracing::instrument(
        skip_all,
        fields(tenant.id = %tenant, run.id = %run_id, model.name = %request.model_name)
    )]
    pub async fn promote(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        run_id: RunId,
        request: PromotionRequest,
    ) -> Result<Promoted> {
        let tracking = self.tracking()?;
        self.require_experiment(tenant, experiment).await?;
        let run = self.find_run(tenant, experiment, run_id).await?;
        if run.status != RunStatus::Finished {
            return Err(Error::conflict(
                "run",
                format!(
                    "run {run_id} is {}; only a FINISHED run can be promoted",
                    run.status
                ),
            ));
        }
        let (run, mlflow_run_id) = self.wait_for_mlflow(run).await?;
        let ns = TenantNamespace::new(tenant, self.workspaces);
        let registered = tracking
            .register_model_version(&ns, &request.model_name, &mlflow_run_id, &request.alias)
            .await
            .map_err(registry_error)?;
        let promotion = Promotion {
            tenant,
            proposed_model_id: ModelId::generate(),
            model_name: request.model_name,
            alias: request.alias,
            run_id,
            experiment_id: experiment,
            mlflow_run_id,
            registered,
            at: run::now(),
        };
        let model = self.models.record_promotion(&promotion).await?;
        info!(
            model.id = %model.id,
            model.version = promotion.registered.version,
            model.alias = %promotion.alias,
            "run promoted to a model version"
        );
        Ok(Promoted {
            model,
            version: promotion.registered.version,
            alias: promotion.alias,
            run,
        })
    }

    /// Promotes the FINISHED run with the best value of `metric` among those matching
    /// `filter`.
    pub async fn promote_best(
        &self,
        tenant: TenantId,
        experiment: ExperimentId,
        metric: &str,
        direction: Direction,
        mut filter: RunFilter,
        request: PromotionRequest,
    ) -> Result<Promoted> {
        self.tracking()?;
        self.require_experiment(tenant, experiment).await?;
        filter.conditions.push(Condition {
            field: FilterField::Status,
            comparator: Comparator::Eq,
            value: FilterValue::Text(RunStatus::Finished.as_str().to_owned()),
        });
        let query = RunQuery {
            filter,
            order: RunOrder {
                terms: vec![SortTerm {
                    key: RunSortKey::Metric(metric.to_owned()),
                    descending: direction == Direction::Max,
                }],
            },
        };
        let best = self
            .runs
            .list_runs(tenant, experiment, &query, &PageRequest::first(1))
            .await?
            .into_iter()
            .next()
            .filter(|r| r.metrics.iter().any(|m| m.key == metric))
            .ok_or_else(|| {
                Error::conflict(
                    "metric",
                    format!(
                        "no FINISHED run of experiment {experiment} matching the filter has \
                         metric {metric:?}"
                    ),
                )
            })?;
        self.promote(tenant, experiment, best.id, request).await
    }

    pub async fn get(&self, tenant: TenantId, id: ModelId) -> Result<Model> {
        self.models
            .find_model(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("model", id))
    }

    pub async fn list(&self, tenant: TenantId, page: &PageRequest) -> Result<Page<Model>> {
        let rows = self.models.list_models(tenant, page).await?;
        Ok(Page::from_overfetch(
            rows,
            page,
            MODEL_ORDERING,
            |m: &Model| (Vec::new(), *m.id.as_uuid()),
        ))
    }

    fn tracking(&self) -> Result<&Arc<dyn TrackingServer>> {
        self.tracking.as_ref().ok_or_else(|| {
            Error::conflict(
                "model_name",
                "MLflow is turned off (AUMOS_MLOPS_MLFLOW_TRACKING_URI is empty); promotion \
                 registers models in MLflow's model registry",
            )
        })
    }

    async fn require_experiment(&self, tenant: TenantId, experiment: ExperimentId) -> Result<()> {
        match self.experiments.find_experiment(tenant, experiment).await? {
            Some(_) => Ok(()),
            None => Err(Error::not_found("experiment", experiment)),
        }
    }

    async fn find_run(&self, tenant: TenantId, experiment: ExperimentId, id: RunId) -> Result<Run> {
        self.runs
            .find_run(tenant, experiment, id)
            .await?
            .ok_or_else(|| Error::not_found("run", id))
    }

    /// The run once MLflow holds its latest version (or at least the run itself, when the
    /// wait runs out); a run MLflow does not have yet after the wait is a conflict.
    async fn wait_for_mlflow(&self, mut run: Run) -> Result<(Run, String)> {
        let deadline = tokio::time::Instant::now() + self.sync_wait;
        loop {
            if run.mlflow.state == SyncState::Synced {
                if let Some(id) = run.mlflow.id.clone() {
                    return Ok((run, id));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(id) = run.mlflow.id.clone() {
                    return Ok((run, id));
                }
                let reason = match &run.mlflow.last_error {
                    Some(error) => format!("its last copy attempt failed: {error}"),
                    None => "its copy is still pending".to_owned(),
                };
                return Err(Error::conflict(
                    "run",
                    format!(
                        "run {} has not reached MLflow yet ({reason}); retry once its \
                         mlflow.sync_state is synced",
                        run.id
                    ),
                ));
            }
            tokio::time::sleep(SYNC_POLL).await;
            run = self
                .find_run(run.tenant_id, run.experiment_id, run.id)
                .await?;
        }
    }
}

/// MLflow down is worth a retry (503); a refusal names the model as the field at fault.
fn registry_error(error: TrackingError) -> Error {
    match error {
        TrackingError::Unavailable(_) => Error::Unavailable(error.to_string()),
        TrackingError::Rejected { message, .. } => Error::conflict("model_name", message),
    }
}
