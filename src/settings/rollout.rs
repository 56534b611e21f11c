//! The deployment defaults (`AUMOS_MLOPS_*`) and the rollout controller (`AUMOS_CONTROLLER__*`).

use std::time::Duration;

use super::{Lookup, MlopsSettings, SettingsError};
use crate::core::deployment::probe_target::ProbeTargetPolicy;
use crate::core::deployment::spec::MAX_PROBES_PER_WINDOW;
use crate::core::deployment::{AnalysisPolicy, DeploymentDefaults};

/// The deployment and controller variables, with their defaults and meaning.
pub const ROLLOUT_VARIABLES: &[(&str, &str, &str)] = &[
    (
        "AUMOS_MLOPS_STEP_INTERVAL_SECONDS",
        "60",
        "Default time each canary step holds, at least",
    ),
    (
        "AUMOS_MLOPS_PROBE_INTERVAL_SECONDS",
        "5",
        "Default time between health probes of each variant",
    ),
    (
        "AUMOS_MLOPS_PROBE_TIMEOUT_MS",
        "2000",
        "A probe without a 2xx answer within this counts as an error",
    ),
    (
        "AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS",
        "",
        "Comma-separated networks and hosts probes may reach although refused by default \
         (loopback, link-local, cloud metadata)",
    ),
    (
        "AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS",
        "30",
        "Default window the error rate is measured over",
    ),
    (
        "AUMOS_MLOPS_MIN_SAMPLES",
        "5",
        "Default samples an analysis needs to be conclusive",
    ),
    (
        "AUMOS_MLOPS_PROGRESS_DEADLINE_SECONDS",
        "600",
        "Default time an inconclusive analysis may hold a due step",
    ),
    (
        "AUMOS_MLOPS_ROLLBACK_WINDOW_SECONDS",
        "300",
        "Default time a succeeded deployment can still be rolled back",
    ),
    (
        "AUMOS_MLOPS_BLUE_GREEN_PRE_PROMOTION_CHECKS",
        "3",
        "Default passing checks before blue-green switches",
    ),
    (
        "AUMOS_MLOPS_SHADOW_MIRROR_PERCENT",
        "100",
        "Default share of live traffic mirrored to a shadow",
    ),
    (
        "AUMOS_MLOPS_SHADOW_DURATION_SECONDS",
        "600",
        "Default time a shadow is analysed",
    ),
    (
        "AUMOS_MLOPS_AB_TEST_DURATION_SECONDS",
        "3600",
        "Default time an A/B test holds its split",
    ),
    (
        "AUMOS_CONTROLLER__ENABLED",
        "true",
        "Run the rollout controller in this replica",
    ),
    (
        "AUMOS_CONTROLLER__BATCH",
        "200",
        "Deployments the controller claims per pass",
    ),
    (
        "AUMOS_CONTROLLER__CONCURRENCY",
        "64",
        "Deployments the controller probes and decides at once",
    ),
    (
        "AUMOS_CONTROLLER__POLL_INTERVAL_MS",
        "100",
        "How often the controller looks for due deployments",
    ),
    (
        "AUMOS_CONTROLLER__LEASE_SECONDS",
        "15",
        "How long a claim keeps other replicas off a deployment",
    ),
];

#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub enabled: bool,
    pub batch: u32,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// What a deployment request leaves out.
    pub defaults: DeploymentDefaults,
    pub probe_timeout: Duration,
    pub controller: ControllerSettings,
}

/// Whole or fractional seconds within `[min, max]`, as milliseconds.
fn fractional_ms(
    env: &Lookup<'_>,
    variable: &str,
    min: f64,
    max: f64,
) -> Result<u64, SettingsError> {
    let value: f64 = env.parse(variable, "a number of seconds")?;
    if !(value.is_finite() && value >= min && value <= max) {
        return Err(SettingsError::new(
            variable,
            format!("expected between {min} and {max} seconds, got {value}"),
        ));
    }
    Ok((value * 1000.0).round() as u64)
}

pub(super) fn rollout_settings(
    env: &Lookup<'_>,
    mlops: &MlopsSettings,
) -> Result<RolloutSettings, SettingsError> {
    let probe_interval_ms = fractional_ms(env, "AUMOS_MLOPS_PROBE_INTERVAL_SECONDS", 0.05, 3600.0)?;
    let window_ms = fractional_ms(env, "AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS", 0.05, 86_400.0)?;
    if window_ms < probe_interval_ms {
        return Err(SettingsError::new(
            "AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS",
            "must be at least AUMOS_MLOPS_PROBE_INTERVAL_SECONDS, or no probe could fall \
             inside it",
        ));
    }
    if window_ms / probe_interval_ms.max(1) > MAX_PROBES_PER_WINDOW {
        return Err(SettingsError::new(
            "AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS",
            format!(
                "may span at most {MAX_PROBES_PER_WINDOW} times \
                 AUMOS_MLOPS_PROBE_INTERVAL_SECONDS"
            ),
        ));
    }
    let allowed = env
        .get("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS")
        .unwrap_or_default();
    let probe_targets = ProbeTargetPolicy::parse(&allowed)
        .map_err(|e| SettingsError::new("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS", e))?;
    let analysis = AnalysisPolicy {
        step_percent: mlops.canary_step_percent,
        step_interval_ms: fractional_ms(env, "AUMOS_MLOPS_STEP_INTERVAL_SECONDS", 0.05, 86_400.0)?,
        probe_interval_ms,
        window_ms,
        error_threshold: mlops.canary_error_threshold,
        min_samples: env.ranged("AUMOS_MLOPS_MIN_SAMPLES", 1, 1_000_000_000, "a count")?,
        progress_deadline_ms: fractional_ms(
            env,
            "AUMOS_MLOPS_PROGRESS_DEADLINE_SECONDS",
            0.05,
            7.0 * 86_400.0,
        )?,
    };
    Ok(RolloutSettings {
        defaults: DeploymentDefaults {
            analysis,
            rollback_window_ms: fractional_ms(
                env,
                "AUMOS_MLOPS_ROLLBACK_WINDOW_SECONDS",
                0.0,
                7.0 * 86_400.0,
            )?,
            pre_promotion_checks: env.ranged(
                "AUMOS_MLOPS_BLUE_GREEN_PRE_PROMOTION_CHECKS",
                1,
                1000,
                "a count",
            )?,
            shadow_mirror_percent: env.ranged(
                "AUMOS_MLOPS_SHADOW_MIRROR_PERCENT",
                1,
                100,
                "a percentage",
            )?,
            shadow_duration_ms: fractional_ms(
                env,
                "AUMOS_MLOPS_SHADOW_DURATION_SECONDS",
                0.1,
                30.0 * 86_400.0,
            )?,
            ab_test_duration_ms: fractional_ms(
                env,
                "AUMOS_MLOPS_AB_TEST_DURATION_SECONDS",
                0.1,
                30.0 * 86_400.0,
            )?,
            probe_targets,
        },
        probe_timeout: Duration::from_millis(env.ranged(
            "AUMOS_MLOPS_PROBE_TIMEOUT_MS",
            10,
            60_000,
            "milliseconds",
        )?),
        controller: ControllerSettings {
            enabled: env.bool("AUMOS_CONTROLLER__ENABLED")?,
            batch: env.ranged("AUMOS_CONTROLLER__BATCH", 1, 10_000, "a count")?,
            concurrency: env.ranged("AUMOS_CONTROLLER__CONCURRENCY", 1, 4096, "a count")?,
            poll_interval: Duration::from_millis(env.ranged(
                "AUMOS_CONTROLLER__POLL_INTERVAL_MS",
                10,
                60_000,
                "milliseconds",
            )?),
            lease: env.seconds("AUMOS_CONTROLLER__LEASE_SECONDS", 1, 3600)?,
        },
    })
}
