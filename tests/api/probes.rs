use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{create_database, expect_status, Backend, TestApp};

#[tokio::test]
async fn liveness_and_readiness_report_a_working_service() {
    let app = TestApp::spawn(Backend::Postgres).await;

    let live = app.client.get(app.url("/live")).send().await.unwrap();
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();

    expect_status(live, StatusCode::OK).await;
    let ready = expect_status(ready, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"]["status"], "up");
    assert_eq!(ready["checks"]["database"]["backend"], "postgres");
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone_while_liveness_holds() {
    let database = create_database().await;
    let app = TestApp::spawn_on(Some(database.clone()), &[]).await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&crate::helpers::admin_url())
        .await
        .unwrap();

    sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", database.name))
        .execute(&mut admin)
        .await
        .unwrap();
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    let live = app.client.get(app.url("/live")).send().await.unwrap();
    let api = app.get("/api/v1/experiments").await;

    let ready = expect_status(ready, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(ready["checks"]["database"]["status"], "down");
    expect_status(live, StatusCode::OK).await;
    let retry_after = api.headers().get("retry-after").is_some();
    crate::helpers::expect_problem(api, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(retry_after, "a 503 says when to retry");
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_by_the_service_itself() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    let spec = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), StatusCode::OK, "redirected to the page");
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(!html.contains("https://"), "no asset comes from a CDN");
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let spec = expect_status(spec, StatusCode::OK).await;
    assert_eq!(spec["info"]["title"], "aumos-mlops-lifecycle");
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_its_errors() {
    let document: Value =
        serde_json::to_value(aumos_mlops_lifecycle::api::openapi()).expect("serialisable");
    let expected = [
        ("/api/v1/experiments", "get"),
        ("/api/v1/experiments", "post"),
        ("/api/v1/experiments/{experiment_id}", "get"),
        ("/api/v1/experiments/{experiment_id}/runs", "get"),
        ("/api/v1/experiments/{experiment_id}/runs", "post"),
        ("/api/v1/experiments/{experiment_id}/runs/{run_id}", "get"),
        ("/api/v1/experiments/{experiment_id}/runs/{run_id}", "patch"),
        (
            "/api/v1/experiments/{experiment_id}/runs/{run_id}/log-batch",
            "post",
        ),
        (
            "/api/v1/experiments/{experiment_id}/runs/{run_id}/promote",
            "post",
        ),
        ("/api/v1/experiments/{experiment_id}/promote-best", "post"),
        ("/api/v1/models", "get"),
        ("/api/v1/models/{model_id}", "get"),
        ("/api/v1/deployments", "get"),
        ("/api/v1/deployments", "post"),
        ("/api/v1/deployments/{deployment_id}", "get"),
        ("/api/v1/deployments/{deployment_id}/history", "get"),
        ("/api/v1/deployments/{deployment_id}/rollback", "post"),
        ("/api/v1/deployments/{deployment_id}/promote", "post"),
        ("/api/v1/deployments/{deployment_id}/pause", "post"),
        ("/api/v1/deployments/{deployment_id}/resume", "post"),
        ("/api/v1/deployments/{deployment_id}/metrics", "post"),
        ("/api/v1/events", "get"),
        ("/live", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ];

    let paths = document["paths"].as_object().unwrap();
    let served: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        served,
        expected.len(),
        "every documented operation is expected"
    );
    for (path, method) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(
            operation["summary"].is_string(),
            "{method} {path} has a summary"
        );
        if path.starts_with("/api/") {
            for status in ["400", "401", "403", "404", "422", "500", "503"] {
                let content = &operation["responses"][status]["content"];
                assert!(
                    content["application/problem+json"].is_object(),
                    "{method} {path} {status}"
                );
            }
            assert!(
                operation["security"].is_array(),
                "{method} {path} needs a token"
            );
        }
    }
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_code() {
    let generated = aumos_mlops_lifecycle::api::openapi()
        .to_pretty_json()
        .unwrap()
        + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();

    assert!(
        committed == generated,
        "docs/openapi.json is out of date; run `UPDATE_SNAPSHOTS=1 cargo test openapi` and commit"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_experiment("metered").await;
    app.get("/api/v1/experiments").await;

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(text.contains(
        "aumos_http_requests_total{route=\"/api/v1/experiments\",method=\"POST\",status=\"201\"} 1"
    ), "{text}");
    assert!(text.contains(
        "aumos_http_requests_total{route=\"/api/v1/experiments\",method=\"GET\",status=\"200\"} 1"
    ));
    assert!(text.contains("aumos_http_request_duration_seconds_bucket{le="));
    assert!(text.contains("aumos_db_pool_connections{state=\"max\"}"));
    assert!(text.contains("aumos_build_info{version="));
}
