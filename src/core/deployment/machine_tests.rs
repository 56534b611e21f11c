//! The rollout state machine, strategy by strategy and transition by transition.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::core::deployment::spec::tests::defaults;
use crate::core::deployment::spec::DeploymentSpec;
use crate::core::deployment::{Deployment, Role, Status, TrafficSplit};
use crate::core::{DeploymentId, ModelId, TenantId};

fn at(seconds: f64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_800_000_000_000 + (seconds * 1000.0) as i64)
        .unwrap()
}

fn deployment(strategy: StrategySpec, split: TrafficSplit) -> Deployment {
    let spec = DeploymentSpec {
        strategy,
        analysis: defaults().analysis,
        candidate_health_url: "http://10.0.0.2/health".into(),
        baseline_health_url: Some("http://10.0.0.1/health".into()),
        initial_split: split,
        rollback_window_ms: 300_000,
    };
    Deployment {
        id: DeploymentId::generate(),
        tenant_id: TenantId::generate(),
        model_id: ModelId::generate(),
        model_version: 7,
        baseline_version: Some(6),
        target_environment: "production".into(),
        state: RolloutState::initial(&spec),
        spec,
        status: Status::Pending,
        created_by: "alice".into(),
        created_at: at(0.0),
        updated_at: at(0.0),
        version: 1,
        next_tick_at: Some(at(0.0)),
    }
}

fn canary() -> Deployment {
    deployment(StrategySpec::Canary, TrafficSplit::candidate_share(10))
}

fn probe(role: Role, t: DateTime<Utc>, ok: bool) -> (Role, ProbeResult) {
    (
        role,
        ProbeResult {
            at: t,
            ok,
            latency_ms: 3,
            detail: (!ok).then(|| "HTTP 500".to_owned()),
        },
    )
}

/// Both variants probed once, the candidate answering `ok`.
fn probed(ok: bool, t: DateTime<Utc>) -> Observations {
    Observations {
        probes: vec![
            probe(Role::Baseline, t, true),
            probe(Role::Candidate, t, ok),
        ],
        reports: Vec::new(),
    }
}

/// Ticks every probe interval from `from` up to `until` seconds, the candidate answering by
/// `ok(t)`; returns the last deployment and every history entry on the way.
fn drive(
    mut d: Deployment,
    from: f64,
    until: f64,
    ok: impl Fn(f64) -> bool,
) -> (Deployment, Vec<HistoryEntry>) {
    let mut history = Vec::new();
    let mut t = from;
    while t <= until && d.status.is_active() {
        let decision = tick(&d, &probed(ok(t), at(t)), at(t));
        history.extend(decision.history);
        d = decision.deployment;
        t += 5.0;
    }
    (d, history)
}

fn kinds(history: &[HistoryEntry]) -> Vec<TransitionKind> {
    history.iter().map(|h| h.kind).collect()
}

#[test]
fn a_healthy_canary_walks_step_by_step_to_full_traffic_and_succeeds() {
    let (d, history) = drive(canary(), 0.0, 3000.0, |_| true);

    let shares: Vec<u8> = history
        .iter()
        .filter(|h| h.kind == TransitionKind::TrafficShifted)
        .map(|h| h.traffic.candidate())
        .collect();
    assert_eq!(shares, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(d.status, Status::Succeeded);
    assert!(d.state.adopted);
    assert_eq!(d.next_tick_at, None);
    assert_eq!(history.last().unwrap().kind, TransitionKind::Succeeded);
}

#[test]
fn each_canary_step_waits_its_interval_with_passing_analysis() {
    let (_, history) = drive(canary(), 0.0, 200.0, |_| true);

    let times: Vec<i64> = history
        .iter()
        .map(|h| (h.at - at(0.0)).num_seconds())
        .collect();
    assert_eq!(times, [0, 60, 120, 180]);
    let evidence = history[1].evidence.as_ref().unwrap();
    assert!(evidence.of(Role::Candidate).unwrap().samples >= 5);
}

#[test]
fn a_failing_canary_rolls_back_at_its_first_failed_probe_with_the_evidence() {
    let (d, history) = drive(canary(), 0.0, 300.0, |t| t < 100.0);

    assert_eq!(d.status, Status::RolledBack);
    assert_eq!(d.state.traffic, TrafficSplit::BASELINE_ONLY);
    let rolled_back = history.last().unwrap();
    assert_eq!(rolled_back.kind, TransitionKind::RolledBack);
    assert_eq!((rolled_back.at - at(0.0)).num_seconds(), 100);
    let candidate = rolled_back
        .evidence
        .as_ref()
        .unwrap()
        .of(Role::Candidate)
        .unwrap();
    assert_eq!(candidate.errors, 1);
    assert!(candidate.error_rate.unwrap() > 0.05);
    assert!(rolled_back
        .reason
        .as_ref()
        .unwrap()
        .contains("above the threshold"));
    assert_eq!(
        kinds(&history[history.len() - 2..]),
        [TransitionKind::TrafficShifted, TransitionKind::RolledBack]
    );
}

#[test]
fn no_observations_hold_the_step_then_roll_back_past_the_progress_deadline() {
    let mut d = tick(&canary(), &Observations::default(), at(0.0)).deployment;
    let mut t = 5.0;
    while d.status.is_active() && t < 2000.0 {
        d = tick(&d, &Observations::default(), at(t)).deployment;
        t += 5.0;
    }

    assert_eq!(d.status, Status::RolledBack);
    // Due after the 60 s step, then 600 s of deadline.
    assert_eq!((d.state.finished_at.unwrap() - at(0.0)).num_seconds(), 665);
    assert!(d.state.reason.unwrap().contains("inconclusive"));
}

#[test]
fn too_few_failures_among_many_samples_do_not_roll_back() {
    let mut d = tick(&canary(), &probed(true, at(0.0)), at(0.0)).deployment;
    let reports = vec![TrafficReport {
        role: Role::Candidate,
        requests: 1000,
        errors: 10,
        latency_p99_ms: Some(80.0),
        window_seconds: 10.0,
        metrics: BTreeMap::new(),
        received_at: at(4.0),
    }];

    d = tick(
        &d,
        &Observations {
            probes: vec![probe(Role::Candidate, at(5.0), false)],
            reports,
        },
        at(5.0),
    )
    .deployment;

    assert_eq!(d.status, Status::Progressing);
}

fn blue_green() -> Deployment {
    deployment(
        StrategySpec::BlueGreen {
            pre_promotion_checks: 3,
        },
        TrafficSplit::BASELINE_ONLY,
    )
}

#[test]
fn blue_green_switches_at_once_after_its_checks_and_succeeds_after_the_window() {
    let (d, history) = drive(blue_green(), 0.0, 1000.0, |_| true);

    let shifts: Vec<(i64, u8)> = history
        .iter()
        .filter(|h| h.kind == TransitionKind::TrafficShifted)
        .map(|h| ((h.at - at(0.0)).num_seconds(), h.traffic.candidate()))
        .collect();
    // Five samples are needed before the first pass, then three passes in a row.
    assert_eq!(shifts, [(0, 0), (30, 100)]);
    assert_eq!(d.status, Status::Succeeded);
    assert_eq!((d.state.finished_at.unwrap() - at(0.0)).num_seconds(), 330);
    assert!(d.state.adopted);
}

#[test]
fn blue_green_switches_back_to_blue_when_green_fails_after_the_switch() {
    let (d, history) = drive(blue_green(), 0.0, 1000.0, |t| t < 100.0);

    assert_eq!(d.status, Status::RolledBack);
    assert_eq!(d.state.traffic, TrafficSplit::BASELINE_ONLY);
    let shares: Vec<u8> = history
        .iter()
        .filter(|h| h.kind == TransitionKind::TrafficShifted)
        .map(|h| h.traffic.candidate())
        .collect();
    assert_eq!(shares, [0, 100, 0]);
}

#[test]
fn blue_green_never_switches_when_green_fails_its_checks() {
    let (d, history) = drive(blue_green(), 0.0, 1000.0, |t| t < 20.0);

    assert_eq!(d.status, Status::RolledBack);
    assert!(history.iter().all(|h| h.traffic.candidate() == 0));
}

fn shadow() -> Deployment {
    deployment(
        StrategySpec::Shadow {
            mirror_percent: 40,
            duration_ms: 120_000,
        },
        TrafficSplit::BASELINE_ONLY,
    )
}

#[test]
fn a_passing_shadow_stops_mirroring_and_succeeds_without_serving_traffic() {
    let (d, history) = drive(shadow(), 0.0, 1000.0, |_| true);

    assert_eq!(history[0].mirror_percent, 40);
    assert_eq!(d.status, Status::Succeeded);
    assert_eq!(d.state.mirror_percent, 0);
    assert_eq!(d.state.traffic, TrafficSplit::BASELINE_ONLY);
    assert!(!d.state.adopted);
    assert_eq!(d.state.outcome, Some(Outcome::Passed));
}

#[test]
fn a_failing_shadow_stops_mirroring_and_rolls_back() {
    let (d, history) = drive(shadow(), 0.0, 1000.0, |t| t < 60.0);

    assert_eq!(d.status, Status::RolledBack);
    assert_eq!(d.state.mirror_percent, 0);
    assert_eq!(history[history.len() - 2].mirror_percent, 0);
}

#[test]
fn a_pause_stops_a_shadows_clock() {
    // 100 of its 120 seconds run, then a pause of an hour.
    let (running, _) = drive(shadow(), 0.0, 100.0, |_| true);
    let paused = command(&running, &Command::Pause, "user:bob", at(101.0))
        .unwrap()
        .deployment;
    let resumed = command(&paused, &Command::Resume, "user:bob", at(3701.0))
        .unwrap()
        .deployment;

    let (soon, _) = drive(resumed.clone(), 3705.0, 3710.0, |_| true);
    let (later, _) = drive(resumed, 3705.0, 3800.0, |_| true);

    assert_eq!(
        soon.status,
        Status::Progressing,
        "20 seconds of analysis remain"
    );
    assert_eq!(later.status, Status::Succeeded);
}

#[test]
fn promoting_a_passed_shadow_cuts_traffic_over_and_adopts_it() {
    let (d, _) = drive(shadow(), 0.0, 1000.0, |_| true);

    let promoted = command(&d, &Command::Promote, "user:bob", at(1100.0)).unwrap();

    assert_eq!(
        promoted.deployment.state.traffic,
        TrafficSplit::CANDIDATE_ONLY
    );
    assert_eq!(promoted.stable, Some(StableChange::Adopt { version: 7 }));
    assert_eq!(
        kinds(&promoted.history),
        [TransitionKind::Promoted, TransitionKind::TrafficShifted]
    );
}

fn ab_test(winner: WinnerMetric, auto_promote: bool) -> Deployment {
    deployment(
        StrategySpec::AbTest {
            duration_ms: 60_000,
            winner,
            auto_promote,
        },
        TrafficSplit::candidate_share(50),
    )
}

fn report(role: Role, t: f64, conversion: f64) -> TrafficReport {
    TrafficReport {
        role,
        requests: 200,
        errors: 2,
        latency_p99_ms: Some(90.0),
        window_seconds: 5.0,
        metrics: BTreeMap::from([("conversion".into(), conversion)]),
        received_at: at(t),
    }
}

/// Ticks an A/B test with both variants reporting `conversion`.
fn drive_ab(mut d: Deployment, a: f64, b: f64) -> Deployment {
    let mut t = 0.0;
    while d.status.is_active() && t < 2000.0 {
        let mut observations = probed(true, at(t));
        observations.reports = vec![report(Role::Baseline, t, a), report(Role::Candidate, t, b)];
        d = tick(&d, &observations, at(t)).deployment;
        t += 5.0;
    }
    d
}

#[test]
fn an_ab_test_picks_the_winner_from_reported_metrics_and_auto_promotes_it() {
    let metric = WinnerMetric::Reported {
        name: "conversion".into(),
        higher_is_better: true,
    };

    let d = drive_ab(ab_test(metric, true), 0.10, 0.12);

    assert_eq!(d.status, Status::Succeeded);
    assert_eq!(d.state.traffic, TrafficSplit::CANDIDATE_ONLY);
    assert!(d.state.adopted);
    let Some(Outcome::Winner {
        variant,
        candidate_value,
        ..
    }) = d.state.outcome
    else {
        panic!("no winner recorded");
    };
    assert_eq!(variant, "b");
    assert!((candidate_value - 0.12).abs() < 1e-9);
}

#[test]
fn an_ab_test_without_auto_promote_returns_traffic_to_a_and_a_tie_keeps_the_baseline() {
    let d = drive_ab(ab_test(WinnerMetric::LatencyP99, false), 0.1, 0.1);

    assert_eq!(d.status, Status::Succeeded);
    assert_eq!(d.state.traffic, TrafficSplit::BASELINE_ONLY);
    let Some(Outcome::Winner { role, .. }) = d.state.outcome else {
        panic!("no winner recorded");
    };
    assert_eq!(role, Role::Baseline);
    assert!(!d.state.adopted);
}

#[test]
fn an_ab_test_winner_without_auto_promote_gets_all_traffic_only_once_promoted() {
    let metric = WinnerMetric::Reported {
        name: "conversion".into(),
        higher_is_better: true,
    };
    let ended = drive_ab(ab_test(metric, false), 0.10, 0.12);

    let promoted = command(&ended, &Command::Promote, "user:bob", at(2000.0)).unwrap();

    assert_eq!(ended.state.traffic, TrafficSplit::BASELINE_ONLY);
    assert_eq!(
        promoted.deployment.state.traffic,
        TrafficSplit::CANDIDATE_ONLY
    );
    assert_eq!(promoted.stable, Some(StableChange::Adopt { version: 7 }));
}

#[test]
fn an_ab_test_counts_every_report_since_it_began_not_only_the_window() {
    let metric = WinnerMetric::Reported {
        name: "conversion".into(),
        higher_is_better: true,
    };
    // Each side reported once, at the start: long out of the 30-second window at the end.
    let reports = vec![
        report(Role::Baseline, 0.0, 0.10),
        report(Role::Candidate, 0.0, 0.12),
    ];
    let mut d = ab_test(metric, true);
    let mut t = 0.0;

    while d.status.is_active() && t < 2000.0 {
        let mut observations = probed(true, at(t));
        observations.reports = reports.clone();
        d = tick(&d, &observations, at(t)).deployment;
        t += 5.0;
    }

    assert_eq!(d.status, Status::Succeeded, "{:?}", d.state.reason);
    assert!(t <= 70.0, "decided when the test ended, at {t}");
    assert_eq!(d.state.traffic, TrafficSplit::CANDIDATE_ONLY);
}

#[test]
fn an_ab_test_without_the_metric_fails_past_the_deadline_and_returns_traffic_to_a() {
    let metric = WinnerMetric::Reported {
        name: "revenue".into(),
        higher_is_better: true,
    };

    let d = drive_ab(ab_test(metric, true), 0.1, 0.2);

    assert_eq!(d.status, Status::Failed);
    assert_eq!(d.state.traffic, TrafficSplit::BASELINE_ONLY);
    assert!(d.state.reason.unwrap().contains("no winner"));
}

#[test]
fn a_paused_canary_holds_its_step_and_resumes_with_a_fresh_interval() {
    let (d, _) = drive(canary(), 0.0, 70.0, |_| true);
    assert_eq!(d.state.traffic.candidate(), 20);

    let paused = command(&d, &Command::Pause, "user:bob", at(71.0))
        .unwrap()
        .deployment;
    let (held, history) = drive(paused, 75.0, 400.0, |_| true);
    let resumed = command(&held, &Command::Resume, "user:bob", at(401.0)).unwrap();

    assert_eq!(held.status, Status::Paused);
    assert_eq!(held.state.traffic.candidate(), 20);
    assert!(history.is_empty());
    assert_eq!(resumed.deployment.status, Status::Progressing);
    assert_eq!(resumed.deployment.next_tick_at, Some(at(401.0)));
    let (after, _) = drive(resumed.deployment, 405.0, 455.0, |_| true);
    assert_eq!(after.state.traffic.candidate(), 20, "the step starts over");
    let (later, _) = drive(after, 460.0, 465.0, |_| true);
    assert_eq!(later.state.traffic.candidate(), 30);
}

#[test]
fn a_breach_while_paused_still_rolls_back() {
    let (d, _) = drive(canary(), 0.0, 40.0, |_| true);
    let paused = command(&d, &Command::Pause, "user:bob", at(41.0))
        .unwrap()
        .deployment;

    let (d, history) = drive(paused, 45.0, 100.0, |_| false);

    assert_eq!(d.status, Status::RolledBack);
    let last = history.last().unwrap();
    assert_eq!(last.from_status, Status::Paused);
    assert!(last.reason.as_ref().unwrap().ends_with("while paused"));
}

#[test]
fn promote_during_a_step_skips_the_rest_and_succeeds() {
    let (d, _) = drive(canary(), 0.0, 70.0, |_| true);

    let decision = command(&d, &Command::Promote, "user:bob", at(72.0)).unwrap();

    assert_eq!(
        kinds(&decision.history),
        [
            TransitionKind::Promoted,
            TransitionKind::TrafficShifted,
            TransitionKind::Succeeded
        ]
    );
    assert_eq!(decision.deployment.status, Status::Succeeded);
    assert_eq!(
        decision.deployment.state.traffic,
        TrafficSplit::CANDIDATE_ONLY
    );
    assert_eq!(decision.stable, Some(StableChange::Adopt { version: 7 }));
    assert_eq!(decision.history[0].actor, "user:bob");
}

#[test]
fn a_manual_rollback_mid_flight_returns_all_traffic_to_the_baseline() {
    let (d, _) = drive(canary(), 0.0, 130.0, |_| true);

    let decision = command(
        &d,
        &Command::Rollback {
            reason: Some("latency complaints".into()),
        },
        "user:bob",
        at(131.0),
    )
    .unwrap();

    assert_eq!(decision.deployment.status, Status::RolledBack);
    assert_eq!(
        decision.deployment.state.traffic,
        TrafficSplit::BASELINE_ONLY
    );
    assert_eq!(
        decision.deployment.state.reason.as_deref(),
        Some("latency complaints")
    );
    assert_eq!(decision.stable, None, "it had not been adopted");
}

#[test]
fn a_succeeded_deployment_can_be_rolled_back_within_its_window_only() {
    let (d, _) = drive(canary(), 0.0, 3000.0, |_| true);
    let finished = d.state.finished_at.unwrap();

    let within = command(
        &d,
        &Command::Rollback { reason: None },
        "user:bob",
        finished + chrono::Duration::seconds(299),
    )
    .unwrap();
    let after = command(
        &d,
        &Command::Rollback { reason: None },
        "user:bob",
        finished + chrono::Duration::seconds(301),
    );

    assert_eq!(within.deployment.status, Status::RolledBack);
    assert_eq!(within.stable, Some(StableChange::Revert { to: Some(6) }));
    assert!(matches!(after, Err(crate::core::Error::Conflict { .. })));
}

#[test]
fn commands_that_do_not_fit_the_status_are_refused() {
    let (succeeded, _) = drive(canary(), 0.0, 3000.0, |_| true);
    let progressing = tick(&canary(), &probed(true, at(0.0)), at(0.0)).deployment;
    let rolled_back = command(
        &progressing,
        &Command::Rollback { reason: None },
        "user:bob",
        at(1.0),
    )
    .unwrap()
    .deployment;

    assert!(command(&succeeded, &Command::Pause, "u", at(3001.0)).is_err());
    assert!(command(&succeeded, &Command::Promote, "u", at(3001.0)).is_err());
    assert!(command(&progressing, &Command::Resume, "u", at(1.0)).is_err());
    assert!(command(&rolled_back, &Command::Promote, "u", at(2.0)).is_err());
    assert!(command(
        &rolled_back,
        &Command::Rollback { reason: None },
        "u",
        at(2.0)
    )
    .is_err());
}

#[test]
fn a_pending_deployment_starts_with_its_requested_split_as_the_first_instruction() {
    let decision = tick(&canary(), &probed(true, at(0.0)), at(0.0));

    assert_eq!(decision.deployment.status, Status::Progressing);
    assert_eq!(kinds(&decision.history), [TransitionKind::TrafficShifted]);
    assert_eq!(decision.history[0].traffic.candidate(), 10);
    assert_eq!(decision.history[0].from_status, Status::Pending);
    assert_eq!(decision.deployment.next_tick_at, Some(at(5.0)));
}

#[test]
fn probes_older_than_the_window_are_dropped_from_the_state() {
    let (d, _) = drive(canary(), 0.0, 200.0, |_| true);

    let kept = &d.state.probes.candidate;

    assert!(kept.len() <= 7, "{} probes kept", kept.len());
    assert!(d.state.last_probe.candidate.as_ref().unwrap().ok);
}

#[test]
fn phase_names_match_their_stored_form() {
    for phase in [
        Phase::Waiting,
        Phase::Stepping,
        Phase::PrePromotion,
        Phase::PostPromotion,
        Phase::Mirroring,
        Phase::Testing,
        Phase::Done,
    ] {
        assert_eq!(
            serde_json::to_value(phase).unwrap(),
            serde_json::json!(phase.as_str())
        );
    }
}
