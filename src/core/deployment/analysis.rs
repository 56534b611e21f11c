//! Judging a variant's health from what was observed of it.
//!
//! Two kinds of observation count: the controller's own probes of the variant's health URL
//! (one sample each, an error unless it answered 2xx in time) and the traffic the serving
//! layer reports (`requests` samples with `errors` among them). The error rate is the errors
//! over the samples of the analysis window. With fewer than `min_samples` samples the verdict
//! is *inconclusive*: no data never counts as a pass.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::deployment::spec::AnalysisPolicy;
use crate::core::deployment::{Role, Strategy};
use crate::core::names::validate_key;
use crate::core::validation::Validator;
use crate::core::Error;

/// One probe of a variant's health URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub at: DateTime<Utc>,
    /// A 2xx answer within the timeout.
    pub ok: bool,
    pub latency_ms: u32,
    /// What went wrong, such as `HTTP 503` or `timed out after 2000 ms`.
    pub detail: Option<String>,
}

/// A probe as kept in the deployment's state, for as long as it is inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Milliseconds since the epoch.
    #[serde(rename = "t")]
    pub at_ms: i64,
    pub ok: bool,
}

/// Traffic the serving layer observed for one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub role: Role,
    pub requests: u64,
    pub errors: u64,
    pub latency_p99_ms: Option<f64>,
    /// The stretch of time the figures cover, ending when the report arrived.
    pub window_seconds: f64,
    /// Further figures, such as a conversion rate, that an A/B test may be decided on.
    pub metrics: BTreeMap<String, f64>,
    pub received_at: DateTime<Utc>,
}

/// A traffic report as the serving layer sent it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficReportInput {
    pub variant: String,
    pub requests: i64,
    pub errors: i64,
    pub latency_p99_ms: Option<f64>,
    pub window_seconds: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
}

/// At most this many further metrics per report.
const MAX_REPORTED_METRICS: usize = 50;
/// Counts and values beyond these are refused: no real window holds more, and sums of a few
/// reports stay finite, so the evidence saved with a decision can always be read back.
const MAX_REPORTED_REQUESTS: i64 = 1_000_000_000_000;
const MAX_REPORTED_VALUE: f64 = 1e12;

impl TrafficReport {
    /// Checks a report for a deployment of `strategy`, every invalid field at once.
    pub fn parse(
        strategy: Strategy,
        input: TrafficReportInput,
        received_at: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let mut v = Validator::new();
        let (baseline, candidate) = strategy.variant_names();
        let role = strategy.role_of(&input.variant);
        v.ensure(
            role.is_some(),
            "variant",
            format!("a {strategy} deployment has the variants {baseline} and {candidate}"),
        );
        v.ensure(
            (0..=MAX_REPORTED_REQUESTS).contains(&input.requests),
            "requests",
            format!(
                "must be between 0 and {MAX_REPORTED_REQUESTS}, got {}",
                input.requests
            ),
        );
        v.ensure(
            (0..=input.requests.max(0)).contains(&input.errors),
            "errors",
            format!(
                "must be between 0 and the {} requests, got {}",
                input.requests, input.errors
            ),
        );
        if let Some(latency) = input.latency_p99_ms {
            v.ensure(
                latency.is_finite() && (0.0..=MAX_REPORTED_VALUE).contains(&latency),
                "latency_p99_ms",
                format!(
                    "must be a number of milliseconds from 0 to {MAX_REPORTED_VALUE}, got \
                     {latency}"
                ),
            );
        }
        let window_seconds = input.window_seconds.unwrap_or(60.0);
        v.ensure(
            window_seconds.is_finite() && window_seconds > 0.0 && window_seconds <= 86_400.0,
            "window_seconds",
            format!("must be more than 0 and at most 86400, got {window_seconds}"),
        );
        v.ensure(
            input.metrics.len() <= MAX_REPORTED_METRICS,
            "metrics",
            format!(
                "at most {MAX_REPORTED_METRICS} metrics per report, got {}",
                input.metrics.len()
            ),
        );
        for (key, value) in &input.metrics {
            if let Err(message) = validate_key(key) {
                v.push(format!("metrics.{key}"), message);
            } else if !(value.is_finite() && value.abs() <= MAX_REPORTED_VALUE) {
                v.push(
                    format!("metrics.{key}"),
                    format!(
                        "must be a number between -{MAX_REPORTED_VALUE} and {MAX_REPORTED_VALUE}"
                    ),
                );
            }
        }
        v.finish(|| Self {
            role: role.unwrap_or(Role::Candidate),
            requests: u64::try_from(input.requests).unwrap_or(0),
            errors: u64::try_from(input.errors).unwrap_or(0),
            latency_p99_ms: input.latency_p99_ms,
            window_seconds,
            metrics: input.metrics,
            received_at,
        })
    }
}

/// What the window holds for one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantEvidence {
    /// The variant's name in the strategy, such as `canary`.
    pub variant: String,
    pub role: Role,
    pub samples: u64,
    pub errors: u64,
    /// `errors / samples`; `None` without samples.
    pub error_rate: Option<f64>,
    pub probes: u64,
    pub probe_failures: u64,
    pub requests: u64,
    pub request_errors: u64,
    /// Request-weighted mean of the reported p99 latencies.
    pub latency_p99_ms: Option<f64>,
    /// Request-weighted means of the reported metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Observations (probes and reports) since the current step began.
    pub since_step: u64,
}

/// The evidence a decision was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub threshold: f64,
    pub min_samples: u64,
    pub window_seconds: f64,
    /// The baseline first, then the candidate.
    pub variants: Vec<VariantEvidence>,
}

impl Evidence {
    pub fn of(&self, role: Role) -> Option<&VariantEvidence> {
        self.variants.iter().find(|v| v.role == role)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// The evidence for one variant from the probes inside the window and the reports received
/// since `reports_from`.
pub fn evaluate(
    role: Role,
    variant: &str,
    probes: &[ProbeSample],
    reports: &[TrafficReport],
    window_start: DateTime<Utc>,
    reports_from: DateTime<Utc>,
    step_start: DateTime<Utc>,
) -> VariantEvidence {
    let from = window_start.timestamp_millis();
    let step = step_start.timestamp_millis();
    let probes: Vec<&ProbeSample> = probes.iter().filter(|p| p.at_ms >= from).collect();
    let reports: Vec<&TrafficReport> = reports
        .iter()
        .filter(|r| r.role == role && r.received_at >= reports_from)
        .collect();
    let probe_failures = probes.iter().filter(|p| !p.ok).count() as u64;
    let requests = reports
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.requests));
    let request_errors = reports
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.errors.min(r.requests)));
    let samples = (probes.len() as u64).saturating_add(requests);
    let errors = probe_failures.saturating_add(request_errors);
    let since_step = probes.iter().filter(|p| p.at_ms >= step).count() as u64
        + reports
            .iter()
            .filter(|r| r.received_at >= step_start)
            .count() as u64;
    VariantEvidence {
        variant: variant.to_owned(),
        role,
        samples,
        errors,
        error_rate: (samples > 0).then(|| errors as f64 / samples as f64),
        probes: probes.len() as u64,
        probe_failures,
        requests,
        request_errors,
        latency_p99_ms: weighted_mean(
            reports
                .iter()
                .filter_map(|r| r.latency_p99_ms.map(|l| (l, r.requests))),
        ),
        metrics: reported_metrics(&reports),
        since_step,
    }
}

/// Request-weighted mean; a report of no requests still counts once. `None` without values,
/// and rather than a number that JSON cannot hold.
fn weighted_mean(values: impl Iterator<Item = (f64, u64)>) -> Option<f64> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for (value, requests) in values {
        let w = requests.max(1) as f64;
        sum += value * w;
        weight += w;
    }
    let mean = sum / weight;
    (weight > 0.0 && mean.is_finite()).then_some(mean)
}

fn reported_metrics(reports: &[&TrafficReport]) -> BTreeMap<String, f64> {
    let keys: std::collections::BTreeSet<&String> =
        reports.iter().flat_map(|r| r.metrics.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let mean = weighted_mean(
                reports
                    .iter()
                    .filter_map(|r| r.metrics.get(key).map(|v| (*v, r.requests))),
            )?;
            Some((key.clone(), mean))
        })
        .collect()
}

/// Pass, fail or inconclusive, by the policy's threshold and minimum sample.
pub fn judge(evidence: &VariantEvidence, policy: &AnalysisPolicy) -> Verdict {
    match evidence.error_rate {
        Some(rate) if evidence.samples >= policy.min_samples => {
            if rate > policy.error_threshold {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        }
        _ => Verdict::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> AnalysisPolicy {
        crate::core::deployment::spec::tests::defaults().analysis
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn probe(seconds: i64, ok: bool) -> ProbeSample {
        ProbeSample {
            at_ms: at(seconds).timestamp_millis(),
            ok,
        }
    }

    fn report(role: Role, seconds: i64, requests: u64, errors: u64) -> TrafficReport {
        TrafficReport {
            role,
            requests,
            errors,
            latency_p99_ms: Some(100.0),
            window_seconds: 10.0,
            metrics: BTreeMap::from([("conversion".into(), 0.1)]),
            received_at: at(seconds),
        }
    }

    #[test]
    fn a_report_names_a_variant_of_its_strategy_and_counts_no_more_errors_than_requests() {
        let bad = TrafficReportInput {
            variant: "canary".into(),
            requests: 10,
            errors: 11,
            latency_p99_ms: Some(-1.0),
            window_seconds: Some(0.0),
            metrics: BTreeMap::from([("bad key!".into(), 1.0)]),
        };

        let Err(Error::Validation(errors)) = TrafficReport::parse(Strategy::AbTest, bad, at(0))
        else {
            panic!("the report must be refused");
        };

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "variant",
                "errors",
                "latency_p99_ms",
                "window_seconds",
                "metrics.bad key!"
            ]
        );
    }

    #[test]
    fn too_few_samples_is_inconclusive_even_when_all_fail() {
        let probes = [probe(1, false), probe(2, false)];

        let evidence = evaluate(Role::Candidate, "canary", &probes, &[], at(0), at(0), at(0));

        assert_eq!(evidence.error_rate, Some(1.0));
        assert_eq!(judge(&evidence, &policy()), Verdict::Inconclusive);
    }

    #[test]
    fn nothing_observed_is_inconclusive_not_a_pass() {
        let evidence = evaluate(Role::Candidate, "canary", &[], &[], at(0), at(0), at(0));

        assert_eq!(evidence.error_rate, None);
        assert_eq!(judge(&evidence, &policy()), Verdict::Inconclusive);
    }

    #[test]
    fn probes_and_reports_of_the_window_are_merged() {
        let probes = [probe(-100, false), probe(1, true), probe(2, false)];
        let reports = [
            report(Role::Candidate, 3, 98, 3),
            report(Role::Baseline, 3, 500, 100),
            report(Role::Candidate, -50, 1000, 1000),
        ];

        let evidence = evaluate(
            Role::Candidate,
            "canary",
            &probes,
            &reports,
            at(0),
            at(0),
            at(2),
        );

        assert_eq!(evidence.samples, 100);
        assert_eq!(evidence.errors, 4);
        assert_eq!(evidence.since_step, 2);
        assert_eq!(judge(&evidence, &policy()), Verdict::Pass);
    }

    #[test]
    fn an_error_rate_above_the_threshold_fails() {
        let reports = [report(Role::Candidate, 1, 100, 6)];

        let evidence = evaluate(
            Role::Candidate,
            "canary",
            &[],
            &reports,
            at(0),
            at(0),
            at(0),
        );

        assert_eq!(judge(&evidence, &policy()), Verdict::Fail);
    }

    #[test]
    fn reported_figures_are_weighted_by_requests() {
        let mut small = report(Role::Candidate, 1, 10, 0);
        small.latency_p99_ms = Some(1000.0);
        small.metrics.insert("conversion".into(), 1.0);
        let big = report(Role::Candidate, 2, 90, 0);

        let evidence = evaluate(
            Role::Candidate,
            "b",
            &[],
            &[small, big],
            at(0),
            at(0),
            at(0),
        );

        assert_eq!(evidence.latency_p99_ms, Some(190.0));
        assert!((evidence.metrics["conversion"] - 0.19).abs() < 1e-9);
    }
}
