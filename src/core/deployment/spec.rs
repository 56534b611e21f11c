//! What a deployment was asked to do, validated: the strategy and its options, the analysis
//! policy, the health URLs and the starting split. Every invalid field of a request is
//! reported at once; past `NewDeployment::parse` a spec cannot be invalid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::deployment::probe_target::ProbeTargetPolicy;
use crate::core::deployment::{Strategy, TrafficSplit};
use crate::core::names::validate_key;
use crate::core::validation::Validator;
use crate::core::{Error, ModelId};

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The probes of a window are kept with the deployment and saved at every tick, so a window
/// may span at most this many probe intervals.
pub const MAX_PROBES_PER_WINDOW: u64 = 1000;

/// How a deployment's health is judged, and how fast it moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisPolicy {
    /// Percentage points the canary grows by per step.
    pub step_percent: u8,
    /// How long each step holds, at least, before the next.
    pub step_interval_ms: u64,
    /// How often each variant's health URL is probed; also the controller's pace.
    pub probe_interval_ms: u64,
    /// The error rate is measured over this much recent time.
    pub window_ms: u64,
    /// An error rate above this, with enough samples, rolls back.
    pub error_threshold: f64,
    /// Fewer samples than this in the window is inconclusive.
    pub min_samples: u64,
    /// How long an inconclusive analysis may hold a step once it is due.
    pub progress_deadline_ms: u64,
}

/// Which variant wins an A/B test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WinnerMetric {
    /// The lower error rate.
    ErrorRate,
    /// The lower reported p99 latency.
    LatencyP99,
    /// A metric the serving layer reports under `metrics`.
    Reported {
        name: String,
        higher_is_better: bool,
    },
}

impl WinnerMetric {
    pub fn name(&self) -> &str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::LatencyP99 => "latency_p99_ms",
            Self::Reported { name, .. } => name,
        }
    }

    pub fn higher_is_better(&self) -> bool {
        matches!(
            self,
            Self::Reported {
                higher_is_better: true,
                ..
            }
        )
    }
}

/// The strategy with its own options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum StrategySpec {
    Canary,
    AbTest {
        duration_ms: u64,
        winner: WinnerMetric,
        auto_promote: bool,
    },
    Shadow {
        mirror_percent: u8,
        duration_ms: u64,
    },
    BlueGreen {
        pre_promotion_checks: u32,
    },
}

impl StrategySpec {
    pub fn strategy(&self) -> Strategy {
        match self {
            Self::Canary => Strategy::Canary,
            Self::AbTest { .. } => Strategy::AbTest,
            Self::Shadow { .. } => Strategy::Shadow,
            Self::BlueGreen { .. } => Strategy::BlueGreen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub strategy: StrategySpec,
    pub analysis: AnalysisPolicy,
    pub candidate_health_url: String,
    pub baseline_health_url: Option<String>,
    pub initial_split: TrafficSplit,
    /// After success the deployment can still be rolled back this long; blue-green also keeps
    /// blue this long after switching, analysing green before it succeeds.
    pub rollback_window_ms: u64,
}

/// Defaults from the settings, for what a request leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentDefaults {
    pub analysis: AnalysisPolicy,
    pub rollback_window_ms: u64,
    pub pre_promotion_checks: u32,
    pub shadow_mirror_percent: u8,
    pub shadow_duration_ms: u64,
    pub ab_test_duration_ms: u64,
    pub probe_targets: ProbeTargetPolicy,
}

/// Optional analysis fields of a request; times in (fractional) seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalysisInput {
    pub step_percent: Option<i64>,
    pub step_interval_seconds: Option<f64>,
    pub probe_interval_seconds: Option<f64>,
    pub window_seconds: Option<f64>,
    pub error_threshold: Option<f64>,
    pub min_samples: Option<i64>,
    pub progress_deadline_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlueGreenInput {
    pub pre_promotion_checks: Option<i64>,
    pub rollback_window_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowInput {
    pub mirror_percent: Option<i64>,
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AbTestInput {
    pub duration_seconds: Option<f64>,
    pub winner_metric: Option<String>,
    /// `max` or `min`; for reported metrics, `max` unless said otherwise.
    pub winner_direction: Option<String>,
    pub auto_promote: Option<bool>,
}

/// A deployment request as the API received it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewDeploymentInput {
    pub model_id: Option<ModelId>,
    pub model_version: i64,
    pub strategy: String,
    pub target_environment: String,
    pub traffic_split: Option<BTreeMap<String, i64>>,
    pub health_check_url: String,
    pub stable_health_check_url: Option<String>,
    pub analysis: Option<AnalysisInput>,
    pub blue_green: Option<BlueGreenInput>,
    pub shadow: Option<ShadowInput>,
    pub ab_test: Option<AbTestInput>,
}

/// A validated deployment request; the model's existence is checked by the service.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeployment {
    pub model_id: ModelId,
    pub model_version: i64,
    pub target_environment: String,
    pub spec: DeploymentSpec,
}

/// Reads seconds into milliseconds within `[min, max]` seconds.
fn millis(
    v: &mut Validator,
    field: &str,
    value: Option<f64>,
    default_ms: u64,
    min_s: f64,
    max_s: f64,
) -> u64 {
    let Some(seconds) = value else {
        return default_ms;
    };
    if !seconds.is_finite() || seconds < min_s || seconds > max_s {
        v.push(
            field,
            format!("must be between {min_s} and {max_s} seconds, got {seconds}"),
        );
        return default_ms;
    }
    (seconds * 1000.0).round() as u64
}

fn whole<T: TryFrom<i64> + Copy>(
    v: &mut Validator,
    field: &str,
    value: Option<i64>,
    default: T,
    min: i64,
    max: i64,
) -> T {
    match value {
        None => default,
        Some(n) if (min..=max).contains(&n) => T::try_from(n).unwrap_or(default),
        Some(n) => {
            v.push(field, format!("must be between {min} and {max}, got {n}"));
            default
        }
    }
}

/// A target environment name: 1-63 letters, digits, `-`, `_` or `.`, starting with a letter
/// or digit.
pub fn parse_environment(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_well = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !(starts_well && all_well) {
        return Err(
            "may contain only letters, digits, - _ and ., starting with a letter or digit".into(),
        );
    }
    Ok(name.to_owned())
}

impl NewDeployment {
    pub fn parse(input: NewDeploymentInput, defaults: &DeploymentDefaults) -> Result<Self, Error> {
        let mut v = Validator::new();
        let strategy = v.check("strategy", input.strategy.parse::<Strategy>());
        v.ensure(
            input.model_id.is_some(),
            "model_id",
            "is required: the id of a promoted model",
        );
        v.ensure(
            input.model_version >= 1,
            "model_version",
            format!(
                "must be a model version (1 or more), got {}",
                input.model_version
            ),
        );
        let environment = v.check(
            "target_environment",
            parse_environment(&input.target_environment),
        );
        let candidate_url = v
            .check(
                "health_check_url",
                defaults.probe_targets.check_url(&input.health_check_url),
            )
            .map(String::from);
        let baseline_url = input.stable_health_check_url.as_deref().and_then(|url| {
            v.check(
                "stable_health_check_url",
                defaults.probe_targets.check_url(url),
            )
            .map(String::from)
        });
        let analysis = parse_analysis(&mut v, input.analysis.unwrap_or_default(), defaults);
        for (present, name) in [
            (input.blue_green.is_some(), Strategy::BlueGreen),
            (input.shadow.is_some(), Strategy::Shadow),
            (input.ab_test.is_some(), Strategy::AbTest),
        ] {
            if present && strategy.is_some_and(|s| s != name) {
                v.push(
                    name.as_str(),
                    format!("applies only to strategy {name}, not {}", input.strategy),
                );
            }
        }
        let mut rollback_window_ms = defaults.rollback_window_ms;
        let strategy_spec = strategy.map(|s| match s {
            Strategy::Canary => StrategySpec::Canary,
            Strategy::BlueGreen => {
                let bg = input.blue_green.clone().unwrap_or_default();
                rollback_window_ms = millis(
                    &mut v,
                    "blue_green.rollback_window_seconds",
                    bg.rollback_window_seconds,
                    defaults.rollback_window_ms,
                    0.0,
                    7.0 * 86_400.0,
                );
                StrategySpec::BlueGreen {
                    pre_promotion_checks: whole(
                        &mut v,
                        "blue_green.pre_promotion_checks",
                        bg.pre_promotion_checks,
                        defaults.pre_promotion_checks,
                        1,
                        1000,
                    ),
                }
            }
            Strategy::Shadow => {
                let shadow = input.shadow.clone().unwrap_or_default();
                StrategySpec::Shadow {
                    mirror_percent: whole(
                        &mut v,
                        "shadow.mirror_percent",
                        shadow.mirror_percent,
                        defaults.shadow_mirror_percent,
                        1,
                        100,
                    ),
                    duration_ms: millis(
                        &mut v,
                        "shadow.duration_seconds",
                        shadow.duration_seconds,
                        defaults.shadow_duration_ms,
                        0.1,
                        30.0 * 86_400.0,
                    ),
                }
            }
            Strategy::AbTest => {
                let ab = input.ab_test.clone().unwrap_or_default();
                StrategySpec::AbTest {
                    duration_ms: millis(
                        &mut v,
                        "ab_test.duration_seconds",
                        ab.duration_seconds,
                        defaults.ab_test_duration_ms,
                        0.1,
                        30.0 * 86_400.0,
                    ),
                    winner: parse_winner(&mut v, &ab),
                    auto_promote: ab.auto_promote.unwrap_or(false),
                }
            }
        });
        let split = strategy.and_then(|s| {
            parse_split(
                &mut v,
                s,
                input.traffic_split.as_ref(),
                analysis.step_percent,
            )
        });
        v.finish(|| Self {
            model_id: input.model_id.unwrap_or_else(ModelId::generate),
            model_version: input.model_version,
            target_environment: environment.unwrap_or_default(),
            spec: DeploymentSpec {
                strategy: strategy_spec.unwrap_or(StrategySpec::Canary),
                analysis,
                candidate_health_url: candidate_url.unwrap_or_default(),
                baseline_health_url: baseline_url,
                initial_split: split.unwrap_or(TrafficSplit::BASELINE_ONLY),
                rollback_window_ms,
            },
        })
    }
}

fn parse_analysis(
    v: &mut Validator,
    input: AnalysisInput,
    defaults: &DeploymentDefaults,
) -> AnalysisPolicy {
    let d = &defaults.analysis;
    let probe_interval_ms = millis(
        v,
        "analysis.probe_interval_seconds",
        input.probe_interval_seconds,
        d.probe_interval_ms,
        0.05,
        3600.0,
    );
    let window_ms = millis(
        v,
        "analysis.window_seconds",
        input.window_seconds,
        d.window_ms.max(probe_interval_ms),
        0.05,
        86_400.0,
    );
    if window_ms < probe_interval_ms {
        v.push(
            "analysis.window_seconds",
            "must be at least one probe interval, or no probe could ever fall inside it",
        );
    } else if window_ms / probe_interval_ms.max(1) > MAX_PROBES_PER_WINDOW {
        v.push(
            "analysis.window_seconds",
            format!(
                "may hold at most {MAX_PROBES_PER_WINDOW} probe intervals; lengthen \
                 probe_interval_seconds or shorten the window"
            ),
        );
    }
    let error_threshold = match input.error_threshold {
        None => d.error_threshold,
        Some(t) if t.is_finite() && (0.0..=1.0).contains(&t) => t,
        Some(t) => {
            v.push(
                "analysis.error_threshold",
                format!("must be a rate between 0 and 1, got {t}"),
            );
            d.error_threshold
        }
    };
    AnalysisPolicy {
        step_percent: whole(
            v,
            "analysis.step_percent",
            input.step_percent,
            d.step_percent,
            1,
            100,
        ),
        step_interval_ms: millis(
            v,
            "analysis.step_interval_seconds",
            input.step_interval_seconds,
            d.step_interval_ms,
            0.05,
            DAY_MS as f64 / 1000.0,
        ),
        probe_interval_ms,
        window_ms,
        error_threshold,
        min_samples: whole(
            v,
            "analysis.min_samples",
            input.min_samples,
            d.min_samples,
            1,
            1_000_000_000,
        ),
        progress_deadline_ms: millis(
            v,
            "analysis.progress_deadline_seconds",
            input.progress_deadline_seconds,
            d.progress_deadline_ms.max(probe_interval_ms),
            0.05,
            7.0 * 86_400.0,
        ),
    }
}

fn parse_winner(v: &mut Validator, ab: &AbTestInput) -> WinnerMetric {
    let direction = match ab.winner_direction.as_deref() {
        None => None,
        Some("max") => Some(true),
        Some("min") => Some(false),
        Some(other) => {
            v.push(
                "ab_test.winner_direction",
                format!("expected max or min, got {other:?}"),
            );
            None
        }
    };
    let metric = ab.winner_metric.as_deref().unwrap_or("error_rate");
    let metric = match metric {
        "error_rate" => WinnerMetric::ErrorRate,
        "latency_p99_ms" => WinnerMetric::LatencyP99,
        name => {
            let name = name.strip_prefix("metrics.").unwrap_or(name);
            if let Err(message) = validate_key(name) {
                v.push("ab_test.winner_metric", message);
            }
            return WinnerMetric::Reported {
                name: name.to_owned(),
                higher_is_better: direction.unwrap_or(true),
            };
        }
    };
    if direction == Some(true) {
        v.push(
            "ab_test.winner_direction",
            format!(
                "{} is better when lower; only reported metrics take max",
                metric.name()
            ),
        );
    }
    metric
}

/// The starting split: given weights checked against the strategy, or its default.
fn parse_split(
    v: &mut Validator,
    strategy: Strategy,
    given: Option<&BTreeMap<String, i64>>,
    step_percent: u8,
) -> Option<TrafficSplit> {
    let (baseline, candidate) = strategy.variant_names();
    let Some(given) = given else {
        return Some(match strategy {
            Strategy::Canary => TrafficSplit::candidate_share(step_percent.min(99)),
            Strategy::AbTest => TrafficSplit::candidate_share(50),
            Strategy::Shadow | Strategy::BlueGreen => TrafficSplit::BASELINE_ONLY,
        });
    };
    let mut valid = true;
    for (key, weight) in given {
        if strategy.role_of(key).is_none() {
            v.push(
                format!("traffic_split.{key}"),
                format!("{strategy} splits traffic between {baseline} and {candidate}"),
            );
            valid = false;
        } else if !(0..=100).contains(weight) {
            v.push(
                format!("traffic_split.{key}"),
                format!("must be a whole percentage from 0 to 100, got {weight}"),
            );
            valid = false;
        }
    }
    for name in [baseline, candidate] {
        if !given.contains_key(name) {
            v.push(format!("traffic_split.{name}"), "is required");
            valid = false;
        }
    }
    if !valid {
        return None;
    }
    let (b, c) = (given[baseline], given[candidate]);
    if b + c != 100 {
        v.push(
            "traffic_split",
            format!("weights must sum to 100, got {}", b + c),
        );
        return None;
    }
    let rule = match strategy {
        Strategy::Canary if c == 100 => {
            Some("the canary starts below 100; use promote to skip steps")
        }
        Strategy::AbTest if c == 0 || b == 0 => Some("both variants of an A/B test need traffic"),
        Strategy::BlueGreen if c != 0 => {
            Some("green starts at 0 and switches once its checks pass")
        }
        Strategy::Shadow if c != 0 => Some("the shadow serves no traffic; it gets a mirror"),
        _ => None,
    };
    if let Some(rule) = rule {
        v.push(format!("traffic_split.{candidate}"), rule);
        return None;
    }
    Some(TrafficSplit::candidate_share(u8::try_from(c).unwrap_or(0)))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
pub(crate) mod tests;
