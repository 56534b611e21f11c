//! Creating deployments, applying people's commands to them, and taking in the traffic the
//! serving layer reports. The controller (`workers::rollout_controller`) does the rest.

use std::sync::Arc;

use tracing::{info, warn};
use uuid::Uuid;

use crate::core::deployment::analysis::TrafficReportInput;
use crate::core::deployment::machine::{self, Command, Decision, StableChange};
use crate::core::deployment::spec::NewDeploymentInput;
use crate::core::deployment::{
    active_conflict, Deployment, DeploymentDefaults, DeploymentFilter, HistoryEntry, NewDeployment,
    RolloutState, Status, TrafficReport, TransitionKind,
};
use crate::core::pagination::{Page, PageRequest, SortValue};
use crate::core::ports::{DeploymentStore, ModelStore};
use crate::core::{run, DeploymentId, Error, Result, TenantId};

/// The ordering tag of deployment page tokens: newest first.
pub const DEPLOYMENT_ORDERING: &str = "deployments:id DESC";
/// The ordering tag of history page tokens: oldest first.
pub const HISTORY_ORDERING: &str = "deployment_history:id ASC";

/// How often a command is retried when the controller saved a step in between.
const COMMAND_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct DeploymentService {
    store: Arc<dyn DeploymentStore>,
    models: Arc<dyn ModelStore>,
    defaults: Arc<DeploymentDefaults>,
}

/// Saves a decision about `current` with its history and events, checking that `current` is
/// still the stored version; returns the decision with the deployment as saved. Used for
/// people's commands and the controller's ticks alike.
pub async fn save_decision(
    store: &dyn DeploymentStore,
    current: &Deployment,
    mut decision: Decision,
) -> Result<Decision> {
    decision.deployment.version = current.version + 1;
    let events: Vec<_> = decision
        .history
        .iter()
        .map(|h| h.event(&decision.deployment))
        .collect();
    store
        .save_deployment(
            &decision.deployment,
            current.version,
            &decision.history,
            decision.stable,
            &events,
        )
        .await?;
    Ok(decision)
}

/// The actor recorded for a person's request.
pub fn user_actor(subject: &str) -> String {
    format!("user:{subject}")
}

impl DeploymentService {
    pub fn new(
        store: Arc<dyn DeploymentStore>,
        models: Arc<dyn ModelStore>,
        defaults: DeploymentDefaults,
    ) -> Self {
        Self {
            store,
            models,
            defaults: Arc::new(defaults),
        }
    }

    /// Validates the request, checks the model version exists and nothing else is active
    /// for that model in that environment, and stores the deployment as `pending`.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn create(
        &self,
        tenant: TenantId,
        subject: &str,
        input: NewDeploymentInput,
    ) -> Result<Deployment> {
        let new = NewDeployment::parse(input, &self.defaults)?;
        let model = self
            .models
            .find_model(tenant, new.model_id)
            .await?
            .ok_or_else(|| {
                Error::invalid(
                    "model_id",
                    format!(
                        "no model {} was promoted for this tenant; promote a run first",
                        new.model_id
                    ),
                )
            })?;
        if !model
            .versions
            .iter()
            .any(|v| v.version == new.model_version)
        {
            let known: Vec<String> = model
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            return Err(Error::invalid(
                "model_version",
                format!(
                    "model {} has no version {}; its versions are {}",
                    model.name,
                    new.model_version,
                    known.join(", ")
                ),
            ));
        }
        if let Some(active) = self
            .store
            .active_deployment(tenant, new.model_id, &new.target_environment)
            .await?
        {
            return Err(active_conflict(active, &new.target_environment));
        }
        let stable = self
            .store
            .stable_version(tenant, new.model_id, &new.target_environment)
            .await?;
        if stable.is_some_and(|s| s.version == new.model_version) {
            return Err(Error::conflict(
                "model_version",
                format!(
                    "version {} already serves as the stable version in {}",
                    new.model_version, new.target_environment
                ),
            ));
        }
        let now = run::now();
        let deployment = Deployment {
            id: DeploymentId::generate(),
            tenant_id: tenant,
            model_id: new.model_id,
            model_version: new.model_version,
            baseline_version: stable.map(|s| s.version),
            target_environment: new.target_environment,
            state: RolloutState::initial(&new.spec),
            spec: new.spec,
            status: Status::Pending,
            created_by: subject.to_owned(),
            created_at: now,
            updated_at: now,
            version: 1,
            next_tick_at: Some(now),
        };
        let created = HistoryEntry {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            deployment_id: deployment.id,
            at: now,
            kind: TransitionKind::Created,
            actor: user_actor(subject),
            from_status: Status::Pending,
            to_status: Status::Pending,
            traffic: deployment.state.traffic,
            mirror_percent: 0,
            step: 0,
            reason: None,
            evidence: None,
            outcome: None,
        };
        let events = [created.event(&deployment)];

        self.store
            .insert_deployment(&deployment, &[created], &events)
            .await?;

        info!(
            deployment.id = %deployment.id,
            model.id = %deployment.model_id,
            model.version = deployment.model_version,
            deployment.environment = %deployment.target_environment,
            deployment.strategy = %deployment.strategy(),
            "deployment created"
        );
        Ok(deployment)
    }

    pub async fn get(&self, tenant: TenantId, id: DeploymentId) -> Result<Deployment> {
        self.store
            .find_deployment(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("deployment", id))
    }

    pub async fn list(
        &self,
        tenant: TenantId,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> Result<Page<Deployment>> {
        let rows = self.store.list_deployments(tenant, filter, page).await?;
        Ok(Page::from_overfetch(
            rows,
            page,
            DEPLOYMENT_ORDERING,
            |d: &Deployment| (Vec::new(), *d.id.as_uuid()),
        ))
    }

    /// The deployment (a 404 for another tenant's) and one page of its decisions.
    pub async fn history(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        page: &PageRequest,
    ) -> Result<(Deployment, Page<HistoryEntry>)> {
        let deployment = self.get(tenant, id).await?;
        let rows = self.store.list_history(tenant, id, page).await?;
        let page = Page::from_overfetch(rows, page, HISTORY_ORDERING, |h: &HistoryEntry| {
            (Vec::<SortValue>::new(), h.id)
        });
        Ok((deployment, page))
    }

    /// Applies a pause, resume, promote or rollback, retrying when the controller saved a
    /// step in between (the command is then judged again on the newer state).
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, deployment.id = %id))]
    pub async fn apply(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        command: Command,
        subject: &str,
    ) -> Result<Deployment> {
        let actor = user_actor(subject);
        for _ in 0..COMMAND_ATTEMPTS {
            let current = self.get(tenant, id).await?;
            let decision = machine::command(&current, &command, &actor, run::now())?;
            self.check_stable(&current, &decision).await?;
            match self.save(&current, decision).await {
                Ok(saved) => {
                    let level_warn = saved.status == Status::RolledBack;
                    if level_warn {
                        warn!(
                            deployment.status = %saved.status,
                            reason = saved.state.reason.as_deref().unwrap_or_default(),
                            "deployment rolled back by a person"
                        );
                    } else {
                        info!(
                            deployment.status = %saved.status,
                            ?command,
                            "deployment command applied"
                        );
                    }
                    return Ok(saved);
                }
                Err(Error::Conflict { field, .. }) if field.as_deref() == Some("version") => {
                    continue;
                }
                Err(other) => return Err(other),
            }
        }
        Err(Error::conflict(
            "version",
            "the deployment kept changing while the command was applied; try again",
        ))
    }

    /// A command on a deployment that already ended must not undo a later deployment, nor
    /// put its candidate in place of a version that became stable after it ended.
    async fn check_stable(&self, current: &Deployment, decision: &Decision) -> Result<()> {
        if current.status.is_active() {
            return Ok(());
        }
        let (tenant, model, env) = (
            current.tenant_id,
            current.model_id,
            current.target_environment.as_str(),
        );
        if let Some(active) = self.store.active_deployment(tenant, model, env).await? {
            return Err(active_conflict(active, env));
        }
        if let Some(StableChange::Adopt { version }) = decision.stable {
            let serving = self
                .store
                .stable_version(tenant, model, env)
                .await?
                .map(|s| s.version);
            if serving != current.baseline_version {
                return Err(Error::conflict(
                    "status",
                    format!(
                        "the stable version in {env} changed after this deployment ended; \
                         deploy version {version} anew instead"
                    ),
                ));
            }
        }
        if let Some(StableChange::Revert { .. }) = decision.stable {
            // Whoever recorded it, a rollback undoes this deployment's version only while
            // that version is the one serving.
            let serving = self
                .store
                .stable_version(tenant, model, env)
                .await?
                .map(|s| s.version);
            if serving != Some(current.model_version) {
                return Err(Error::conflict(
                    "status",
                    format!(
                        "version {} of this deployment no longer serves in {env}; roll back \
                         the deployment that replaced it instead",
                        current.model_version
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn save(&self, current: &Deployment, decision: Decision) -> Result<Deployment> {
        Ok(save_decision(self.store.as_ref(), current, decision)
            .await?
            .deployment)
    }

    /// Takes in what the serving layer observed of one variant.
    pub async fn report(
        &self,
        tenant: TenantId,
        id: DeploymentId,
        input: TrafficReportInput,
    ) -> Result<TrafficReport> {
        let deployment = self.get(tenant, id).await?;
        let report = TrafficReport::parse(deployment.strategy(), input, run::now())?;
        if !deployment.status.is_active() {
            return Err(Error::conflict(
                "status",
                format!(
                    "the deployment is {}; reports are analysed only while it is active",
                    deployment.status
                ),
            ));
        }
        self.store.insert_report(tenant, id, &report).await?;
        Ok(report)
    }
}
