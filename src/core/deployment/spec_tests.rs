//! Parsing deployment requests: defaults, every invalid field at once, splits per strategy.

use super::*;
use crate::core::validation::FieldError;

pub(crate) fn defaults() -> DeploymentDefaults {
    DeploymentDefaults {
        analysis: AnalysisPolicy {
            step_percent: 10,
            step_interval_ms: 60_000,
            probe_interval_ms: 5_000,
            window_ms: 30_000,
            error_threshold: 0.05,
            min_samples: 5,
            progress_deadline_ms: 600_000,
        },
        rollback_window_ms: 300_000,
        pre_promotion_checks: 3,
        shadow_mirror_percent: 100,
        shadow_duration_ms: 600_000,
        ab_test_duration_ms: 3_600_000,
        probe_targets: ProbeTargetPolicy::default(),
    }
}

pub(crate) fn input(strategy: &str) -> NewDeploymentInput {
    NewDeploymentInput {
        model_id: Some(ModelId::generate()),
        model_version: 3,
        strategy: strategy.into(),
        target_environment: "production".into(),
        health_check_url: "http://10.0.0.7:8080/health".into(),
        ..Default::default()
    }
}

fn fields(error: Error) -> Vec<String> {
    match error {
        Error::Validation(errors) => errors
            .into_iter()
            .map(|FieldError { field, .. }| field)
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn a_canary_request_takes_its_defaults_from_the_settings() {
    let parsed = NewDeployment::parse(input("canary"), &defaults()).unwrap();

    assert_eq!(parsed.spec.strategy, StrategySpec::Canary);
    assert_eq!(parsed.spec.initial_split, TrafficSplit::candidate_share(10));
    assert_eq!(parsed.spec.analysis, defaults().analysis);
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let mut bad = input("canary");
    bad.model_version = 0;
    bad.target_environment = "prod env".into();
    bad.health_check_url = "http://169.254.169.254/".into();
    bad.traffic_split = Some(BTreeMap::from([
        ("stable".into(), 80),
        ("canary".into(), 30),
    ]));
    bad.analysis = Some(AnalysisInput {
        error_threshold: Some(1.5),
        step_percent: Some(0),
        ..Default::default()
    });
    bad.shadow = Some(ShadowInput::default());

    let mut found = fields(NewDeployment::parse(bad, &defaults()).unwrap_err());
    found.sort();

    assert_eq!(
        found,
        [
            "analysis.error_threshold",
            "analysis.step_percent",
            "health_check_url",
            "model_version",
            "shadow",
            "target_environment",
            "traffic_split",
        ]
    );
}

#[test]
fn a_window_of_more_than_a_thousand_probes_is_refused() {
    let mut wide = input("canary");
    wide.analysis = Some(AnalysisInput {
        probe_interval_seconds: Some(0.05),
        window_seconds: Some(3600.0),
        ..Default::default()
    });
    let mut fitting = input("canary");
    fitting.analysis = Some(AnalysisInput {
        probe_interval_seconds: Some(1.0),
        window_seconds: Some(1000.0),
        ..Default::default()
    });

    let found = fields(NewDeployment::parse(wide, &defaults()).unwrap_err());

    assert_eq!(found, ["analysis.window_seconds"]);
    assert!(NewDeployment::parse(fitting, &defaults()).is_ok());
}

#[test]
fn split_keys_follow_the_strategy() {
    let mut bad = input("blue_green");
    bad.traffic_split = Some(BTreeMap::from([
        ("stable".into(), 100),
        ("canary".into(), 0),
    ]));

    let mut found = fields(NewDeployment::parse(bad, &defaults()).unwrap_err());
    found.sort();

    assert_eq!(
        found,
        [
            "traffic_split.blue",
            "traffic_split.canary",
            "traffic_split.green",
            "traffic_split.stable"
        ]
    );
}

#[test]
fn each_strategy_keeps_its_own_rule_for_the_starting_split() {
    let split = |strategy: &str, b: &str, c: &str, wb: i64, wc: i64| {
        let mut request = input(strategy);
        request.traffic_split = Some(BTreeMap::from([(b.into(), wb), (c.into(), wc)]));
        NewDeployment::parse(request, &defaults())
    };

    assert!(split("canary", "stable", "canary", 0, 100).is_err());
    assert!(split("ab_test", "a", "b", 100, 0).is_err());
    assert!(split("blue_green", "blue", "green", 50, 50).is_err());
    assert!(split("shadow", "stable", "shadow", 90, 10).is_err());
    let ab = split("ab_test", "a", "b", 70, 30).unwrap();
    assert_eq!(ab.spec.initial_split, TrafficSplit::candidate_share(30));
}

#[test]
fn strategy_options_are_read_in_fractions_of_a_second() {
    let mut request = input("ab_test");
    request.ab_test = Some(AbTestInput {
        duration_seconds: Some(1.5),
        winner_metric: Some("metrics.conversion".into()),
        winner_direction: None,
        auto_promote: Some(true),
    });

    let parsed = NewDeployment::parse(request, &defaults()).unwrap();

    assert_eq!(
        parsed.spec.strategy,
        StrategySpec::AbTest {
            duration_ms: 1500,
            winner: WinnerMetric::Reported {
                name: "conversion".into(),
                higher_is_better: true
            },
            auto_promote: true,
        }
    );
}

#[test]
fn the_window_must_hold_at_least_one_probe() {
    let mut request = input("canary");
    request.analysis = Some(AnalysisInput {
        probe_interval_seconds: Some(10.0),
        window_seconds: Some(2.0),
        ..Default::default()
    });

    let found = fields(NewDeployment::parse(request, &defaults()).unwrap_err());

    assert_eq!(found, ["analysis.window_seconds"]);
}
