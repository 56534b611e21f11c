//! Copying experiments and runs into MLflow: namespaces, outages, isolation and replicas.

use super::*;

async fn experiments_and_runs_arrive_under_the_tenant_namespace(backend: Backend) {
    let uri = shared_mlflow();
    let app = spawn_with_mlflow(backend, &uri).await;
    let mlflow = Mlflow::at(&uri);
    let experiment = expect_status(
        app.post(
            "/api/v1/experiments",
            &json!({"name": "churn", "description": "Predict churn", "tags": {"team": "growth"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = app
        .create_run(
            &experiment,
            &json!({
                "name": "xgb-6", "status": "FINISHED",
                "params": {"max_depth": "6", "model": "xgboost"},
                "metrics": [
                    {"key": "loss", "value": 0.9, "step": 0},
                    {"key": "loss", "value": 0.5, "step": 1},
                    {"key": "loss", "value": 0.3, "step": 2},
                    {"key": "auc", "value": 0.91}
                ],
                "tags": {"framework": "xgboost"}
            }),
        )
        .await;
    let run = created["id"].as_str().unwrap();

    let synced = synced_run(&app, &experiment, run).await;
    let our_experiment = synced_experiment(&app, &experiment).await;

    let name = format!("{}/churn", app.tenant);
    let found = mlflow
        .get("experiments/get-by-name", &[("experiment_name", &name)])
        .await["experiment"]
        .clone();
    assert_eq!(
        found["experiment_id"],
        our_experiment["mlflow"]["experiment_id"]
    );
    assert_eq!(
        lookup(&found["tags"], "aumos.tenant_id"),
        Some(json!(app.tenant.to_string()))
    );
    assert_eq!(
        lookup(&found["tags"], "aumos.experiment_id"),
        Some(json!(experiment))
    );
    assert_eq!(lookup(&found["tags"], "team"), Some(json!("growth")));
    let mlflow_run = synced["mlflow"]["run_id"].as_str().unwrap();
    let copy = mlflow.run(mlflow_run).await;
    assert_eq!(copy["info"]["experiment_id"], found["experiment_id"]);
    assert_eq!(copy["info"]["status"], "FINISHED");
    assert_eq!(copy["info"]["run_name"], "xgb-6");
    assert!(copy["info"]["end_time"].as_i64().is_some());
    let mut params = pairs(&copy["data"]["params"]);
    params.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        params,
        vec![
            ("max_depth".to_owned(), json!("6")),
            ("model".to_owned(), json!("xgboost"))
        ]
    );
    assert_eq!(lookup(&copy["data"]["metrics"], "loss"), Some(json!(0.3)));
    assert_eq!(lookup(&copy["data"]["metrics"], "auc"), Some(json!(0.91)));
    assert_eq!(
        lookup(&copy["data"]["tags"], "framework"),
        Some(json!("xgboost"))
    );
    assert_eq!(
        lookup(&copy["data"]["tags"], "aumos.run_id"),
        Some(json!(run))
    );
    assert_eq!(mlflow.history(mlflow_run, "loss").await.len(), 3);

    // Later changes follow, and what was sent before is not sent again.
    let path = format!("{}/{run}", runs_path(&experiment));
    expect_status(
        app.post(
            &format!("{}/{}/log-batch", runs_path(&experiment), run),
            &json!({"metrics": [{"key": "loss", "value": 0.2, "step": 3}], "tags": {"stage": "tuned"}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.patch(&path, &json!({"name": "xgb-6-final"})).await,
        StatusCode::OK,
    )
    .await;
    synced_run(&app, &experiment, run).await;
    let copy = mlflow.run(mlflow_run).await;
    assert_eq!(copy["info"]["run_name"], "xgb-6-final");
    assert_eq!(lookup(&copy["data"]["tags"], "stage"), Some(json!("tuned")));
    let history = mlflow.history(mlflow_run, "loss").await;
    let mut steps: Vec<i64> = history
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, [0, 1, 2, 3]);
}

#[tokio::test]
async fn experiments_and_runs_arrive_under_the_tenant_namespace_on_sqlite() {
    experiments_and_runs_arrive_under_the_tenant_namespace(Backend::Sqlite).await;
}

#[tokio::test]
async fn experiments_and_runs_arrive_under_the_tenant_namespace_on_postgres() {
    experiments_and_runs_arrive_under_the_tenant_namespace(Backend::Postgres).await;
}

async fn runs_logged_while_mlflow_is_down_arrive_after_it_restarts(backend: Backend) {
    let mut server = MlflowServer::new();
    let app = spawn_with_mlflow(backend, &server.uri()).await;
    let experiment = app.create_experiment("offline").await;
    let mut runs = Vec::new();
    for i in 0..5 {
        let metrics: Vec<Value> = (0..3)
            .map(
                |step| json!({"key": "loss", "value": 1.0 / f64::from(step + i + 1), "step": step}),
            )
            .collect();
        let run = app
            .create_run(
                &experiment,
                &json!({"name": format!("r{i}"), "status": "FINISHED", "params": {"i": i.to_string()}, "metrics": metrics}),
            )
            .await;
        runs.push(run["id"].as_str().unwrap().to_owned());
    }

    // While MLflow is down the API answers, and says why the copy is behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let body = expect_status(
            app.get(&format!("{}/{}", runs_path(&experiment), runs[0]))
                .await,
            StatusCode::OK,
        )
        .await;
        if body["mlflow"]["sync_state"] == "failed" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt recorded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        waiting["mlflow"]["last_error"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{waiting}"
    );
    let ready = expect_status(app.get("/ready").await, StatusCode::OK).await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["mlflow"]["status"], "degraded");
    assert!(
        ready["checks"]["mlflow"]["pending_sync"].as_i64().unwrap() >= 6,
        "{ready}"
    );

    server.start().await;

    let mlflow = Mlflow::at(&server.uri());
    let mut mlflow_ids = Vec::new();
    for run in &runs {
        let synced = synced_run(&app, &experiment, run).await;
        mlflow_ids.push(synced["mlflow"]["run_id"].as_str().unwrap().to_owned());
    }
    let our_experiment = synced_experiment(&app, &experiment).await;
    let copies = mlflow
        .search(
            our_experiment["mlflow"]["experiment_id"].as_str().unwrap(),
            "",
            &[],
        )
        .await;
    assert_eq!(copies.len(), 5, "each run exactly once");
    for id in &mlflow_ids {
        assert_eq!(
            mlflow.history(id, "loss").await.len(),
            3,
            "nothing logged twice"
        );
    }
    let ready = expect_status(app.get("/ready").await, StatusCode::OK).await;
    assert_eq!(ready["checks"]["mlflow"]["status"], "up", "{ready}");
}

#[tokio::test]
async fn runs_logged_while_mlflow_is_down_arrive_after_it_restarts_on_sqlite() {
    runs_logged_while_mlflow_is_down_arrive_after_it_restarts(Backend::Sqlite).await;
}

#[tokio::test]
async fn runs_logged_while_mlflow_is_down_arrive_after_it_restarts_on_postgres() {
    runs_logged_while_mlflow_is_down_arrive_after_it_restarts(Backend::Postgres).await;
}

#[tokio::test]
async fn another_tenant_reaches_neither_the_runs_nor_their_mlflow_copies() {
    let uri = shared_mlflow();
    let app = spawn_with_mlflow(Backend::Postgres, &uri).await;
    let experiment = app.create_experiment("shared-name").await;
    let run = app
        .create_run(
            &experiment,
            &json!({"status": "FINISHED", "metrics": [{"key": "auc", "value": 0.9}]}),
        )
        .await;
    let run = run["id"].as_str().unwrap();
    let synced = synced_run(&app, &experiment, run).await;
    let other = Uuid::now_v7();

    let read = app
        .request_as(
            other,
            Method::GET,
            &format!("{}/{run}", runs_path(&experiment)),
        )
        .send()
        .await
        .unwrap();
    let promote = app
        .request_as(
            other,
            Method::POST,
            &format!("{}/{run}/promote", runs_path(&experiment)),
        )
        .json(&json!({"model_name": "stolen"}))
        .send()
        .await
        .unwrap();
    let own = app
        .request_as(other, Method::POST, "/api/v1/experiments")
        .json(&json!({"name": "shared-name"}))
        .send()
        .await
        .unwrap();

    expect_problem(read, StatusCode::NOT_FOUND).await;
    expect_problem(promote, StatusCode::NOT_FOUND).await;
    let own = expect_status(own, StatusCode::CREATED).await;
    // The same name in another tenant is another MLflow experiment.
    let path = format!("/api/v1/experiments/{}", own["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let theirs = loop {
        let body = app
            .request_as(other, Method::GET, &path)
            .send()
            .await
            .unwrap();
        let body = expect_status(body, StatusCode::OK).await;
        if body["mlflow"]["sync_state"] == "synced" {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ours = synced_experiment(&app, &experiment).await;
    assert_ne!(
        theirs["mlflow"]["experiment_id"],
        ours["mlflow"]["experiment_id"]
    );
    let mlflow = Mlflow::at(&uri);
    let found = mlflow
        .get(
            "experiments/get-by-name",
            &[("experiment_name", &format!("{other}/shared-name"))],
        )
        .await;
    assert_eq!(
        found["experiment"]["experiment_id"],
        theirs["mlflow"]["experiment_id"]
    );
    let copy = mlflow
        .run(synced["mlflow"]["run_id"].as_str().unwrap())
        .await;
    assert_eq!(
        lookup(&copy["data"]["tags"], "aumos.tenant_id"),
        Some(json!(app.tenant.to_string()))
    );
}

#[tokio::test]
async fn two_replicas_copy_every_run_exactly_once() {
    let uri = shared_mlflow();
    let database = create_database().await;
    let first = spawn_on_with_mlflow(Some(database.clone()), &uri).await;
    let mut second = spawn_on_with_mlflow(Some(database), &uri).await;
    second.tenant = first.tenant;
    let experiment = first.create_experiment("replicas").await;
    let mut runs = Vec::new();
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        let run = app
            .create_run(
                &experiment,
                &json!({"status": "FINISHED", "metrics": [{"key": "m", "value": i}]}),
            )
            .await;
        runs.push(run["id"].as_str().unwrap().to_owned());
    }

    for run in &runs {
        synced_run(&first, &experiment, run).await;
    }
    let mlflow_experiment = synced_experiment(&first, &experiment).await["mlflow"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let copies = Mlflow::at(&uri).search(&mlflow_experiment, "", &[]).await;
    let mut copied: Vec<String> = copies
        .iter()
        .map(|r| {
            lookup(&r["data"]["tags"], "aumos.run_id")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    copied.sort();
    runs.sort();
    assert_eq!(copied, runs);
}
