//! The rollout state machine: what a deployment does next, given what was observed.
//!
//! [`tick`] is the controller's step: it records the new probes, judges the candidate (and
//! the baseline, for A/B tests) over the analysis window, and moves the deployment on, holds
//! it, or rolls it back. [`command`] applies a person's pause, resume, promote or rollback.
//! Neither performs I/O; the caller saves the result with a version check.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::deployment::analysis::{
    evaluate, judge, Evidence, ProbeResult, ProbeSample, TrafficReport, Verdict,
};
use crate::core::deployment::history::{HistoryEntry, TransitionKind};
use crate::core::deployment::spec::{DeploymentSpec, StrategySpec, WinnerMetric};
use crate::core::deployment::{Deployment, Role, Status, TrafficSplit};
use crate::core::Error;

/// Where a deployment is within its strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not started.
    Waiting,
    /// Canary: the candidate's share grows step by step.
    Stepping,
    /// Blue-green: green is checked while blue serves everything.
    PrePromotion,
    /// Blue-green: green serves everything while blue is kept for the rollback window.
    PostPromotion,
    /// Shadow: the candidate receives a mirror of live traffic and serves none.
    Mirroring,
    /// A/B test: the split is held while both variants are measured.
    Testing,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Stepping => "stepping",
            Self::PrePromotion => "pre_promotion",
            Self::PostPromotion => "post_promotion",
            Self::Mirroring => "mirroring",
            Self::Testing => "testing",
            Self::Done => "done",
        }
    }
}

/// The latest probe of a variant, as shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastProbe {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub latency_ms: u32,
    pub detail: Option<String>,
}

/// A value for each variant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerRole<T> {
    pub baseline: T,
    pub candidate: T,
}

impl<T> PerRole<T> {
    pub fn get(&self, role: Role) -> &T {
        match role {
            Role::Baseline => &self.baseline,
            Role::Candidate => &self.candidate,
        }
    }

    pub fn get_mut(&mut self, role: Role) -> &mut T {
        match role {
            Role::Baseline => &mut self.baseline,
            Role::Candidate => &mut self.candidate,
        }
    }
}

/// How a deployment that succeeded came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate passed its analysis.
    Passed,
    /// The A/B test's winner, with each side's value of the deciding metric.
    Winner {
        variant: String,
        role: Role,
        metric: String,
        baseline_value: f64,
        candidate_value: f64,
    },
}

/// Everything about a deployment that changes as it rolls out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    pub traffic: TrafficSplit,
    /// Percent of live traffic mirrored to the candidate (shadow only).
    pub mirror_percent: u8,
    /// Traffic steps taken: canary shifts after the first, 1 once blue-green switched.
    pub step: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// When the current step began; its interval, and the need for an observation after the
    /// traffic changed, count from here.
    pub step_started_at: Option<DateTime<Utc>>,
    pub paused_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the candidate was promoted after the deployment had succeeded.
    pub promoted_at: Option<DateTime<Utc>>,
    /// Passing analyses so far (blue-green pre-promotion checks).
    pub passes: u32,
    /// The candidate became the stable version of its model in the environment.
    pub adopted: bool,
    /// The probes inside the analysis window.
    pub probes: PerRole<Vec<ProbeSample>>,
    pub last_probe: PerRole<Option<LastProbe>>,
    /// The evidence of the latest analysis.
    pub evidence: Option<Evidence>,
    /// Why the deployment ended (or why it holds).
    pub reason: Option<String>,
    pub outcome: Option<Outcome>,
    /// Time spent paused since the start; the clocks of shadows and A/B tests stop meanwhile.
    #[serde(default)]
    pub paused_ms: u64,
}

impl RolloutState {
    /// A deployment not yet started, at its requested split.
    pub fn initial(spec: &DeploymentSpec) -> Self {
        Self {
            phase: Phase::Waiting,
            traffic: spec.initial_split,
            mirror_percent: 0,
            step: 0,
            started_at: None,
            step_started_at: None,
            paused_at: None,
            finished_at: None,
            promoted_at: None,
            passes: 0,
            adopted: false,
            probes: PerRole::default(),
            last_probe: PerRole::default(),
            evidence: None,
            reason: None,
            outcome: None,
            paused_ms: 0,
        }
    }
}

/// What the controller observed since its last look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    pub probes: Vec<(Role, ProbeResult)>,
    /// The reports received within the analysis window.
    pub reports: Vec<TrafficReport>,
}

/// How the model's stable version in the environment changes with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StableChange {
    /// The candidate is now the stable version.
    Adopt { version: i64 },
    /// Back to the baseline version (none if the deployment was the model's first there).
    Revert { to: Option<i64> },
}

/// A person's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    /// Skip the remaining steps: the candidate gets all traffic.
    Promote,
    Rollback {
        reason: Option<String>,
    },
}

/// The deployment after a decision, and what to record of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub deployment: Deployment,
    pub history: Vec<HistoryEntry>,
    pub stable: Option<StableChange>,
}

impl Decision {
    /// Whether anything a person would see in the history happened.
    pub fn changed_course(&self) -> bool {
        !self.history.is_empty()
    }
}

/// The actor of the controller's own decisions.
pub const CONTROLLER: &str = "controller";

fn ms(value: u64) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_millis(value)).unwrap_or(chrono::Duration::MAX)
}

fn seconds(value_ms: u64) -> String {
    let s = value_ms as f64 / 1000.0;
    format!("{s}s")
}

/// The controller's step: records `observations`, judges the deployment and moves it on.
pub fn tick(current: &Deployment, observations: &Observations, now: DateTime<Utc>) -> Decision {
    let mut b = Builder::new(current, CONTROLLER, now);
    if current.status.is_active() {
        b.observe(observations);
        match current.status {
            Status::Pending => b.start(),
            Status::Paused => {
                if let Some(reason) = b.failure() {
                    b.roll_back(format!("{reason} while paused"));
                }
            }
            _ => b.advance(),
        }
    }
    b.finish()
}

/// Applies a person's command, or says why it does not apply now.
pub fn command(
    current: &Deployment,
    command: &Command,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Decision, Error> {
    let mut b = Builder::new(current, actor, now);
    let status = current.status;
    match command {
        Command::Pause => {
            if !matches!(status, Status::Pending | Status::Progressing) {
                return Err(refused(
                    status,
                    "only a pending or progressing deployment can be paused",
                ));
            }
            b.d.status = Status::Paused;
            b.d.state.paused_at = Some(now);
            b.record(TransitionKind::Paused, Some(format!("paused by {actor}")));
        }
        Command::Resume => {
            if status != Status::Paused {
                return Err(refused(status, "only a paused deployment can be resumed"));
            }
            let started = b.d.state.started_at.is_some();
            b.d.status = if started {
                Status::Progressing
            } else {
                Status::Pending
            };
            if let Some(paused_at) = b.d.state.paused_at.take() {
                let paused = (now - paused_at).num_milliseconds().max(0);
                b.d.state.paused_ms =
                    b.d.state
                        .paused_ms
                        .saturating_add(u64::try_from(paused).unwrap_or(0));
            }
            if started {
                // The step starts over, so it needs fresh observations before it moves on.
                b.d.state.step_started_at = Some(now);
            }
            b.record(TransitionKind::Resumed, Some(format!("resumed by {actor}")));
        }
        Command::Promote => {
            let succeeded_unadopted = status == Status::Succeeded
                && !current.state.adopted
                && current.state.traffic.candidate() < 100;
            if !(status.is_active() || succeeded_unadopted) {
                let why = if status == Status::Succeeded {
                    "the candidate already serves all traffic"
                } else {
                    "a deployment that ended without success cannot be promoted; create a new one"
                };
                return Err(refused(status, why));
            }
            let reason = format!("promoted by {actor}");
            b.record(TransitionKind::Promoted, Some(reason.clone()));
            b.shift(TrafficSplit::CANDIDATE_ONLY, 0, reason.clone());
            if status.is_active() {
                b.succeed(reason, None, true);
            } else {
                b.d.state.promoted_at = Some(now);
                b.adopt();
            }
        }
        Command::Rollback { reason } => {
            let reason = reason
                .clone()
                .unwrap_or_else(|| format!("rolled back by {actor}"));
            if status == Status::Succeeded {
                let anchor = current.state.promoted_at.or(current.state.finished_at);
                let closes = anchor.map(|t| t + ms(current.spec.rollback_window_ms));
                if closes.is_some_and(|closes| now > closes) {
                    return Err(refused(
                        status,
                        &format!(
                            "its rollback window of {} closed at {}; deploy the previous \
                             version instead",
                            seconds(current.spec.rollback_window_ms),
                            closes.map(|c| c.to_rfc3339()).unwrap_or_default()
                        ),
                    ));
                }
                if !current.state.adopted && current.state.traffic.candidate() == 0 {
                    return Err(refused(
                        status,
                        "the candidate serves no traffic, so there is nothing to roll back",
                    ));
                }
            } else if !status.is_active() {
                return Err(refused(status, "it has already ended"));
            }
            b.roll_back(reason);
        }
    }
    Ok(b.finish())
}

fn refused(status: Status, why: &str) -> Error {
    Error::conflict("status", format!("the deployment is {status}: {why}"))
}

/// Builds a decision on a copy of the deployment.
struct Builder {
    d: Deployment,
    /// The status before the transition being recorded.
    status_before: Status,
    actor: String,
    now: DateTime<Utc>,
    history: Vec<HistoryEntry>,
    stable: Option<StableChange>,
}

impl Builder {
    fn new(current: &Deployment, actor: &str, now: DateTime<Utc>) -> Self {
        Self {
            d: current.clone(),
            status_before: current.status,
            actor: actor.to_owned(),
            now,
            history: Vec::new(),
            stable: None,
        }
    }

    fn policy(&self) -> &crate::core::deployment::spec::AnalysisPolicy {
        &self.d.spec.analysis
    }

    fn record(&mut self, kind: TransitionKind, reason: Option<String>) {
        let from = std::mem::replace(&mut self.status_before, self.d.status);
        self.history.push(HistoryEntry {
            id: Uuid::now_v7(),
            tenant_id: self.d.tenant_id,
            deployment_id: self.d.id,
            at: self.now,
            kind,
            actor: self.actor.clone(),
            from_status: from,
            to_status: self.d.status,
            traffic: self.d.state.traffic,
            mirror_percent: self.d.state.mirror_percent,
            step: self.d.state.step,
            reason,
            evidence: self.d.state.evidence.clone(),
            outcome: self.d.state.outcome.clone(),
        });
    }

    /// Records the new probes, drops those that left the window, and analyses both variants.
    fn observe(&mut self, observations: &Observations) {
        let window_start = self.now - ms(self.policy().window_ms);
        for (role, probe) in &observations.probes {
            self.d.state.probes.get_mut(*role).push(ProbeSample {
                at_ms: probe.at.timestamp_millis(),
                ok: probe.ok,
            });
            *self.d.state.last_probe.get_mut(*role) = Some(LastProbe {
                at: probe.at,
                ok: probe.ok,
                latency_ms: probe.latency_ms,
                detail: probe.detail.clone(),
            });
        }
        let from = window_start.timestamp_millis();
        for role in [Role::Baseline, Role::Candidate] {
            self.d
                .state
                .probes
                .get_mut(role)
                .retain(|p| p.at_ms >= from);
        }
        let step_start = self.d.state.step_started_at.unwrap_or(self.now);
        let reports_from = self.d.reports_from(self.now);
        let strategy = self.d.strategy();
        let variants = [Role::Baseline, Role::Candidate]
            .into_iter()
            .map(|role| {
                evaluate(
                    role,
                    strategy.variant_name(role),
                    self.d.state.probes.get(role),
                    &observations.reports,
                    window_start,
                    reports_from,
                    step_start,
                )
            })
            .collect();
        let policy = self.policy();
        self.d.state.evidence = Some(Evidence {
            threshold: policy.error_threshold,
            min_samples: policy.min_samples,
            window_seconds: policy.window_ms as f64 / 1000.0,
            variants,
        });
    }

    fn verdict(&self, role: Role) -> Verdict {
        self.d
            .state
            .evidence
            .as_ref()
            .and_then(|e| e.of(role))
            .map_or(Verdict::Inconclusive, |e| judge(e, self.policy()))
    }

    /// Observations of the candidate since the step began.
    fn fresh(&self) -> bool {
        self.candidate_evidence().is_some_and(|e| e.since_step > 0)
    }

    fn candidate_evidence(&self) -> Option<&crate::core::deployment::VariantEvidence> {
        self.d
            .state
            .evidence
            .as_ref()
            .and_then(|e| e.of(Role::Candidate))
    }

    /// Why the candidate fails its analysis, if it does.
    fn failure(&self) -> Option<String> {
        if self.verdict(Role::Candidate) != Verdict::Fail {
            return None;
        }
        let e = self.candidate_evidence()?;
        Some(format!(
            "{} error rate {:.3} is above the threshold {} over {} samples in the last {}",
            e.variant,
            e.error_rate.unwrap_or_default(),
            self.policy().error_threshold,
            e.samples,
            seconds(self.policy().window_ms),
        ))
    }

    fn pass_reason(&self, what: &str) -> String {
        let (rate, samples) = self
            .candidate_evidence()
            .map_or((0.0, 0), |e| (e.error_rate.unwrap_or_default(), e.samples));
        format!(
            "{what}: error rate {rate:.3} within the threshold {} over {samples} samples",
            self.policy().error_threshold
        )
    }

    /// Rolls back once an analysis due at `due` stayed inconclusive past the deadline.
    fn hold_or_give_up(&mut self, due: DateTime<Utc>) {
        let deadline = self.policy().progress_deadline_ms;
        if self.now <= due + ms(deadline) {
            return;
        }
        let (variant, samples) = self
            .candidate_evidence()
            .map_or(("candidate".to_owned(), 0), |e| {
                (e.variant.clone(), e.samples)
            });
        let reason = format!(
            "the analysis stayed inconclusive past the progress deadline of {}: {variant} \
             had {samples} of the {} samples needed, or none since the step began",
            seconds(deadline),
            self.policy().min_samples,
        );
        self.roll_back(reason);
    }

    fn start(&mut self) {
        let (phase, mirror) = match &self.d.spec.strategy {
            StrategySpec::Canary => (Phase::Stepping, 0),
            StrategySpec::BlueGreen { .. } => (Phase::PrePromotion, 0),
            StrategySpec::Shadow { mirror_percent, .. } => (Phase::Mirroring, *mirror_percent),
            StrategySpec::AbTest { .. } => (Phase::Testing, 0),
        };
        self.d.status = Status::Progressing;
        self.d.state.phase = phase;
        self.d.state.started_at = Some(self.now);
        self.d.state.step_started_at = Some(self.now);
        self.d.state.mirror_percent = mirror;
        self.record(
            TransitionKind::TrafficShifted,
            Some("rollout started".into()),
        );
    }

    fn advance(&mut self) {
        let step_started = self.d.state.step_started_at.unwrap_or(self.now);
        // Durations count running time only: a pause stops the clock.
        let started = self.d.state.started_at.unwrap_or(self.now) + ms(self.d.state.paused_ms);
        if let Some(reason) = self.failure() {
            self.roll_back(reason);
            return;
        }
        let passing = self.verdict(Role::Candidate) == Verdict::Pass && self.fresh();
        match self.d.spec.strategy.clone() {
            StrategySpec::Canary => {
                let due = step_started + ms(self.policy().step_interval_ms);
                if passing && self.now >= due {
                    if self.d.state.traffic.candidate() == 100 {
                        let reason = self.pass_reason("the canary served all traffic");
                        self.succeed(reason, Some(Outcome::Passed), true);
                    } else {
                        let next = self.d.state.traffic.stepped(self.policy().step_percent);
                        let reason = self.pass_reason("analysis passed");
                        self.d.state.step += 1;
                        self.d.state.step_started_at = Some(self.now);
                        self.shift(next, 0, reason);
                    }
                } else {
                    self.hold_or_give_up(due);
                }
            }
            StrategySpec::BlueGreen {
                pre_promotion_checks,
            } => {
                if self.d.state.phase == Phase::PrePromotion {
                    if passing {
                        self.d.state.passes += 1;
                        if self.d.state.passes >= pre_promotion_checks {
                            let reason = self.pass_reason(&format!(
                                "{pre_promotion_checks} pre-promotion checks passed"
                            ));
                            self.d.state.phase = Phase::PostPromotion;
                            self.d.state.step = 1;
                            self.d.state.step_started_at = Some(self.now);
                            self.shift(TrafficSplit::CANDIDATE_ONLY, 0, reason);
                        }
                    } else {
                        self.hold_or_give_up(step_started);
                    }
                } else {
                    let due = step_started + ms(self.d.spec.rollback_window_ms);
                    if passing && self.now >= due {
                        let reason = self.pass_reason("green held through the rollback window");
                        self.succeed(reason, Some(Outcome::Passed), true);
                    } else {
                        self.hold_or_give_up(due);
                    }
                }
            }
            StrategySpec::Shadow { duration_ms, .. } => {
                let due = started + ms(duration_ms);
                if passing && self.now >= due {
                    let reason = self.pass_reason("the shadow passed its analysis");
                    self.shift(self.d.state.traffic, 0, reason.clone());
                    self.succeed(reason, Some(Outcome::Passed), false);
                } else {
                    self.hold_or_give_up(due);
                }
            }
            StrategySpec::AbTest {
                duration_ms,
                winner,
                auto_promote,
            } => {
                let due = started + ms(duration_ms);
                if self.now < due {
                    return;
                }
                match self.winner(&winner) {
                    Some(outcome) => self.conclude_ab_test(outcome, auto_promote),
                    None => {
                        if self.now > due + ms(self.policy().progress_deadline_ms) {
                            let reason = format!(
                                "no winner on {} within the progress deadline: each variant \
                                 needs {} samples and the metric reported",
                                winner.name(),
                                self.policy().min_samples
                            );
                            self.shift(TrafficSplit::BASELINE_ONLY, 0, reason.clone());
                            self.end(Status::Failed, TransitionKind::Failed, reason);
                        }
                    }
                }
            }
        }
    }

    /// The A/B test's winner, once both variants have enough samples and the metric.
    fn winner(&self, metric: &WinnerMetric) -> Option<Outcome> {
        let evidence = self.d.state.evidence.as_ref()?;
        let (a, b) = (evidence.of(Role::Baseline)?, evidence.of(Role::Candidate)?);
        let min = self.policy().min_samples;
        if a.samples < min || b.samples < min {
            return None;
        }
        let value = |e: &crate::core::deployment::VariantEvidence| match metric {
            WinnerMetric::ErrorRate => e.error_rate,
            WinnerMetric::LatencyP99 => e.latency_p99_ms,
            WinnerMetric::Reported { name, .. } => e.metrics.get(name).copied(),
        };
        let (va, vb) = (value(a)?, value(b)?);
        // A tie keeps the baseline: there is no reason to switch.
        let candidate_wins = if metric.higher_is_better() {
            vb > va
        } else {
            vb < va
        };
        let role = if candidate_wins {
            Role::Candidate
        } else {
            Role::Baseline
        };
        Some(Outcome::Winner {
            variant: self.d.strategy().variant_name(role).to_owned(),
            role,
            metric: metric.name().to_owned(),
            baseline_value: va,
            candidate_value: vb,
        })
    }

    fn conclude_ab_test(&mut self, outcome: Outcome, auto_promote: bool) {
        let Outcome::Winner {
            variant,
            role,
            metric,
            baseline_value,
            candidate_value,
        } = &outcome
        else {
            return;
        };
        let reason = format!(
            "{variant} wins on {metric}: {} for a, {} for b",
            baseline_value, candidate_value
        );
        let role = *role;
        self.d.state.outcome = Some(outcome.clone());
        // The split ends with the test: nothing watches it afterwards. Without auto-promotion
        // traffic goes back to the baseline, and `promote` hands it to a winning candidate.
        let split = match role {
            Role::Candidate if auto_promote => TrafficSplit::CANDIDATE_ONLY,
            _ => TrafficSplit::BASELINE_ONLY,
        };
        self.shift(split, 0, reason.clone());
        self.succeed(
            reason,
            Some(outcome),
            auto_promote && role == Role::Candidate,
        );
    }

    /// Changes the traffic (and mirror), recording it when anything changed.
    fn shift(&mut self, traffic: TrafficSplit, mirror: u8, reason: String) {
        if self.d.state.traffic == traffic && self.d.state.mirror_percent == mirror {
            return;
        }
        self.d.state.traffic = traffic;
        self.d.state.mirror_percent = mirror;
        self.record(TransitionKind::TrafficShifted, Some(reason));
    }

    fn adopt(&mut self) {
        if !self.d.state.adopted {
            self.d.state.adopted = true;
            self.stable = Some(StableChange::Adopt {
                version: self.d.model_version,
            });
        }
    }

    fn succeed(&mut self, reason: String, outcome: Option<Outcome>, adopt: bool) {
        if adopt {
            self.adopt();
        }
        if outcome.is_some() {
            self.d.state.outcome = outcome;
        }
        self.end(Status::Succeeded, TransitionKind::Succeeded, reason);
    }

    fn roll_back(&mut self, reason: String) {
        self.shift(TrafficSplit::BASELINE_ONLY, 0, reason.clone());
        if self.d.state.adopted {
            self.d.state.adopted = false;
            self.stable = Some(StableChange::Revert {
                to: self.d.baseline_version,
            });
        }
        self.end(Status::RolledBack, TransitionKind::RolledBack, reason);
    }

    fn end(&mut self, status: Status, kind: TransitionKind, reason: String) {
        self.d.status = status;
        self.d.state.phase = Phase::Done;
        self.d.state.paused_at = None;
        self.d.state.finished_at = Some(self.now);
        self.d.state.reason = Some(reason.clone());
        self.record(kind, Some(reason));
    }

    fn finish(mut self) -> Decision {
        // The controller comes back after a probe interval; a person's command wants its
        // attention at once (a resumed deployment should not wait out the interval).
        let wait = if self.actor == CONTROLLER {
            ms(self.d.spec.analysis.probe_interval_ms)
        } else {
            chrono::Duration::zero()
        };
        self.d.next_tick_at = self.d.status.is_active().then(|| self.now + wait);
        self.d.updated_at = self.now;
        Decision {
            deployment: self.d,
            history: self.history,
            stable: self.stable,
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
