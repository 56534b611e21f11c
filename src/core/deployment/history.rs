//! The record of a deployment: every transition with its evidence, and the event each one
//! publishes. `traffic_shifted` is the instruction the serving layer follows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::core::deployment::analysis::Evidence;
use crate::core::deployment::machine::Outcome;
use crate::core::deployment::{Deployment, Status, TrafficSplit};
use crate::core::events::{AggregateKind, DomainEvent};
use crate::core::{DeploymentId, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    Created,
    TrafficShifted,
    Paused,
    Resumed,
    Promoted,
    Succeeded,
    RolledBack,
    Failed,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::TrafficShifted => "traffic_shifted",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::Promoted => "promoted",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
        }
    }
}

/// One decision about a deployment, with what it was based on.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Time-ordered (UUIDv7); also the id of the event it published.
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub deployment_id: DeploymentId,
    pub at: DateTime<Utc>,
    pub kind: TransitionKind,
    /// `controller`, or `user:<token subject>` for a person's command.
    pub actor: String,
    pub from_status: Status,
    pub to_status: Status,
    /// The traffic once the transition took effect.
    pub traffic: TrafficSplit,
    pub mirror_percent: u8,
    pub step: u32,
    pub reason: Option<String>,
    pub evidence: Option<Evidence>,
    pub outcome: Option<Outcome>,
}

impl HistoryEntry {
    /// The event this transition publishes, `com.aumos.mlops.deployment.<kind>.v1`.
    pub fn event(&self, deployment: &Deployment) -> DomainEvent {
        let strategy = deployment.strategy();
        let mut data = json!({
            "deployment_id": deployment.id,
            "model_id": deployment.model_id,
            "model_version": deployment.model_version,
            "baseline_version": deployment.baseline_version,
            "target_environment": deployment.target_environment,
            "strategy": strategy.as_str(),
            "status": self.to_status.as_str(),
            "previous_status": self.from_status.as_str(),
            "traffic_split": self.traffic.weights(strategy),
            "mirror_percent": self.mirror_percent,
            "step": self.step,
            "actor": self.actor,
            "reason": self.reason,
            "evidence": self.evidence,
        });
        if let Some(outcome) = &self.outcome {
            data["outcome"] = json!(outcome);
        }
        if self.kind == TransitionKind::Created {
            data["analysis"] = json!(deployment.spec.analysis);
        }
        DomainEvent {
            id: self.id,
            tenant_id: self.tenant_id,
            aggregate_kind: AggregateKind::Deployment,
            aggregate_id: *self.deployment_id.as_uuid(),
            event_type: format!(
                "{}deployment.{}.v1",
                crate::core::events::EVENT_TYPE_PREFIX,
                self.kind.as_str()
            ),
            data,
            occurred_at: self.at,
        }
    }
}
