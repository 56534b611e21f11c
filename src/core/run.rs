//! The run aggregate: one training attempt with its params, metrics and tags, following MLflow's
//! model (status, start and end time, params immutable once logged, metric history by step).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::core::names::{self, MAX_PARAM_VALUE_LENGTH, MAX_RUN_TAG_VALUE_LENGTH};
use crate::core::tracking::MlflowLink;
use crate::core::validation::Validator;
use crate::core::{Error, ExperimentId, Result, RunId, TenantId};

/// MLflow's per-request limits, enforced before anything is stored.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 100;
pub const MAX_TAGS_PER_BATCH: usize = 100;

/// Timestamps are kept to the millisecond, as MLflow keeps them, so both stores and MLflow
/// agree on every value.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// The current time at millisecond precision.
pub fn now() -> DateTime<Utc> {
    truncate_to_millis(Utc::now())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [Self::Running, Self::Finished, Self::Failed, Self::Killed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        }
    }

    /// A terminal run has ended; its status no longer changes.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("expected one of RUNNING, FINISHED, FAILED, KILLED, got {s:?}"))
    }
}

/// One logged value of a metric at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp: DateTime<Utc>,
}

impl Metric {
    /// MLflow's order for "latest": highest step, then latest timestamp, then highest value.
    pub fn is_newer_than(&self, other: &Metric) -> bool {
        (self.step, self.timestamp)
            .cmp(&(other.step, other.timestamp))
            .then_with(|| {
                self.value
                    .partial_cmp(&other.value)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            == std::cmp::Ordering::Greater
    }
}

/// An unvalidated metric as a client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInput {
    pub key: String,
    pub value: f64,
    pub step: Option<i64>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// Metrics, params and tags validated against MLflow's limits, ready to store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    pub metrics: Vec<Metric>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl LogBatch {
    /// Validates a batch; `prefix` is put before field paths (empty for a top-level batch).
    pub fn parse(
        v: &mut Validator,
        metrics: Vec<MetricInput>,
        params: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Self {
        v.ensure(
            metrics.len() <= MAX_METRICS_PER_BATCH,
            "metrics",
            format!(
                "at most {MAX_METRICS_PER_BATCH} metrics per request, got {}",
                metrics.len()
            ),
        );
        v.ensure(
            params.len() <= MAX_PARAMS_PER_BATCH,
            "params",
            format!(
                "at most {MAX_PARAMS_PER_BATCH} params per request, got {}",
                params.len()
            ),
        );
        v.ensure(
            tags.len() <= MAX_TAGS_PER_BATCH,
            "tags",
            format!(
                "at most {MAX_TAGS_PER_BATCH} tags per request, got {}",
                tags.len()
            ),
        );
        let metrics = metrics
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                v.check(format!("metrics[{i}].key"), names::validate_key(&m.key));
                v.ensure(
                    m.value.is_finite(),
                    format!("metrics[{i}].value"),
                    "must be a finite number",
                );
                Metric {
                    key: m.key,
                    value: m.value,
                    step: m.step.unwrap_or(0),
                    timestamp: m.timestamp.map(truncate_to_millis).unwrap_or(now),
                }
            })
            .collect();
        for (key, value) in &params {
            v.check(format!("params[{key:?}] (key)"), names::validate_key(key));
            v.check(
                format!("params[{key:?}]"),
                names::validate_length(value, MAX_PARAM_VALUE_LENGTH),
            );
        }
        names::validate_tags(v, "tags", &tags, usize::MAX, MAX_RUN_TAG_VALUE_LENGTH);
        Self {
            metrics,
            params,
            tags,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }

    /// Adds this batch's params and tags to a run's stored ones. Params are immutable: logging
    /// the same value again is harmless, a different value is a conflict and nothing changes.
    /// Tags are overwritten.
    pub fn merge_into(
        &self,
        params: &mut BTreeMap<String, String>,
        tags: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        for (key, new) in &self.params {
            if let Some(old) = params.get(key).filter(|old| *old != new) {
                return Err(Error::conflict(
                    format!("params[{key:?}]"),
                    format!(
                        "param {key:?} was already logged with value {old:?} and cannot change \
                         to {new:?}; log it under another key"
                    ),
                ));
            }
        }
        params.extend(self.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    /// The newest value of each metric key in this batch, by MLflow's "latest" order.
    pub fn latest_metrics(&self) -> Vec<Metric> {
        let mut latest: BTreeMap<&str, &Metric> = BTreeMap::new();
        for metric in &self.metrics {
            match latest.get(metric.key.as_str()) {
                Some(current) if !metric.is_newer_than(current) => {}
                _ => {
                    latest.insert(&metric.key, metric);
                }
            }
        }
        latest.into_values().cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub experiment_id: ExperimentId,
    pub name: String,
    pub status: RunStatus,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// The latest value of each metric, sorted by key.
    pub metrics: Vec<Metric>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// Its copy in MLflow.
    pub mlflow: MlflowLink,
}

/// A validated request to create a run, possibly already complete.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub name: Option<String>,
    pub status: RunStatus,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub batch: LogBatch,
}

/// An unvalidated run as a client sent it.
#[derive(Debug, Clone, Default)]
pub struct NewRunInput {
    pub name: Option<String>,
    pub status: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub metrics: Vec<MetricInput>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl NewRun {
    pub fn parse(input: NewRunInput, now: DateTime<Utc>) -> Result<Self> {
        let mut v = Validator::new();
        let name = input
            .name
            .as_deref()
            .and_then(|n| v.check("name", names::parse_name(n)));
        let status = match input.status {
            Some(s) => v.check("status", s.parse()).unwrap_or(RunStatus::Running),
            None => RunStatus::Running,
        };
        let start_time = input.start_time.map(truncate_to_millis).unwrap_or(now);
        let end_time = end_time_for(&mut v, status, start_time, input.end_time, now);
        let batch = LogBatch::parse(&mut v, input.metrics, input.params, input.tags, now);
        v.finish(|| Self {
            name,
            status,
            start_time,
            end_time,
            batch,
        })
    }
}

/// The end time a run gets: required only of terminal runs (now by default), never before start.
fn end_time_for(
    v: &mut Validator,
    status: RunStatus,
    start_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !status.is_terminal() {
        v.ensure(
            end_time.is_none(),
            "end_time",
            "only a FINISHED, FAILED or KILLED run has one",
        );
        return None;
    }
    let end = end_time
        .map(truncate_to_millis)
        .unwrap_or_else(|| now.max(start_time));
    v.ensure(
        end >= start_time,
        "end_time",
        "must not be before start_time",
    );
    Some(end)
}

impl Run {
    pub fn create(
        tenant: TenantId,
        experiment: ExperimentId,
        new: NewRun,
        now: DateTime<Utc>,
    ) -> Self {
        let id = RunId::generate();
        let name = new.name.unwrap_or_else(|| default_run_name(id));
        Self {
            id,
            tenant_id: tenant,
            experiment_id: experiment,
            name,
            status: new.status,
            start_time: new.start_time,
            end_time: new.end_time,
            params: new.batch.params.clone(),
            tags: new.batch.tags.clone(),
            metrics: new.batch.latest_metrics(),
            created_at: now,
            updated_at: now,
            version: 1,
            mlflow: MlflowLink::default(),
        }
    }

    /// Applies a status, end-time or name change; `Ok(false)` when nothing changes.
    ///
    /// A terminal run keeps its status: a finished run that restarted would make its metrics
    /// lie about which attempt produced them.
    pub fn apply(&mut self, update: &RunUpdate, now: DateTime<Utc>) -> Result<bool> {
        let mut v = Validator::new();
        let name = update
            .name
            .as_deref()
            .and_then(|n| v.check("name", names::parse_name(n)));
        let status = match &update.status {
            Some(s) => v.check("status", s.parse::<RunStatus>()),
            None => Some(self.status),
        };
        let status = status.unwrap_or(self.status);
        if !v.is_empty() {
            return v.finish(|| false);
        }
        if self.status.is_terminal() && status != self.status {
            return Err(Error::conflict(
                "status",
                format!(
                    "run is already {}; an ended run cannot change status",
                    self.status
                ),
            ));
        }
        let end_time = if status == self.status && update.end_time.is_none() {
            self.end_time
        } else {
            let requested = update.end_time.or(self.end_time);
            end_time_for(&mut v, status, self.start_time, requested, now)
        };
        let name = name.unwrap_or_else(|| self.name.clone());
        let changed = status != self.status || end_time != self.end_time || name != self.name;
        v.finish(|| ())?;
        if changed {
            self.status = status;
            self.end_time = end_time;
            self.name = name;
            self.updated_at = now;
        }
        Ok(changed)
    }
}

/// An unvalidated change to a run's status, end time or name.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub status: Option<String>,
    pub end_time: Option<DateTime<Utc>>,
    pub name: Option<String>,
}

fn default_run_name(id: RunId) -> String {
    let hex = id.as_uuid().simple().to_string();
    format!("run-{}", &hex[hex.len() - 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(key: &str, value: f64, step: i64) -> MetricInput {
        MetricInput {
            key: key.into(),
            value,
            step: Some(step),
            timestamp: None,
        }
    }

    fn finished_run() -> Run {
        let input = NewRunInput {
            status: Some("FINISHED".into()),
            ..Default::default()
        };
        let new = NewRun::parse(input, now()).unwrap();
        Run::create(TenantId::generate(), ExperimentId::generate(), new, now())
    }

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_run_without_status_starts_running_with_a_generated_name() {
        let new = NewRun::parse(NewRunInput::default(), now()).unwrap();
        let run = Run::create(TenantId::generate(), ExperimentId::generate(), new, now());

        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.end_time, None);
        assert!(run.name.starts_with("run-"));
    }

    #[test]
    fn a_run_posted_finished_gets_an_end_time() {
        assert!(finished_run().end_time.is_some());
    }

    #[test]
    fn mlflow_limits_and_non_finite_values_are_all_reported() {
        let input = NewRunInput {
            status: Some("DONE".into()),
            metrics: (0..1001)
                .map(|i| metric("m", f64::from(i), 0))
                .chain([metric("bad", f64::NAN, 0)])
                .collect(),
            params: (0..101)
                .map(|i| (format!("p{i}"), "v".repeat(6001)))
                .collect(),
            ..Default::default()
        };

        let fields = fields(NewRun::parse(input, now()).unwrap_err());

        assert!(fields.contains(&"status".to_owned()));
        assert!(fields.contains(&"metrics".to_owned()));
        assert!(fields.contains(&"metrics[1001].value".to_owned()));
        assert!(fields.contains(&"params".to_owned()));
        assert!(fields.contains(&"params[\"p0\"]".to_owned()));
    }

    #[test]
    fn a_running_run_cannot_have_an_end_time_or_end_before_it_started() {
        let start = now();
        let running = NewRunInput {
            end_time: Some(start),
            ..Default::default()
        };
        let backwards = NewRunInput {
            status: Some("FAILED".into()),
            start_time: Some(start),
            end_time: Some(start - TimeDelta::seconds(1)),
            ..Default::default()
        };

        assert_eq!(
            fields(NewRun::parse(running, now()).unwrap_err()),
            ["end_time"]
        );
        assert_eq!(
            fields(NewRun::parse(backwards, now()).unwrap_err()),
            ["end_time"]
        );
    }

    #[test]
    fn latest_metric_is_the_highest_step_then_latest_timestamp() {
        let mut v = Validator::new();
        let batch = LogBatch::parse(
            &mut v,
            vec![
                metric("loss", 0.9, 1),
                metric("loss", 0.5, 3),
                metric("loss", 0.7, 2),
            ],
            BTreeMap::new(),
            BTreeMap::new(),
            now(),
        );

        let latest = batch.latest_metrics();

        assert_eq!(latest.len(), 1);
        assert_eq!((latest[0].step, latest[0].value), (3, 0.5));
    }

    #[test]
    fn params_merge_once_and_tags_are_overwritten() {
        let mut v = Validator::new();
        let mut batch = |params: &[(&str, &str)], tags: &[(&str, &str)]| {
            let map = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            LogBatch::parse(&mut v, Vec::new(), map(params), map(tags), now())
        };
        let (mut params, mut tags) = (BTreeMap::new(), BTreeMap::new());

        batch(&[("lr", "0.1")], &[("stage", "a")])
            .merge_into(&mut params, &mut tags)
            .unwrap();
        batch(&[("lr", "0.1")], &[("stage", "b")])
            .merge_into(&mut params, &mut tags)
            .unwrap();
        let changed = batch(&[("lr", "0.2"), ("new", "x")], &[]).merge_into(&mut params, &mut tags);

        assert!(
            matches!(changed, Err(Error::Conflict { field: Some(f), .. }) if f == "params[\"lr\"]")
        );
        assert_eq!(params.len(), 1, "a refused batch adds nothing");
        assert_eq!(tags["stage"], "b");
    }

    #[test]
    fn finishing_a_running_run_sets_its_end_time() {
        let new = NewRun::parse(NewRunInput::default(), now()).unwrap();
        let mut run = Run::create(TenantId::generate(), ExperimentId::generate(), new, now());

        let update = RunUpdate {
            status: Some("FINISHED".into()),
            ..Default::default()
        };
        let changed = run.apply(&update, now()).unwrap();

        assert!(changed);
        assert_eq!(run.status, RunStatus::Finished);
        assert!(run.end_time.is_some());
    }

    #[test]
    fn an_ended_run_keeps_its_status() {
        let mut run = finished_run();

        let restart = RunUpdate {
            status: Some("RUNNING".into()),
            ..Default::default()
        };
        let same = RunUpdate {
            status: Some("FINISHED".into()),
            ..Default::default()
        };

        assert!(matches!(
            run.apply(&restart, now()),
            Err(Error::Conflict { .. })
        ));
        assert!(!run.apply(&same, now()).unwrap());
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        assert!("finished".parse::<RunStatus>().is_err());
    }
}
