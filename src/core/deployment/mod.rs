//! Deployments: one model version rolled out into one target environment with a strategy
//! (canary, A/B test, shadow, blue-green), step by step, by the rollout controller.
//!
//! A deployment is a persisted state machine. Its spec (what was asked for) never changes; its
//! state changes only through [`machine::tick`] (the controller, with fresh observations) and
//! [`machine::command`] (the API: pause, resume, promote, rollback). Both are pure functions of
//! the stored deployment and the time, so every decision can be replayed from its evidence.
//!
//! Every deployment has two variants: the *baseline* (what serves now: `stable`, `a`, `blue`)
//! and the *candidate* (the new version: `canary`, `b`, `green`, `shadow`).

pub mod analysis;
pub mod history;
pub mod machine;
pub mod probe_target;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::{DeploymentId, Error, ModelId, TenantId};

pub use analysis::{Evidence, ProbeResult, TrafficReport, VariantEvidence, Verdict};
pub use history::{HistoryEntry, TransitionKind};
pub use machine::{Command, Decision, Observations, RolloutState, StableChange};
pub use spec::{AnalysisPolicy, DeploymentDefaults, DeploymentSpec, NewDeployment, StrategySpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Canary,
    AbTest,
    Shadow,
    BlueGreen,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [Self::Canary, Self::AbTest, Self::Shadow, Self::BlueGreen];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::AbTest => "ab_test",
            Self::Shadow => "shadow",
            Self::BlueGreen => "blue_green",
        }
    }

    /// The names of the two variants in a traffic split: the baseline's, then the candidate's.
    pub fn variant_names(self) -> (&'static str, &'static str) {
        match self {
            Self::Canary => ("stable", "canary"),
            Self::AbTest => ("a", "b"),
            Self::Shadow => ("stable", "shadow"),
            Self::BlueGreen => ("blue", "green"),
        }
    }

    pub fn variant_name(self, role: Role) -> &'static str {
        let (baseline, candidate) = self.variant_names();
        match role {
            Role::Baseline => baseline,
            Role::Candidate => candidate,
        }
    }

    /// The role of a variant name of this strategy.
    pub fn role_of(self, variant: &str) -> Option<Role> {
        let (baseline, candidate) = self.variant_names();
        if variant == baseline {
            Some(Role::Baseline)
        } else if variant == candidate {
            Some(Role::Candidate)
        } else {
            None
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("expected canary, ab_test, shadow or blue_green, got {s:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; the controller has not started it yet.
    Pending,
    Progressing,
    /// Held by a person; analysis still guards it and rolls it back on a breach.
    Paused,
    Succeeded,
    RolledBack,
    /// Ended without a verdict for a reason other than the candidate's health.
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::Pending,
        Self::Progressing,
        Self::Paused,
        Self::Succeeded,
        Self::RolledBack,
        Self::Failed,
    ];

    /// The statuses the controller drives; at most one deployment per model and environment
    /// is in one of them.
    pub const ACTIVE: [Status; 3] = [Self::Pending, Self::Progressing, Self::Paused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "expected pending, progressing, paused, succeeded, rolled_back or failed, \
                 got {s:?}"
                )
            })
    }
}

/// Which side of a deployment a variant is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// What served before the deployment.
    Baseline,
    /// The model version being deployed.
    Candidate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Candidate => "candidate",
        }
    }
}

/// The share of live traffic each variant serves, in percent. Only the candidate's share is
/// kept, so a split always sums to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSplit {
    candidate: u8,
}

impl TrafficSplit {
    pub const BASELINE_ONLY: Self = Self { candidate: 0 };
    pub const CANDIDATE_ONLY: Self = Self { candidate: 100 };

    /// The split giving the candidate `percent` (at most 100).
    pub fn candidate_share(percent: u8) -> Self {
        Self {
            candidate: percent.min(100),
        }
    }

    pub fn candidate(self) -> u8 {
        self.candidate
    }

    pub fn baseline(self) -> u8 {
        100 - self.candidate
    }

    pub fn share(self, role: Role) -> u8 {
        match role {
            Role::Baseline => self.baseline(),
            Role::Candidate => self.candidate(),
        }
    }

    /// The split with the candidate's share grown by `step` percentage points, up to 100.
    pub fn stepped(self, step: u8) -> Self {
        Self::candidate_share(self.candidate.saturating_add(step).min(100))
    }

    /// `{"stable": 90, "canary": 10}`, named for the strategy.
    pub fn weights(self, strategy: Strategy) -> BTreeMap<String, u8> {
        let (baseline, candidate) = strategy.variant_names();
        BTreeMap::from([
            (baseline.to_owned(), self.baseline()),
            (candidate.to_owned(), self.candidate()),
        ])
    }
}

/// The model's version that serves in an environment once a deployment succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StableVersion {
    pub version: i64,
    /// The deployment that made it stable.
    pub deployment: DeploymentId,
}

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub tenant_id: TenantId,
    pub model_id: ModelId,
    pub model_version: i64,
    /// The model's stable version in that environment when the deployment was created, if
    /// any: what a rollback returns to.
    pub baseline_version: Option<i64>,
    pub target_environment: String,
    pub spec: DeploymentSpec,
    pub status: Status,
    pub state: RolloutState,
    /// The token subject that created it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every save: the API and the controller never overwrite each other's step.
    pub version: i64,
    /// When the controller looks at it next; `None` once it has ended.
    pub next_tick_at: Option<DateTime<Utc>>,
}

impl Deployment {
    pub fn strategy(&self) -> Strategy {
        self.spec.strategy.strategy()
    }

    /// `{"stable": 90, "canary": 10}`: the current traffic, named for the strategy.
    pub fn weights(&self) -> BTreeMap<String, u8> {
        self.state.traffic.weights(self.strategy())
    }

    /// Traffic reported from this time on counts in an analysis made at `now`: an A/B test
    /// is decided on everything reported since it was created, the other strategies on the
    /// analysis window.
    pub fn reports_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.strategy() == Strategy::AbTest {
            return self.created_at;
        }
        let window = chrono::Duration::milliseconds(
            i64::try_from(self.spec.analysis.window_ms).unwrap_or(i64::MAX / 2),
        );
        now - window
    }

    /// Reports received before this no longer count and can go.
    pub fn reports_cutoff(&self) -> DateTime<Utc> {
        self.reports_from(self.updated_at)
    }
}

/// The refusal of a second active deployment of a model in an environment.
pub fn active_conflict(active: DeploymentId, environment: &str) -> Error {
    Error::conflict(
        "target_environment",
        format!(
            "deployment {active} of this model is still active in {environment}; wait for it \
             to end or roll it back first"
        ),
    )
}

/// Filters of the deployment listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentFilter {
    pub status: Option<Status>,
    pub model_id: Option<ModelId>,
    pub target_environment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_always_sums_to_one_hundred_and_steps_stop_at_full_traffic() {
        let split = TrafficSplit::candidate_share(90);

        assert_eq!(split.baseline() + split.candidate(), 100);
        assert_eq!(split.stepped(25), TrafficSplit::CANDIDATE_ONLY);
        assert_eq!(TrafficSplit::candidate_share(250).candidate(), 100);
    }

    #[test]
    fn weights_are_named_for_the_strategy() {
        let split = TrafficSplit::candidate_share(10);

        let weights = split.weights(Strategy::BlueGreen);

        assert_eq!(weights["blue"], 90);
        assert_eq!(weights["green"], 10);
        assert_eq!(Strategy::AbTest.role_of("b"), Some(Role::Candidate));
        assert_eq!(Strategy::Canary.role_of("green"), None);
    }
}
