//! Request bodies and query strings of the deployment routes.
//!
//! Every request field is optional or defaulted here, so that the domain's parser sees the
//! whole request and reports every invalid field at once instead of stopping at the first
//! missing one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::core::deployment::analysis::TrafficReportInput;
use crate::core::deployment::spec::{
    AbTestInput, AnalysisInput, BlueGreenInput, NewDeploymentInput, ShadowInput,
};

/// Overrides of the analysis defaults; times in seconds (fractions allowed).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisBody {
    /// Percentage points the canary grows by per step (1-100).
    #[schema(example = 10)]
    pub step_percent: Option<i64>,
    /// How long each step holds, at least, before the next.
    #[schema(example = 60)]
    pub step_interval_seconds: Option<f64>,
    /// Time between health probes of each variant.
    #[schema(example = 5)]
    pub probe_interval_seconds: Option<f64>,
    /// The error rate is measured over this much recent time.
    #[schema(example = 30)]
    pub window_seconds: Option<f64>,
    /// An error rate (0-1) above this, with at least `min_samples`, rolls back at once.
    #[schema(example = 0.05)]
    pub error_threshold: Option<f64>,
    /// Samples (probes plus reported requests) an analysis needs to be conclusive.
    #[schema(example = 5)]
    pub min_samples: Option<i64>,
    /// How long an inconclusive analysis may hold a due step before the deployment rolls back.
    #[schema(example = 600)]
    pub progress_deadline_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueGreenBody {
    /// Passing checks of green, at 0% traffic, before traffic switches to it.
    #[schema(example = 3)]
    pub pre_promotion_checks: Option<i64>,
    /// How long blue is kept, with green analysed, after the switch.
    #[schema(example = 300)]
    pub rollback_window_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowBody {
    /// Percent of live traffic mirrored to the shadow (1-100).
    #[schema(example = 100)]
    pub mirror_percent: Option<i64>,
    /// How long the shadow is analysed.
    #[schema(example = 600)]
    pub duration_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbTestBody {
    /// How long the split is held.
    #[schema(example = 3600)]
    pub duration_seconds: Option<f64>,
    /// `error_rate` (the default, lower wins), `latency_p99_ms` (lower wins), or the name of a
    /// metric the serving layer reports under `metrics`.
    #[schema(example = "conversion_rate")]
    pub winner_metric: Option<String>,
    /// For a reported metric: `max` (higher wins, the default) or `min`.
    #[schema(example = "max")]
    pub winner_direction: Option<String>,
    /// Give the winner all traffic when the test ends.
    #[schema(example = false)]
    pub auto_promote: Option<bool>,
}

/// Roll a promoted model version out to an environment.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeploymentRequest {
    /// A model promoted from a run (`GET /api/v1/models`).
    pub model_id: Option<Uuid>,
    /// One of the model's versions.
    #[serde(default)]
    #[schema(example = 3)]
    pub model_version: i64,
    /// `canary`, `ab_test`, `shadow` or `blue_green`.
    #[serde(default)]
    #[schema(example = "canary")]
    pub strategy: String,
    /// 1-63 letters, digits, `-`, `_` or `.`.
    #[serde(default)]
    #[schema(example = "production")]
    pub target_environment: String,
    /// The starting weights, integers summing to 100, keyed by the strategy's variants:
    /// canary `stable`/`canary`, ab_test `a`/`b`, blue_green `blue`/`green`, shadow
    /// `stable`/`shadow`.
    #[schema(example = json!({"stable": 90, "canary": 10}))]
    pub traffic_split: Option<BTreeMap<String, i64>>,
    /// The candidate's health endpoint: http or https; a 2xx answer is healthy.
    #[serde(default)]
    #[schema(example = "http://churn-v3.models.svc:8080/health")]
    pub health_check_url: String,
    /// The serving version's health endpoint, probed alongside.
    #[schema(example = "http://churn-v2.models.svc:8080/health")]
    pub stable_health_check_url: Option<String>,
    pub analysis: Option<AnalysisBody>,
    pub blue_green: Option<BlueGreenBody>,
    pub shadow: Option<ShadowBody>,
    pub ab_test: Option<AbTestBody>,
}

impl From<CreateDeploymentRequest> for NewDeploymentInput {
    fn from(body: CreateDeploymentRequest) -> Self {
        Self {
            model_id: body.model_id.map(Into::into),
            model_version: body.model_version,
            strategy: body.strategy,
            target_environment: body.target_environment,
            traffic_split: body.traffic_split,
            health_check_url: body.health_check_url,
            stable_health_check_url: body.stable_health_check_url,
            analysis: body.analysis.map(|a| AnalysisInput {
                step_percent: a.step_percent,
                step_interval_seconds: a.step_interval_seconds,
                probe_interval_seconds: a.probe_interval_seconds,
                window_seconds: a.window_seconds,
                error_threshold: a.error_threshold,
                min_samples: a.min_samples,
                progress_deadline_seconds: a.progress_deadline_seconds,
            }),
            blue_green: body.blue_green.map(|b| BlueGreenInput {
                pre_promotion_checks: b.pre_promotion_checks,
                rollback_window_seconds: b.rollback_window_seconds,
            }),
            shadow: body.shadow.map(|s| ShadowInput {
                mirror_percent: s.mirror_percent,
                duration_seconds: s.duration_seconds,
            }),
            ab_test: body.ab_test.map(|t| AbTestInput {
                duration_seconds: t.duration_seconds,
                winner_metric: t.winner_metric,
                winner_direction: t.winner_direction,
                auto_promote: t.auto_promote,
            }),
        }
    }
}

/// Why a person rolls back.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[schema(example = "customer complaints about churn scores")]
    pub reason: Option<String>,
}

/// Traffic the serving layer observed on one variant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficReportRequest {
    /// The variant's name in the strategy, such as `canary`.
    #[serde(default)]
    #[schema(example = "canary")]
    pub variant: String,
    #[serde(default)]
    #[schema(example = 1200)]
    pub requests: i64,
    #[serde(default)]
    #[schema(example = 3)]
    pub errors: i64,
    #[schema(example = 85.5)]
    pub latency_p99_ms: Option<f64>,
    /// The time the counts cover.
    #[schema(example = 10)]
    pub window_seconds: Option<f64>,
    /// Further metrics, such as a conversion rate an A/B test is decided on.
    #[serde(default)]
    #[schema(example = json!({"conversion_rate": 0.031}))]
    pub metrics: BTreeMap<String, f64>,
}

impl From<TrafficReportRequest> for TrafficReportInput {
    fn from(body: TrafficReportRequest) -> Self {
        Self {
            variant: body.variant,
            requests: body.requests,
            errors: body.errors,
            latency_p99_ms: body.latency_p99_ms,
            window_seconds: body.window_seconds,
            metrics: body.metrics,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeploymentsQuery {
    /// Only deployments in this status.
    pub status: Option<String>,
    pub model_id: Option<Uuid>,
    pub target_environment: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}
