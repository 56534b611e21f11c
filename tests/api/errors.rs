use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{create_database, expect_problem, problem_fields, Backend, TestApp, APP_ROLE};

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_with_problems() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let unknown = app.get("/api/v1/nothing-here").await;
    let wrong_method = app
        .request(Method::DELETE, "/api/v1/experiments")
        .send()
        .await
        .unwrap();

    expect_problem(unknown, StatusCode::NOT_FOUND).await;
    let allow = wrong_method
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    expect_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    assert!(allow.unwrap_or_default().contains("POST"));
}

#[tokio::test]
async fn bodies_of_the_wrong_type_size_or_syntax_are_refused() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, &[("AUMOS_HTTP__BODY_LIMIT_BYTES", "2048")]).await;

    let text = app
        .request(Method::POST, "/api/v1/experiments")
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let huge = app
        .post(
            "/api/v1/experiments",
            &json!({"name": "x", "description": "d".repeat(4096)}),
        )
        .await;
    let broken = app
        .request(Method::POST, "/api/v1/experiments")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let wrong_shape = app
        .post(
            "/api/v1/experiments",
            &json!({"name": "x", "tags": {"a": 1}}),
        )
        .await;
    let unknown_field = app
        .post(
            "/api/v1/experiments",
            &json!({"name": "x", "colour": "red"}),
        )
        .await;

    expect_problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    expect_problem(huge, StatusCode::PAYLOAD_TOO_LARGE).await;
    expect_problem(broken, StatusCode::BAD_REQUEST).await;
    let shape = expect_problem(wrong_shape, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem_fields(&shape), ["tags.a"]);
    let unknown = expect_problem(unknown_field, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(unknown["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
}

#[tokio::test]
async fn a_failure_inside_the_service_reveals_nothing_internal() {
    let database = create_database().await;
    let app = TestApp::spawn_on(Some(database.clone()), &[]).await;
    let experiment = app.create_experiment("broken").await;
    let run = app
        .create_run(&experiment, &json!({"tags": {"a": "b"}}))
        .await;
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&database.owner_url)
        .await
        .unwrap();
    sqlx::query(&format!(
        "REVOKE SELECT ON run_latest_metrics FROM {APP_ROLE}"
    ))
    .execute(&mut owner)
    .await
    .unwrap();

    let path = format!(
        "/api/v1/experiments/{experiment}/runs/{}",
        run["id"].as_str().unwrap()
    );
    let response = app.get(&path).await;

    let problem = expect_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    let text = problem.to_string().to_lowercase();
    for secret in [
        "run_latest_metrics",
        "permission",
        "sqlx",
        "postgres",
        "denied",
    ] {
        assert!(
            !text.contains(secret),
            "the 500 body mentions {secret}: {text}"
        );
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id_kept_from_the_request() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let generated = app.client.get(app.url("/live")).send().await.unwrap();
    let kept = app
        .client
        .get(app.url("/api/v1/experiments"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();

    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
    expect_problem(kept, StatusCode::UNAUTHORIZED).await;
}
