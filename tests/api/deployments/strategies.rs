//! Blue-green, shadow and A/B test rollouts.

use super::*;

fn blue_green(model: &str, health: &HealthEndpoint, window_seconds: f64) -> Value {
    json!({
        "model_id": model, "model_version": 1, "strategy": "blue_green",
        "target_environment": "production",
        "health_check_url": health.url,
        "analysis": fast_analysis(),
        "blue_green": {"pre_promotion_checks": 3, "rollback_window_seconds": window_seconds}
    })
}

async fn blue_green_switches_to_green_after_its_checks_and_succeeds(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let green = HealthEndpoint::start().await;

    let created = create(&app, &blue_green(&model, &green, 0.5)).await;
    let id = created["id"].as_str().unwrap();
    let done = wait_for_end(&app, id).await;
    let history = history(&app, id).await;

    assert_eq!(created["traffic_split"], json!({"blue": 100, "green": 0}));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["traffic_split"], json!({"blue": 0, "green": 100}));
    assert_eq!(
        candidate_weights(&history, "green"),
        vec![0, 100],
        "green serves nothing until it passed, then everything at once: {history:#?}"
    );
    let switch = history
        .iter()
        .rfind(|h| h["kind"] == "traffic_shifted")
        .unwrap();
    assert!(
        switch["reason"]
            .as_str()
            .unwrap()
            .contains("3 pre-promotion checks passed"),
        "{switch}"
    );
}

async fn blue_green_switches_back_to_blue_when_green_fails_after_the_switch(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let green = HealthEndpoint::start().await;
    let created = create(&app, &blue_green(&model, &green, 30.0)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_until(&app, &id, Duration::from_secs(10), |d| {
        d["traffic_split"]["green"] == 100
    })
    .await;

    green.fail();
    let done = wait_for_end(&app, &id).await;
    let history = history(&app, &id).await;

    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(done["traffic_split"], json!({"blue": 100, "green": 0}));
    assert_eq!(candidate_weights(&history, "green"), vec![0, 100, 0]);
}

fn shadow(model: &str, health: &HealthEndpoint, duration_seconds: f64) -> Value {
    json!({
        "model_id": model, "model_version": 1, "strategy": "shadow",
        "target_environment": "production",
        "health_check_url": health.url,
        "analysis": fast_analysis(),
        "shadow": {"mirror_percent": 25, "duration_seconds": duration_seconds}
    })
}

async fn a_healthy_shadow_passes_and_serves_only_once_promoted(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let candidate = HealthEndpoint::start().await;
    let created = create(&app, &shadow(&model, &candidate, 1.0)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mirroring = wait_until(&app, &id, Duration::from_secs(10), |d| {
        d["status"] == "progressing"
    })
    .await;

    let done = wait_for_end(&app, &id).await;
    let promoted = expect_status(
        app.post(&format!("/api/v1/deployments/{id}/promote"), &json!({}))
            .await,
        StatusCode::OK,
    )
    .await;

    assert_eq!(mirroring["mirror_percent"], 25);
    assert_eq!(
        mirroring["traffic_split"],
        json!({"stable": 100, "shadow": 0})
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["outcome"]["kind"], "passed");
    assert_eq!(done["mirror_percent"], 0, "mirroring stops at the verdict");
    assert_eq!(done["traffic_split"], json!({"stable": 100, "shadow": 0}));
    assert_eq!(
        promoted["traffic_split"],
        json!({"stable": 0, "shadow": 100})
    );
    assert!(promoted["promoted_at"].is_string(), "{promoted}");
}

async fn a_failing_shadow_stops_mirroring_and_rolls_back(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let candidate = HealthEndpoint::start().await;
    let created = create(&app, &shadow(&model, &candidate, 30.0)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_until(&app, &id, Duration::from_secs(10), |d| {
        d["mirror_percent"] == 25
    })
    .await;

    candidate.fail();
    let done = wait_for_end(&app, &id).await;

    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(done["mirror_percent"], 0);
    assert_eq!(done["traffic_split"], json!({"stable": 100, "shadow": 0}));
}

async fn an_ab_test_picks_the_winner_from_reported_metrics(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let a = HealthEndpoint::start().await;
    let b = HealthEndpoint::start().await;
    let created = create(
        &app,
        &json!({
            "model_id": model, "model_version": 1, "strategy": "ab_test",
            "target_environment": "production",
            "traffic_split": {"a": 50, "b": 50},
            "health_check_url": b.url, "stable_health_check_url": a.url,
            "analysis": fast_analysis(),
            "ab_test": {"duration_seconds": 1, "winner_metric": "conversion_rate",
                        "auto_promote": true}
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();

    for (variant, conversion) in [("a", 0.021), ("b", 0.034)] {
        let report = json!({"variant": variant, "requests": 500, "errors": 2,
                            "latency_p99_ms": 80.0, "window_seconds": 10,
                            "metrics": {"conversion_rate": conversion}});
        expect_status(
            app.post(&format!("/api/v1/deployments/{id}/metrics"), &report)
                .await,
            StatusCode::ACCEPTED,
        )
        .await;
    }
    let wrong_variant = app
        .post(
            &format!("/api/v1/deployments/{id}/metrics"),
            &json!({"variant": "canary", "requests": 1, "errors": 2}),
        )
        .await;
    let done = wait_for_end(&app, &id).await;

    let problem = expect_problem(wrong_variant, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields = problem_fields(&problem);
    assert!(fields.contains(&"variant".to_owned()), "{problem}");
    assert!(fields.contains(&"errors".to_owned()), "{problem}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["outcome"]["kind"], "winner");
    assert_eq!(done["outcome"]["variant"], "b");
    assert_eq!(done["outcome"]["metric"], "conversion_rate");
    assert_eq!(done["outcome"]["baseline_value"], 0.021);
    assert_eq!(done["outcome"]["candidate_value"], 0.034);
    assert_eq!(done["traffic_split"], json!({"a": 0, "b": 100}));
}

on_both!(
    blue_green_switches_to_green_after_its_checks_and_succeeds,
    blue_green_switches_back_to_blue_when_green_fails_after_the_switch,
    a_healthy_shadow_passes_and_serves_only_once_promoted,
    a_failing_shadow_stops_mirroring_and_rolls_back,
    an_ab_test_picks_the_winner_from_reported_metrics,
);
