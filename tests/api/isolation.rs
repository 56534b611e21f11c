use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{Connection, Row};
use uuid::Uuid;

use crate::helpers::{expect_problem, expect_status, Backend, TestApp};
use crate::mlflow::shared_mlflow;
use crate::on_both_stores;

const TENANT_TABLES: &[&str] = &[
    "experiments",
    "runs",
    "run_metrics",
    "run_latest_metrics",
    "outbox_events",
    "models",
    "model_versions",
];

on_both_stores! {
    async fn another_tenant_can_neither_see_nor_touch_an_experiment(app: TestApp) {
        let experiment = app.create_experiment("private").await;
        let run = app
            .create_run(&experiment, &json!({"params": {"a": "1"}, "metrics": [{"key": "m", "value": 1}]}))
            .await;
        let run_path = format!("/api/v1/experiments/{experiment}/runs/{}", run["id"].as_str().unwrap());
        let intruder = Uuid::now_v7();
        let as_intruder = |method: Method, path: &str| app.request_as(intruder, method, path);

        let list = as_intruder(Method::GET, "/api/v1/experiments").send().await.unwrap();
        let read = as_intruder(Method::GET, &format!("/api/v1/experiments/{experiment}")).send().await.unwrap();
        let runs = as_intruder(Method::GET, &format!("/api/v1/experiments/{experiment}/runs")).send().await.unwrap();
        let read_run = as_intruder(Method::GET, &run_path).send().await.unwrap();
        let create_run = as_intruder(Method::POST, &format!("/api/v1/experiments/{experiment}/runs"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let log = as_intruder(Method::POST, &format!("{run_path}/log-batch"))
            .json(&json!({"params": {"a": "2"}, "tags": {"owned": "yes"}}))
            .send()
            .await
            .unwrap();
        let close = as_intruder(Method::PATCH, &run_path).json(&json!({"status": "KILLED"})).send().await.unwrap();

        assert_eq!(expect_status(list, StatusCode::OK).await["items"], json!([]));
        for response in [read, runs, read_run, create_run, log, close] {
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
        let unchanged = expect_status(app.get(&run_path).await, StatusCode::OK).await;
        assert_eq!(unchanged, run);
    }
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows_from_the_service_role() {
    // With MLflow, so that promotions fill the model tables too.
    let mlflow = shared_mlflow();
    let vars = [("AUMOS_MLOPS_MLFLOW_TRACKING_URI", mlflow.as_str())];
    let a = TestApp::spawn_with(Backend::Postgres, &vars).await;
    let mut b = TestApp::spawn_with(Backend::Postgres, &vars).await;
    b.tenant = Uuid::now_v7();
    for app in [&a, &b] {
        let experiment = app.create_experiment("rls").await;
        let run = app
            .create_run(
                &experiment,
                &json!({"status": "FINISHED", "params": {"p": "1"}, "tags": {"t": "1"},
                        "metrics": [{"key": "m", "value": 1}]}),
            )
            .await;
        let promote = format!(
            "/api/v1/experiments/{experiment}/runs/{}/promote",
            run["id"].as_str().unwrap()
        );
        expect_status(
            app.post(&promote, &json!({"model_name": "rls"})).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let database = a.database.clone().unwrap();
    let mut conn = sqlx::PgConnection::connect(&database.app_url)
        .await
        .unwrap();

    let role: (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        role,
        (false, false),
        "the service role cannot bypass row-level security"
    );
    for table in TENANT_TABLES {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(a.tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let tenants: Vec<Uuid> = sqlx::query(&format!("SELECT tenant_id FROM {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.rollback().await.unwrap();
        let unscoped: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();

        assert!(!tenants.is_empty(), "{table}: tenant A sees its own rows");
        assert!(
            tenants.iter().all(|t| *t == a.tenant),
            "{table}: tenant A sees only its rows"
        );
        assert_eq!(
            unscoped, 0,
            "{table}: with no tenant set nothing is visible"
        );
    }
}

#[tokio::test]
async fn row_level_security_refuses_writes_for_another_tenant() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let database = app.database.clone().unwrap();
    let mut conn = sqlx::PgConnection::connect(&database.app_url)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(app.tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();

    let other = Uuid::now_v7();
    let result = sqlx::query(
        "INSERT INTO experiments (tenant_id, id, name, created_at, updated_at) \
         VALUES ($1, $2, 'sneaky', now(), now())",
    )
    .bind(other)
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await;

    let error = result.expect_err("a row for another tenant violates the policy");
    assert!(error.to_string().contains("row-level security"), "{error}");
}
