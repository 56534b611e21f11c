//! Domain events: the record of every change to an aggregate. Each is written to the outbox in
//! the same transaction as the change it describes, then relayed to Kafka as a CloudEvent.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::core::experiment::Experiment;
use crate::core::run::{LogBatch, Metric, Run, RunStatus};
use crate::core::{ExperimentId, RunId, TenantId};

/// The prefix of every event type; the version suffix lets consumers pin a payload shape.
pub const EVENT_TYPE_PREFIX: &str = "com.aumos.mlops.";

/// The kinds of aggregate that emit events. Each has its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateKind {
    Experiment,
    Run,
    Model,
    Deployment,
}

impl AggregateKind {
    pub const ALL: [AggregateKind; 4] =
        [Self::Experiment, Self::Run, Self::Model, Self::Deployment];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Experiment => "experiment",
            Self::Run => "run",
            Self::Model => "model",
            Self::Deployment => "deployment",
        }
    }

    /// The collection name used in CloudEvents subjects, such as `runs/<id>`.
    fn collection(self) -> &'static str {
        match self {
            Self::Experiment => "experiments",
            Self::Run => "runs",
            Self::Model => "models",
            Self::Deployment => "deployments",
        }
    }
}

impl fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AggregateKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("expected one of experiment, run, model, deployment; got {s:?}"))
    }
}

/// One change, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    /// Time-ordered (UUIDv7); the CloudEvents `id` consumers de-duplicate on.
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub aggregate_kind: AggregateKind,
    pub aggregate_id: Uuid,
    /// The full CloudEvents type, such as `com.aumos.mlops.run.created.v1`.
    pub event_type: String,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

impl DomainEvent {
    pub fn new(
        tenant: TenantId,
        kind: AggregateKind,
        aggregate_id: Uuid,
        change: &str,
        data: Value,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            aggregate_kind: kind,
            aggregate_id,
            event_type: format!("{EVENT_TYPE_PREFIX}{kind}.{change}.v1"),
            data,
            occurred_at,
        }
    }

    /// `experiments/<id>` or `runs/<id>`: the CloudEvents subject.
    pub fn subject(&self) -> String {
        format!("{}/{}", self.aggregate_kind.collection(), self.aggregate_id)
    }

    pub fn experiment_created(e: &Experiment) -> Self {
        let data = json!({
            "experiment_id": e.id,
            "name": e.name,
            "description": e.description,
            "tags": e.tags,
            "created_at": e.created_at,
        });
        Self::new(
            e.tenant_id,
            AggregateKind::Experiment,
            *e.id.as_uuid(),
            "created",
            data,
            e.created_at,
        )
    }

    pub fn run_created(run: &Run) -> Self {
        let data = json!({
            "run_id": run.id,
            "experiment_id": run.experiment_id,
            "name": run.name,
            "status": run.status.as_str(),
            "start_time": run.start_time,
            "end_time": run.end_time,
            "params": run.params,
            "metrics": run.metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "tags": run.tags,
        });
        Self::new(
            run.tenant_id,
            AggregateKind::Run,
            *run.id.as_uuid(),
            "created",
            data,
            run.created_at,
        )
    }

    pub fn run_batch_logged(
        tenant: TenantId,
        experiment: ExperimentId,
        run: RunId,
        batch: &LogBatch,
        at: DateTime<Utc>,
    ) -> Self {
        let data = json!({
            "run_id": run,
            "experiment_id": experiment,
            "params": batch.params,
            "metrics": batch.metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "tags": batch.tags,
        });
        Self::new(
            tenant,
            AggregateKind::Run,
            *run.as_uuid(),
            "batch_logged",
            data,
            at,
        )
    }

    /// A run's status, end time or name changed; `ended` when it reached a final status.
    pub fn run_updated(run: &Run, previous_status: RunStatus) -> Self {
        let change = if run.status.is_terminal() && !previous_status.is_terminal() {
            "ended"
        } else {
            "updated"
        };
        let data = json!({
            "run_id": run.id,
            "experiment_id": run.experiment_id,
            "name": run.name,
            "status": run.status.as_str(),
            "previous_status": previous_status.as_str(),
            "end_time": run.end_time,
        });
        Self::new(
            run.tenant_id,
            AggregateKind::Run,
            *run.id.as_uuid(),
            change,
            data,
            run.updated_at,
        )
    }
}

fn metric_json(m: &Metric) -> Value {
    json!({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp})
}

/// An event as stored in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: DomainEvent,
    /// Position in the outbox: commit order for any one aggregate.
    pub sequence: i64,
    pub published_at: Option<DateTime<Utc>>,
}

/// Filters of the audit trail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub aggregate_kind: Option<AggregateKind>,
    pub aggregate_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// What is waiting in the outbox across all tenants.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::run::{now, NewRun, NewRunInput};

    #[test]
    fn event_types_name_the_aggregate_the_change_and_a_version() {
        let new = NewRun::parse(NewRunInput::default(), now()).unwrap();
        let run = Run::create(TenantId::generate(), ExperimentId::generate(), new, now());

        let created = DomainEvent::run_created(&run);

        assert_eq!(created.event_type, "com.aumos.mlops.run.created.v1");
        assert_eq!(created.subject(), format!("runs/{}", run.id));
        assert_eq!(created.aggregate_id, *run.id.as_uuid());
        assert_eq!(created.data["status"], "RUNNING");
    }

    #[test]
    fn reaching_a_final_status_is_an_ended_event() {
        let new = NewRun::parse(NewRunInput::default(), now()).unwrap();
        let mut run = Run::create(TenantId::generate(), ExperimentId::generate(), new, now());
        run.status = RunStatus::Finished;

        let ended = DomainEvent::run_updated(&run, RunStatus::Running);
        let renamed = DomainEvent::run_updated(&run, RunStatus::Finished);

        assert_eq!(ended.event_type, "com.aumos.mlops.run.ended.v1");
        assert_eq!(renamed.event_type, "com.aumos.mlops.run.updated.v1");
    }
}
