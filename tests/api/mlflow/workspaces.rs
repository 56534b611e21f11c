//! With workspaces on, each tenant's objects live in a workspace of its own under the names the
//! tenant chose, and no other workspace sees them.

use super::*;

#[tokio::test]
async fn each_tenant_gets_its_own_mlflow_workspace_when_workspaces_are_on() {
    let mut server = MlflowServer::with_args(&["--enable-workspaces"]);
    server.start().await;
    let mut vars = mlflow_vars(&server.uri());
    vars.push(("AUMOS_MLFLOW__WORKSPACES", "true".to_owned()));
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_with(Backend::Sqlite, &borrowed).await;
    let other = Uuid::now_v7();
    let ours = app.create_experiment("churn").await;
    let theirs = expect_status(
        app.request_as(other, Method::POST, "/api/v1/experiments")
            .json(&json!({"name": "churn"}))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = app
        .create_run(
            &ours,
            &json!({"name": "xgb", "status": "FINISHED", "params": {"depth": "6"}}),
        )
        .await;

    let synced = synced_run(&app, &ours, run["id"].as_str().unwrap()).await;
    synced_experiment(&app, &ours).await;

    let workspace = format!("tenant-{}", app.tenant);
    let mine = Mlflow::in_workspace(&server.uri(), &workspace);
    let found = mine
        .get("experiments/get-by-name", &[("experiment_name", "churn")])
        .await["experiment"]
        .clone();
    assert_eq!(
        lookup(&found["tags"], "aumos.experiment_id"),
        Some(json!(ours)),
        "the tenant's own name, in the tenant's own workspace"
    );
    let copy = mine.run(synced["mlflow"]["run_id"].as_str().unwrap()).await;
    assert_eq!(lookup(&copy["data"]["params"], "depth"), Some(json!("6")));
    let (status, _) = Mlflow::in_workspace(&server.uri(), "default")
        .try_get("experiments/get-by-name", &[("experiment_name", "churn")])
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "not in the default workspace"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let other_workspace = Mlflow::in_workspace(&server.uri(), &format!("tenant-{other}"));
    loop {
        let (status, body) = other_workspace
            .try_get("experiments/get-by-name", &[("experiment_name", "churn")])
            .await;
        if status.is_success() {
            assert_eq!(
                lookup(&body["experiment"]["tags"], "aumos.experiment_id"),
                Some(json!(theirs)),
                "the other tenant's churn is its own"
            );
            assert_ne!(body["experiment"]["experiment_id"], found["experiment_id"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other tenant's experiment never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
