//! Promoting runs into MLflow's model registry.

use super::*;

async fn promotion_registers_versions_and_moves_the_alias(backend: Backend) {
    let uri = shared_mlflow();
    let app = spawn_with_mlflow(backend, &uri).await;
    let mlflow = Mlflow::at(&uri);
    let experiment = app.create_experiment("promote").await;
    let first = app
        .create_run(
            &experiment,
            &json!({"status": "FINISHED", "metrics": [{"key": "auc", "value": 0.81}]}),
        )
        .await;
    let better = app
        .create_run(
            &experiment,
            &json!({"status": "FINISHED", "params": {"model": "xgboost"}, "metrics": [{"key": "auc", "value": 0.93}]}),
        )
        .await;
    let running = app
        .create_run(
            &experiment,
            &json!({"metrics": [{"key": "auc", "value": 0.99}]}),
        )
        .await;
    let first = first["id"].as_str().unwrap();
    let better = better["id"].as_str().unwrap();

    let promoted = expect_status(
        app.post(
            &format!("{}/{first}/promote", runs_path(&experiment)),
            &json!({"model_name": "churn"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let again = expect_status(
        app.post(
            &format!("{}/{first}/promote", runs_path(&experiment)),
            &json!({"model_name": "churn"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let refused = app
        .post(
            &format!(
                "{}/{}/promote",
                runs_path(&experiment),
                running["id"].as_str().unwrap()
            ),
            &json!({"model_name": "churn"}),
        )
        .await;
    let no_metric = app
        .post(
            &format!("/api/v1/experiments/{experiment}/promote-best"),
            &json!({"model_name": "churn", "metric": "f1", "direction": "max"}),
        )
        .await;
    let best = expect_status(
        app.post(
            &format!("/api/v1/experiments/{experiment}/promote-best"),
            &json!({"model_name": "churn", "metric": "auc", "direction": "max", "filter": "params.model = 'xgboost'"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    assert_eq!(promoted["model_version"], 1);
    assert_eq!(promoted["alias"], "champion");
    assert_eq!(
        again["model_version"], 1,
        "the same run is the same version"
    );
    assert_eq!(again["model_id"], promoted["model_id"]);
    let problem = expect_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("FINISHED"),
        "{problem}"
    );
    expect_problem(no_metric, StatusCode::CONFLICT).await;
    assert_eq!(best["run_id"], better);
    assert_eq!(best["model_version"], 2);
    assert_eq!(best["metric_value"], 0.93);

    let name = format!("{}.churn", app.tenant);
    assert_eq!(promoted["mlflow_model_name"], name);
    let champion = mlflow
        .get(
            "registered-models/alias",
            &[("name", &name), ("alias", "champion")],
        )
        .await["model_version"]
        .clone();
    assert_eq!(champion["version"], "2");
    assert_eq!(champion["run_id"], best["mlflow_run_id"]);
    assert_eq!(
        champion["source"],
        format!("runs:/{}/model", best["mlflow_run_id"].as_str().unwrap())
    );
    let first_version = mlflow
        .get("model-versions/get", &[("name", &name), ("version", "1")])
        .await["model_version"]
        .clone();
    assert_eq!(first_version["run_id"], promoted["mlflow_run_id"]);

    let model_path = format!("/api/v1/models/{}", promoted["model_id"].as_str().unwrap());
    let model = expect_status(app.get(&model_path).await, StatusCode::OK).await;
    assert_eq!(model["aliases"], json!({"champion": 2}));
    assert_eq!(model["versions"].as_array().unwrap().len(), 2);
    assert_eq!(model["versions"][1]["aliases"], json!(["champion"]));
    assert_eq!(model["versions"][0]["run_id"], first);
    let listed = expect_status(app.get("/api/v1/models").await, StatusCode::OK).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], promoted["model_id"]);
    let events = expect_status(
        app.get("/api/v1/events?aggregate_type=model").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 3);
    assert_eq!(events["items"][2]["data"]["version"], 2);
}

#[tokio::test]
async fn promotion_registers_versions_and_moves_the_alias_on_sqlite() {
    promotion_registers_versions_and_moves_the_alias(Backend::Sqlite).await;
}

#[tokio::test]
async fn promotion_registers_versions_and_moves_the_alias_on_postgres() {
    promotion_registers_versions_and_moves_the_alias(Backend::Postgres).await;
}

#[tokio::test]
async fn promoting_a_run_mlflow_does_not_have_is_a_clear_conflict() {
    // Nothing listens on the discard port: MLflow is down for this service.
    let vars = [
        ("AUMOS_MLOPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:9"),
        ("AUMOS_MLFLOW__PROMOTION_WAIT_SECONDS", "1"),
    ];
    let app = TestApp::spawn_with(Backend::Sqlite, &vars).await;
    let experiment = app.create_experiment("unsynced").await;
    let run = app
        .create_run(&experiment, &json!({"status": "FINISHED"}))
        .await;

    let started = Instant::now();
    let response = app
        .post(
            &format!(
                "{}/{}/promote",
                runs_path(&experiment),
                run["id"].as_str().unwrap()
            ),
            &json!({"model_name": "churn"}),
        )
        .await;

    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("has not reached MLflow"),
        "{problem}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the sync first"
    );
    let ready = expect_status(app.get("/ready").await, StatusCode::OK).await;
    assert_eq!(ready["checks"]["mlflow"]["status"], "degraded");
}
