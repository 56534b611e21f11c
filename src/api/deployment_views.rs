//! Response bodies of the deployment routes: a deployment as its users see it, the evidence
//! of its decisions, and its history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::core::deployment::machine::{LastProbe, Outcome};
use crate::core::deployment::{
    Deployment, Evidence, HistoryEntry, Role, StrategySpec, TrafficReport, VariantEvidence,
};

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficReportResponse {
    pub variant: String,
    pub requests: u64,
    pub errors: u64,
    pub latency_p99_ms: Option<f64>,
    pub window_seconds: f64,
    pub metrics: BTreeMap<String, f64>,
    pub received_at: DateTime<Utc>,
}

impl TrafficReportResponse {
    pub fn of(report: TrafficReport, variant: &str) -> Self {
        Self {
            variant: variant.to_owned(),
            requests: report.requests,
            errors: report.errors,
            latency_p99_ms: report.latency_p99_ms,
            window_seconds: report.window_seconds,
            metrics: report.metrics,
            received_at: report.received_at,
        }
    }
}

/// The analysis settings in force, times in seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalysisResponse {
    pub step_percent: u8,
    pub step_interval_seconds: f64,
    pub probe_interval_seconds: f64,
    pub window_seconds: f64,
    pub error_threshold: f64,
    pub min_samples: u64,
    pub progress_deadline_seconds: f64,
}

/// What one variant's analysis window held.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantEvidenceResponse {
    pub variant: String,
    /// `baseline` or `candidate`.
    pub role: String,
    /// Probes plus reported requests.
    pub samples: u64,
    pub errors: u64,
    /// `errors / samples`; null without samples.
    pub error_rate: Option<f64>,
    pub probes: u64,
    pub probe_failures: u64,
    pub requests: u64,
    pub request_errors: u64,
    pub latency_p99_ms: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
}

impl From<&VariantEvidence> for VariantEvidenceResponse {
    fn from(e: &VariantEvidence) -> Self {
        Self {
            variant: e.variant.clone(),
            role: e.role.as_str().to_owned(),
            samples: e.samples,
            errors: e.errors,
            error_rate: e.error_rate,
            probes: e.probes,
            probe_failures: e.probe_failures,
            requests: e.requests,
            request_errors: e.request_errors,
            latency_p99_ms: e.latency_p99_ms,
            metrics: e.metrics.clone(),
        }
    }
}

/// The observations a decision was made on.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceResponse {
    pub threshold: f64,
    pub min_samples: u64,
    pub window_seconds: f64,
    pub variants: Vec<VariantEvidenceResponse>,
}

impl From<&Evidence> for EvidenceResponse {
    fn from(e: &Evidence) -> Self {
        Self {
            threshold: e.threshold,
            min_samples: e.min_samples,
            window_seconds: e.window_seconds,
            variants: e.variants.iter().map(Into::into).collect(),
        }
    }
}

/// How a succeeded deployment came out: `passed`, or the A/B test's `winner`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeResponse {
    #[schema(example = "winner")]
    pub kind: String,
    /// The winning variant (A/B test).
    pub variant: Option<String>,
    pub metric: Option<String>,
    pub baseline_value: Option<f64>,
    pub candidate_value: Option<f64>,
}

impl From<&Outcome> for OutcomeResponse {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Passed => Self {
                kind: "passed".into(),
                variant: None,
                metric: None,
                baseline_value: None,
                candidate_value: None,
            },
            Outcome::Winner {
                variant,
                metric,
                baseline_value,
                candidate_value,
                ..
            } => Self {
                kind: "winner".into(),
                variant: Some(variant.clone()),
                metric: Some(metric.clone()),
                baseline_value: Some(*baseline_value),
                candidate_value: Some(*candidate_value),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeResponse {
    pub at: DateTime<Utc>,
    /// A 2xx answer within the timeout.
    pub ok: bool,
    pub latency_ms: u32,
    /// Why it failed.
    pub detail: Option<String>,
}

impl From<&LastProbe> for ProbeResponse {
    fn from(p: &LastProbe) -> Self {
        Self {
            at: p.at,
            ok: p.ok,
            latency_ms: p.latency_ms,
            detail: p.detail.clone(),
        }
    }
}

/// The latest health of one variant.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantHealthResponse {
    /// `baseline` or `candidate`.
    pub role: String,
    pub health_check_url: Option<String>,
    pub last_probe: Option<ProbeResponse>,
    /// From the latest analysis; null before the first or without samples.
    pub error_rate: Option<f64>,
    pub samples: u64,
    pub latency_p99_ms: Option<f64>,
}

/// Strategy options in force (those of the deployment's strategy only).
#[derive(Debug, Serialize, ToSchema)]
pub struct StrategyOptionsResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_promotion_checks: Option<u32>,
    pub rollback_window_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner_metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner_direction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_promote: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentResponse {
    pub id: Uuid,
    pub model_id: Uuid,
    pub model_version: i64,
    /// The version serving when the deployment was created, if any.
    pub baseline_version: Option<i64>,
    #[schema(example = "canary")]
    pub strategy: String,
    pub target_environment: String,
    /// `pending`, `progressing`, `paused`, `succeeded`, `rolled_back` or `failed`.
    #[schema(example = "progressing")]
    pub status: String,
    /// Where the deployment is within its strategy, such as `stepping` or `pre_promotion`.
    #[schema(example = "stepping")]
    pub phase: String,
    /// The weights the serving layer is told to apply now.
    #[schema(example = json!({"stable": 80, "canary": 20}))]
    pub traffic_split: BTreeMap<String, u8>,
    /// Percent of live traffic mirrored to the candidate (shadow).
    pub mirror_percent: u8,
    /// Traffic steps taken so far.
    pub current_step: u32,
    /// Latest health per variant, keyed by variant name.
    pub health: BTreeMap<String, VariantHealthResponse>,
    /// The evidence of the latest analysis.
    pub evidence: Option<EvidenceResponse>,
    /// Why the deployment ended, or why it holds.
    pub reason: Option<String>,
    pub outcome: Option<OutcomeResponse>,
    pub health_check_url: String,
    pub stable_health_check_url: Option<String>,
    pub analysis: AnalysisResponse,
    pub options: StrategyOptionsResponse,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub promoted_at: Option<DateTime<Utc>>,
    /// Increases with every saved change.
    pub version: i64,
}

fn options(d: &Deployment) -> StrategyOptionsResponse {
    let mut options = StrategyOptionsResponse {
        pre_promotion_checks: None,
        rollback_window_seconds: seconds(d.spec.rollback_window_ms),
        mirror_percent: None,
        duration_seconds: None,
        winner_metric: None,
        winner_direction: None,
        auto_promote: None,
    };
    match &d.spec.strategy {
        StrategySpec::Canary => {}
        StrategySpec::BlueGreen {
            pre_promotion_checks,
        } => options.pre_promotion_checks = Some(*pre_promotion_checks),
        StrategySpec::Shadow {
            mirror_percent,
            duration_ms,
        } => {
            options.mirror_percent = Some(*mirror_percent);
            options.duration_seconds = Some(seconds(*duration_ms));
        }
        StrategySpec::AbTest {
            duration_ms,
            winner,
            auto_promote,
        } => {
            options.duration_seconds = Some(seconds(*duration_ms));
            options.winner_metric = Some(winner.name().to_owned());
            let direction = if winner.higher_is_better() {
                "max"
            } else {
                "min"
            };
            options.winner_direction = Some(direction.to_owned());
            options.auto_promote = Some(*auto_promote);
        }
    }
    options
}

fn health(d: &Deployment) -> BTreeMap<String, VariantHealthResponse> {
    let strategy = d.strategy();
    [Role::Baseline, Role::Candidate]
        .into_iter()
        .map(|role| {
            let url = match role {
                Role::Candidate => Some(d.spec.candidate_health_url.clone()),
                Role::Baseline => d.spec.baseline_health_url.clone(),
            };
            let evidence = d.state.evidence.as_ref().and_then(|e| e.of(role));
            let health = VariantHealthResponse {
                role: role.as_str().to_owned(),
                health_check_url: url,
                last_probe: d.state.last_probe.get(role).as_ref().map(Into::into),
                error_rate: evidence.and_then(|e| e.error_rate),
                samples: evidence.map_or(0, |e| e.samples),
                latency_p99_ms: evidence.and_then(|e| e.latency_p99_ms),
            };
            (strategy.variant_name(role).to_owned(), health)
        })
        .collect()
}

impl From<Deployment> for DeploymentResponse {
    fn from(d: Deployment) -> Self {
        let analysis = &d.spec.analysis;
        Self {
            id: d.id.into(),
            model_id: d.model_id.into(),
            model_version: d.model_version,
            baseline_version: d.baseline_version,
            strategy: d.strategy().as_str().to_owned(),
            target_environment: d.target_environment.clone(),
            status: d.status.as_str().to_owned(),
            phase: d.state.phase.as_str().to_owned(),
            traffic_split: d.weights(),
            mirror_percent: d.state.mirror_percent,
            current_step: d.state.step,
            health: health(&d),
            evidence: d.state.evidence.as_ref().map(Into::into),
            reason: d.state.reason.clone(),
            outcome: d.state.outcome.as_ref().map(Into::into),
            health_check_url: d.spec.candidate_health_url.clone(),
            stable_health_check_url: d.spec.baseline_health_url.clone(),
            analysis: AnalysisResponse {
                step_percent: analysis.step_percent,
                step_interval_seconds: seconds(analysis.step_interval_ms),
                probe_interval_seconds: seconds(analysis.probe_interval_ms),
                window_seconds: seconds(analysis.window_ms),
                error_threshold: analysis.error_threshold,
                min_samples: analysis.min_samples,
                progress_deadline_seconds: seconds(analysis.progress_deadline_ms),
            },
            options: options(&d),
            created_by: d.created_by.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            started_at: d.state.started_at,
            finished_at: d.state.finished_at,
            promoted_at: d.state.promoted_at,
            version: d.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentPage {
    pub items: Vec<DeploymentResponse>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// One decision, with the evidence it was made on.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntryResponse {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// `created`, `started`, `traffic_shifted`, `paused`, `resumed`, `promoted`, `succeeded`,
    /// `rolled_back` or `failed`.
    #[schema(example = "traffic_shifted")]
    pub kind: String,
    /// `controller`, or `user:<subject>` for a person's command.
    pub actor: String,
    pub from_status: String,
    pub to_status: String,
    #[schema(example = json!({"stable": 70, "canary": 30}))]
    pub traffic_split: BTreeMap<String, u8>,
    pub mirror_percent: u8,
    pub step: u32,
    pub reason: Option<String>,
    pub evidence: Option<EvidenceResponse>,
    pub outcome: Option<OutcomeResponse>,
}

impl HistoryEntryResponse {
    pub fn of(entry: &HistoryEntry, deployment: &Deployment) -> Self {
        Self {
            id: entry.id,
            at: entry.at,
            kind: entry.kind.as_str().to_owned(),
            actor: entry.actor.clone(),
            from_status: entry.from_status.as_str().to_owned(),
            to_status: entry.to_status.as_str().to_owned(),
            traffic_split: entry.traffic.weights(deployment.strategy()),
            mirror_percent: entry.mirror_percent,
            step: entry.step,
            reason: entry.reason.clone(),
            evidence: entry.evidence.as_ref().map(Into::into),
            outcome: entry.outcome.as_ref().map(Into::into),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<HistoryEntryResponse>,
    pub next_page_token: Option<String>,
}
