use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{collect_pages, expect_status};
use crate::on_both_stores;

on_both_stores! {
    async fn two_hundred_runs_logged_at_once_are_all_stored_exactly_once(app: TestApp) {
        let experiment = app.create_experiment("concurrent").await;
        let path = format!("/api/v1/experiments/{experiment}/runs");
        let app = std::sync::Arc::new(app);

        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let app = app.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let metrics: Vec<_> =
                        (0..10).map(|m| json!({"key": format!("m{m}"), "value": i})).collect();
                    let body = json!({
                        "name": format!("run-{i}"),
                        "status": "FINISHED",
                        "metrics": metrics,
                        "params": {"a": "1", "b": "2", "c": "3", "d": "4", "e": i.to_string()},
                        "tags": {"x": "1", "y": "2", "z": "3"}
                    });
                    expect_status(app.post(&path, &body).await, StatusCode::CREATED).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("request task");
        }

        let runs = collect_pages(&app, &path, 1000).await;
        let names: HashSet<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(runs.len(), 200);
        assert_eq!(names.len(), 200);
        assert!(runs.iter().all(|r| r["metrics"].as_array().unwrap().len() == 10));
        assert!(runs.iter().all(|r| r["params"]["e"] == r["name"].as_str().unwrap()[4..]));
    }
}
