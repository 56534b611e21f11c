//! Canary rollouts: stepping up, rolling back on errors, and what a request may not ask.

use super::*;

async fn a_healthy_canary_walks_to_full_traffic_and_becomes_stable(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;

    let created = create(&app, &canary(&model, "production", &health)).await;
    let id = created["id"].as_str().unwrap();
    let done = wait_for_end(&app, id).await;
    let history = history(&app, id).await;
    let events = event_types(&app, id).await;

    assert_eq!(created["status"], "pending");
    assert_eq!(
        created["traffic_split"],
        json!({"stable": 90, "canary": 10})
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["traffic_split"], json!({"stable": 0, "canary": 100}));
    assert_eq!(done["health"]["canary"]["last_probe"]["ok"], true);
    assert_eq!(
        candidate_weights(&history, "canary"),
        vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
        "{history:#?}"
    );
    assert_eq!(kinds(&history).first().map(String::as_str), Some("created"));
    assert_eq!(
        kinds(&history).last().map(String::as_str),
        Some("succeeded")
    );
    assert_eq!(
        events,
        kinds(&history),
        "every decision is an event, in the same order"
    );
    assert!(health.hits() >= 10, "the canary was probed");
    // The candidate is now the stable version: deploying it again is refused.
    let again = app
        .post(
            "/api/v1/deployments",
            &canary(&model, "production", &health),
        )
        .await;
    let problem = expect_problem(again, StatusCode::CONFLICT).await;
    assert_eq!(problem_fields(&problem), vec!["model_version"], "{problem}");
}

async fn a_canary_whose_endpoint_fails_is_rolled_back_with_the_evidence(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "staging", &health);
    // Steps slow enough that the failure lands mid-rollout.
    body["analysis"]["step_interval_seconds"] = json!(5);
    let created = create(&app, &body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_until(&app, &id, Duration::from_secs(10), |d| {
        d["status"] == "progressing" && d["health"]["canary"]["samples"].as_u64() >= Some(2)
    })
    .await;

    health.fail();
    let done = wait_for_end(&app, &id).await;
    let history = history(&app, &id).await;
    let events = event_types(&app, &id).await;

    assert_eq!(done["status"], "rolled_back", "{done}");
    assert_eq!(done["traffic_split"], json!({"stable": 100, "canary": 0}));
    assert!(
        done["reason"].as_str().unwrap().contains("error rate"),
        "{done}"
    );
    let rolled_back = history.iter().find(|h| h["kind"] == "rolled_back").unwrap();
    let evidence = &rolled_back["evidence"];
    let canary = evidence["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "canary")
        .unwrap();
    assert_eq!(evidence["threshold"], 0.05);
    assert!(canary["error_rate"].as_f64().unwrap() > 0.05, "{evidence}");
    // Rolled back at the first or second failed probe: within two probe intervals.
    let failures = canary["probe_failures"].as_u64().unwrap();
    assert!((1..=2).contains(&failures), "{evidence}");
    assert_eq!(done["health"]["canary"]["last_probe"]["ok"], false);
    assert_eq!(
        done["health"]["canary"]["last_probe"]["detail"], "HTTP 500",
        "{done}"
    );
    assert!(events.contains(&"rolled_back".to_owned()), "{events:?}");
}

async fn an_analysis_without_enough_samples_holds_then_rolls_back_at_its_deadline(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "production", &health);
    // Ten probes a second cannot reach 1,000 samples in a 2-second window.
    body["analysis"]["min_samples"] = json!(1000);
    body["analysis"]["progress_deadline_seconds"] = json!(1);

    let id = create(&app, &body).await["id"].as_str().unwrap().to_owned();
    let done = wait_for_end(&app, &id).await;
    let history = history(&app, &id).await;

    assert_eq!(done["status"], "rolled_back", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("inconclusive"),
        "{done}"
    );
    assert_eq!(
        candidate_weights(&history, "canary"),
        vec![10, 0],
        "no step was taken on healthy but too few samples"
    );
    assert!(health.hits() > 0);
}

async fn an_invalid_request_lists_every_invalid_field(backend: Backend) {
    let app = spawn(backend).await;

    let response = app
        .post(
            "/api/v1/deployments",
            &json!({
                "model_version": 0,
                "strategy": "big_bang",
                "target_environment": "prod env!",
                "traffic_split": {"stable": 95, "canary": 10},
                "health_check_url": "ftp://example.com/health",
                "analysis": {"error_threshold": 2, "step_percent": 0}
            }),
        )
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields = problem_fields(&problem);

    for field in [
        "model_id",
        "model_version",
        "strategy",
        "target_environment",
        "health_check_url",
        "analysis.error_threshold",
        "analysis.step_percent",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing: {problem}"
        );
    }
}

async fn health_urls_aimed_at_cloud_metadata_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;

    let response = app
        .post(
            "/api/v1/deployments",
            &json!({
                "model_id": model, "model_version": 1, "strategy": "canary",
                "target_environment": "production",
                "health_check_url": "http://169.254.169.254/latest/meta-data/"
            }),
        )
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    assert_eq!(
        problem_fields(&problem),
        vec!["health_check_url"],
        "{problem}"
    );
}

async fn a_second_active_deployment_of_a_model_in_an_environment_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "production", &health);
    body["analysis"]["step_interval_seconds"] = json!(60);
    let first = create(&app, &body).await;

    let second = app.post("/api/v1/deployments", &body).await;
    let elsewhere = app
        .post("/api/v1/deployments", &canary(&model, "staging", &health))
        .await;
    let problem = expect_problem(second, StatusCode::CONFLICT).await;

    assert_eq!(problem_fields(&problem), vec!["target_environment"]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "the problem names the active deployment: {problem}"
    );
    expect_status(elsewhere, StatusCode::CREATED).await;
    let staging = collect_pages(&app, "/api/v1/deployments?target_environment=staging", 1).await;
    let all = collect_pages(&app, &format!("/api/v1/deployments?model_id={model}"), 1).await;
    let ended = collect_pages(&app, "/api/v1/deployments?status=succeeded", 1).await;
    let bad_filter = app.get("/api/v1/deployments?status=done&limit=0").await;
    assert_eq!(staging.len(), 1);
    assert_eq!(staging[0]["target_environment"], "staging");
    assert_eq!(all.len(), 2, "one page of one each, then the next");
    assert_ne!(all[0]["id"], all[1]["id"]);
    assert!(ended.is_empty());
    let problem = expect_problem(bad_filter, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        problem_fields(&problem),
        vec!["status", "limit"],
        "{problem}"
    );
}

async fn another_tenant_cannot_see_or_steer_a_deployment(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let id = started_slow_canary(&app, &model, &health).await;
    let other = uuid::Uuid::now_v7();

    let read = app
        .request_as(
            other,
            reqwest::Method::GET,
            &format!("/api/v1/deployments/{id}"),
        )
        .send()
        .await
        .unwrap();
    let steer = app
        .request_as(
            other,
            reqwest::Method::POST,
            &format!("/api/v1/deployments/{id}/rollback"),
        )
        .send()
        .await
        .unwrap();
    let listed = app
        .request_as(other, reqwest::Method::GET, "/api/v1/deployments")
        .send()
        .await
        .unwrap();

    expect_problem(read, StatusCode::NOT_FOUND).await;
    expect_problem(steer, StatusCode::NOT_FOUND).await;
    assert_eq!(
        expect_status(listed, StatusCode::OK).await["items"],
        json!([])
    );
    assert_eq!(deployment(&app, &id).await["status"], "progressing");
}

on_both!(
    a_healthy_canary_walks_to_full_traffic_and_becomes_stable,
    a_canary_whose_endpoint_fails_is_rolled_back_with_the_evidence,
    an_analysis_without_enough_samples_holds_then_rolls_back_at_its_deadline,
    an_invalid_request_lists_every_invalid_field,
    health_urls_aimed_at_cloud_metadata_are_refused,
    a_second_active_deployment_of_a_model_in_an_environment_is_refused,
    another_tenant_cannot_see_or_steer_a_deployment,
);
