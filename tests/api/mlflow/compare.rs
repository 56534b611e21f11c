//! Comparing runs through the service gives what MLflow's own search gives.

use super::*;

/// Twelve runs whose sort keys never tie, so both orders are fully determined.
async fn comparison_runs(app: &TestApp, experiment: &str) {
    for i in 0..12_i32 {
        let model = if i % 3 == 0 { "linear" } else { "xgboost" };
        let status = if i % 4 == 3 { "FAILED" } else { "FINISHED" };
        let auc = 0.70 + f64::from(i) * 0.021;
        let loss = 1.0 - f64::from((i * 7) % 12) * 0.05;
        app.create_run(
            experiment,
            &json!({
                "name": format!("run-{i:02}"), "status": status,
                "params": {"model": model, "depth": format!("{:02}", (i * 5) % 12)},
                "metrics": [{"key": "auc", "value": auc}, {"key": "loss", "value": loss}],
                "tags": {"team": if i % 2 == 0 { "a" } else { "b" }}
            }),
        )
        .await;
    }
}

async fn comparison_matches_mlflow_search(backend: Backend) {
    let uri = shared_mlflow();
    let app = spawn_with_mlflow(backend, &uri).await;
    let mlflow = Mlflow::at(&uri);
    let experiment = app.create_experiment("compare").await;
    comparison_runs(&app, &experiment).await;
    let listed = expect_status(
        app.get(&format!("{}?limit=100", runs_path(&experiment)))
            .await,
        StatusCode::OK,
    )
    .await;
    for run in listed["items"].as_array().unwrap() {
        synced_run(&app, &experiment, run["id"].as_str().unwrap()).await;
    }
    let mlflow_experiment = synced_experiment(&app, &experiment).await["mlflow"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases = [
        (
            "metrics.auc > 0.8 and params.model = 'xgboost' and attributes.status = 'FINISHED'",
            "metrics.auc DESC",
        ),
        ("metrics.loss <= 0.7", "metrics.loss ASC"),
        (
            "params.model != 'linear' and tags.team = 'a'",
            "params.depth DESC",
        ),
        (
            "attributes.status != 'FAILED'",
            "params.model ASC, metrics.auc DESC",
        ),
        (
            "metrics.auc >= 0.75 and metrics.auc < 0.9",
            "attributes.run_name ASC",
        ),
    ];
    for (filter, order_by) in cases {
        let keys: Vec<&str> = order_by.split(", ").collect();
        let expected: Vec<String> = mlflow
            .search(&mlflow_experiment, filter, &keys)
            .await
            .iter()
            .map(|r| {
                lookup(&r["data"]["tags"], "aumos.run_id")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        // Through the service, two per page, so the cursor is exercised on every key.
        let mut ours = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = app.request(Method::GET, &runs_path(&experiment)).query(&[
                ("filter", filter),
                ("order_by", order_by),
                ("limit", "2"),
            ]);
            if let Some(t) = &token {
                request = request.query(&[("page_token", t.as_str())]);
            }
            let page = expect_status(request.send().await.unwrap(), StatusCode::OK).await;
            ours.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned()),
            );
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        assert!(!expected.is_empty(), "{filter} matches some runs");
        assert_eq!(ours, expected, "filter {filter:?} order_by {order_by:?}");
    }
}

#[tokio::test]
async fn comparison_matches_mlflow_search_on_sqlite() {
    comparison_matches_mlflow_search(Backend::Sqlite).await;
}

#[tokio::test]
async fn comparison_matches_mlflow_search_on_postgres() {
    comparison_matches_mlflow_search(Backend::Postgres).await;
}
