//! A person's pause, resume, promote and rollback, in the middle of a rollout.

use super::*;

async fn command(app: &TestApp, id: &str, verb: &str, body: &Value) -> reqwest::Response {
    app.post(&format!("/api/v1/deployments/{id}/{verb}"), body)
        .await
}

async fn a_paused_canary_holds_its_traffic_until_resumed(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let id = create(&app, &canary(&model, "production", &health)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(&app, &id, Duration::from_secs(10), |d| {
        d["traffic_split"]["canary"].as_u64() >= Some(30)
    })
    .await;

    let paused = expect_status(
        command(&app, &id, "pause", &json!({})).await,
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let held = deployment(&app, &id).await;
    let pause_again = command(&app, &id, "pause", &json!({})).await;
    let resumed = expect_status(
        command(&app, &id, "resume", &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let done = wait_for_end(&app, &id).await;
    let history = history(&app, &id).await;

    assert_eq!(paused["status"], "paused");
    assert_eq!(held["status"], "paused");
    assert_eq!(
        held["traffic_split"], paused["traffic_split"],
        "four steps were due while paused, none was taken"
    );
    expect_problem(pause_again, StatusCode::CONFLICT).await;
    assert_eq!(resumed["status"], "progressing");
    assert_eq!(done["status"], "succeeded", "{done}");
    let kinds = kinds(&history);
    let paused_at = kinds.iter().position(|k| k == "paused").unwrap();
    let resumed_at = kinds.iter().position(|k| k == "resumed").unwrap();
    assert_eq!(
        resumed_at,
        paused_at + 1,
        "nothing happened while paused: {kinds:?}"
    );
    assert_eq!(history[paused_at]["actor"], "user:test-user");
    assert_eq!(
        candidate_weights(&history, "canary"),
        vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    );
}

async fn promote_skips_the_remaining_steps(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let id = started_slow_canary(&app, &model, &health).await;

    let promoted = expect_status(
        command(&app, &id, "promote", &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let history = history(&app, &id).await;

    assert_eq!(promoted["status"], "succeeded");
    assert_eq!(
        promoted["traffic_split"],
        json!({"stable": 0, "canary": 100})
    );
    assert_eq!(candidate_weights(&history, "canary"), vec![10, 100]);
    assert!(kinds(&history).contains(&"promoted".to_owned()));
}

async fn a_manual_rollback_restores_the_stable_version_with_its_reason(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let id = started_slow_canary(&app, &model, &health).await;

    let rolled_back = expect_status(
        command(&app, &id, "rollback", &json!({"reason": "scores look off"})).await,
        StatusCode::OK,
    )
    .await;
    let again = command(&app, &id, "rollback", &json!({})).await;
    let resume = command(&app, &id, "resume", &json!({})).await;
    let history = history(&app, &id).await;

    assert_eq!(rolled_back["status"], "rolled_back");
    assert_eq!(
        rolled_back["traffic_split"],
        json!({"stable": 100, "canary": 0})
    );
    assert_eq!(rolled_back["reason"], "scores look off");
    let last = history.last().unwrap();
    assert_eq!(last["kind"], "rolled_back");
    assert_eq!(last["actor"], "user:test-user");
    expect_problem(again, StatusCode::CONFLICT).await;
    expect_problem(resume, StatusCode::CONFLICT).await;
}

async fn a_succeeded_deployment_can_be_rolled_back_only_within_its_window(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let mut quick = canary(&model, "production", &health);
    quick["traffic_split"] = json!({"stable": 10, "canary": 90});
    let closing = json!({
        "model_id": model, "model_version": 1, "strategy": "blue_green",
        "target_environment": "staging", "health_check_url": health.url,
        "analysis": fast_analysis(),
        "blue_green": {"pre_promotion_checks": 1, "rollback_window_seconds": 0.3}
    });
    let within = create(&app, &quick).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let late = create(&app, &closing).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_end(&app, &within).await;
    wait_for_end(&app, &late).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let rolled_back = expect_status(
        command(&app, &within, "rollback", &json!({})).await,
        StatusCode::OK,
    )
    .await;
    let too_late = command(&app, &late, "rollback", &json!({})).await;
    // Once the version no longer serves in production, it may be deployed there again.
    let redeploy = app.post("/api/v1/deployments", &quick).await;

    assert_eq!(rolled_back["status"], "rolled_back");
    assert_eq!(
        rolled_back["traffic_split"],
        json!({"stable": 100, "canary": 0})
    );
    let problem = expect_problem(too_late, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("rollback window"),
        "{problem}"
    );
    assert_eq!(deployment(&app, &late).await["status"], "succeeded");
    expect_status(redeploy, StatusCode::CREATED).await;
}

async fn a_rollback_undoes_only_the_version_that_serves(backend: Backend) {
    let app = spawn(backend).await;
    let model = promoted_model(&app).await;
    assert_eq!(promote_run_of(&app, "second-version").await, model);
    let health = HealthEndpoint::start().await;
    let mut first = canary(&model, "production", &health);
    first["traffic_split"] = json!({"stable": 10, "canary": 90});
    let mut second = first.clone();
    second["model_version"] = json!(2);
    let v1 = create(&app, &first).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_end(&app, &v1).await;
    let v2 = create(&app, &second).await;
    let v2_id = v2["id"].as_str().unwrap().to_owned();
    wait_for_end(&app, &v2_id).await;

    let while_replaced = command(&app, &v1, "rollback", &json!({})).await;
    let second_back = command(&app, &v2_id, "rollback", &json!({})).await;
    let first_back = command(&app, &v1, "rollback", &json!({})).await;

    assert_eq!(
        v2["baseline_version"], 1,
        "version 1 served when 2 was deployed"
    );
    let problem = expect_problem(while_replaced, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no longer serves"),
        "{problem}"
    );
    assert_eq!(
        expect_status(second_back, StatusCode::OK).await["status"],
        "rolled_back"
    );
    assert_eq!(
        expect_status(first_back, StatusCode::OK).await["status"],
        "rolled_back",
        "with version 2 rolled back, version 1 serves again and can be rolled back too"
    );
}

on_both!(
    a_rollback_undoes_only_the_version_that_serves,
    a_paused_canary_holds_its_traffic_until_resumed,
    promote_skips_the_remaining_steps,
    a_manual_rollback_restores_the_stable_version_with_its_reason,
    a_succeeded_deployment_can_be_rolled_back_only_within_its_window,
);
