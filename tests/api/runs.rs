use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{collect_pages, expect_problem, expect_status, problem_fields, TestApp};
use crate::on_both_stores;

fn runs_path(experiment: &str) -> String {
    format!("/api/v1/experiments/{experiment}/runs")
}

fn metric_value(run: &Value, key: &str) -> Option<f64> {
    run["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["key"] == key)?["value"]
        .as_f64()
}

async fn run_with_auc(app: &TestApp, experiment: &str, name: &str, auc: Option<f64>) -> String {
    let metrics = auc
        .map(|v| json!([{"key": "auc", "value": v}]))
        .unwrap_or(json!([]));
    let run = json!({"name": name, "status": "FINISHED", "metrics": metrics});
    app.create_run(experiment, &run).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

on_both_stores! {
    async fn a_complete_run_is_stored_with_its_params_metrics_and_tags(app: TestApp) {
        let experiment = app.create_experiment("complete").await;
        let body = json!({
            "name": "xgb-1",
            "status": "FINISHED",
            "start_time": "2026-01-02T03:04:05.678Z",
            "end_time": "2026-01-02T04:00:00Z",
            "params": {"max_depth": "6", "lr": "0.1"},
            "metrics": [
                {"key": "loss", "value": 0.9, "step": 1},
                {"key": "loss", "value": 0.4, "step": 3},
                {"key": "loss", "value": 0.6, "step": 2},
                {"key": "auc", "value": 0.91}
            ],
            "tags": {"framework": "xgboost"}
        });

        let created = app.create_run(&experiment, &body).await;
        let id = created["id"].as_str().unwrap();
        let fetched = app.get(&format!("{}/{id}", runs_path(&experiment))).await;

        let fetched = expect_status(fetched, StatusCode::OK).await;
        assert_eq!(fetched, created);
        assert_eq!(fetched["status"], "FINISHED");
        assert_eq!(fetched["start_time"], "2026-01-02T03:04:05.678Z");
        assert_eq!(fetched["end_time"], "2026-01-02T04:00:00Z");
        assert_eq!(fetched["params"], json!({"max_depth": "6", "lr": "0.1"}));
        assert_eq!(fetched["tags"], json!({"framework": "xgboost"}));
        assert_eq!(metric_value(&fetched, "loss"), Some(0.4), "latest is the highest step");
        assert_eq!(metric_value(&fetched, "auc"), Some(0.91));
    }

    async fn a_running_run_is_fed_by_batches_and_closed(app: TestApp) {
        let experiment = app.create_experiment("incremental").await;
        let run = app.create_run(&experiment, &json!({"name": "live"})).await;
        let path = format!("{}/{}", runs_path(&experiment), run["id"].as_str().unwrap());
        assert_eq!(run["status"], "RUNNING");
        assert_eq!(run["end_time"], Value::Null);

        let first = json!({"metrics": [{"key": "loss", "value": 1.0, "step": 0}],
                           "params": {"lr": "0.1"}, "tags": {"stage": "warmup"}});
        let second = json!({"metrics": [{"key": "loss", "value": 0.5, "step": 1}],
                            "tags": {"stage": "main"}});
        expect_status(app.post(&format!("{path}/log-batch"), &first).await, StatusCode::OK).await;
        let logged = app.post(&format!("{path}/log-batch"), &second).await;
        let logged = expect_status(logged, StatusCode::OK).await;
        let closed = app.patch(&path, &json!({"status": "FINISHED"})).await;

        assert_eq!(metric_value(&logged, "loss"), Some(0.5));
        assert_eq!(logged["params"], json!({"lr": "0.1"}));
        assert_eq!(logged["tags"], json!({"stage": "main"}), "tags can be overwritten");
        let closed = expect_status(closed, StatusCode::OK).await;
        assert_eq!(closed["status"], "FINISHED");
        assert!(closed["end_time"].is_string());
        assert!(closed["version"].as_i64().unwrap() > run["version"].as_i64().unwrap());
        let fetched = expect_status(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(fetched["status"], "FINISHED");
    }

    async fn params_cannot_change_once_logged_and_the_whole_batch_is_refused(app: TestApp) {
        let experiment = app.create_experiment("immutable").await;
        let run = app.create_run(&experiment, &json!({"params": {"lr": "0.1"}})).await;
        let path = format!("{}/{}", runs_path(&experiment), run["id"].as_str().unwrap());

        let same = json!({"params": {"lr": "0.1"}});
        let changed = json!({"params": {"lr": "0.2"}, "metrics": [{"key": "m", "value": 1.0}]});
        expect_status(app.post(&format!("{path}/log-batch"), &same).await, StatusCode::OK).await;
        let response = app.post(&format!("{path}/log-batch"), &changed).await;

        let problem = expect_problem(response, StatusCode::CONFLICT).await;
        assert_eq!(problem_fields(&problem), ["params[\"lr\"]"]);
        let fetched = expect_status(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(fetched["params"]["lr"], "0.1");
        assert_eq!(metric_value(&fetched, "m"), None, "nothing of a refused batch is stored");
    }

    async fn mlflow_limits_are_enforced_before_anything_is_stored(app: TestApp) {
        let experiment = app.create_experiment("limits").await;
        let metrics: Vec<Value> = (0..1001).map(|i| json!({"key": "m", "value": i})).collect();
        let params: serde_json::Map<String, Value> =
            (0..101).map(|i| (format!("p{i}"), json!("v"))).collect();
        let tags: serde_json::Map<String, Value> =
            (0..101).map(|i| (format!("t{i}"), json!("v"))).collect();
        let body = json!({"metrics": metrics, "params": params, "tags": tags});
        let long = json!({
            "params": {"k".repeat(251): "v", "long": "v".repeat(6001)},
        });

        let too_many = app.post(&runs_path(&experiment), &body).await;
        let too_long = app.post(&runs_path(&experiment), &long).await;
        let not_a_number = app
            .post(&runs_path(&experiment), &json!({"metrics": [{"key": "m", "value": "NaN"}]}))
            .await;

        let fields = problem_fields(&expect_problem(too_many, StatusCode::UNPROCESSABLE_ENTITY).await);
        assert!(fields.contains(&"metrics".to_owned()), "{fields:?}");
        assert!(fields.contains(&"params".to_owned()), "{fields:?}");
        assert!(fields.contains(&"tags".to_owned()), "{fields:?}");
        let fields = problem_fields(&expect_problem(too_long, StatusCode::UNPROCESSABLE_ENTITY).await);
        assert_eq!(fields.len(), 2, "{fields:?}");
        let nan = expect_problem(not_a_number, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem_fields(&nan), ["metrics[0].value"]);
        let runs = expect_status(app.get(&runs_path(&experiment)).await, StatusCode::OK).await;
        assert_eq!(runs["items"], json!([]));
    }

    async fn runs_order_by_a_metric_with_runs_lacking_it_last(app: TestApp) {
        let experiment = app.create_experiment("ordering").await;
        for (name, auc) in [("b", Some(0.7)), ("none-1", None), ("a", Some(0.9)),
                            ("c", Some(0.5)), ("none-2", None), ("d", Some(0.7))] {
            run_with_auc(&app, &experiment, name, auc).await;
        }
        let path = runs_path(&experiment);

        let desc = collect_pages(&app, &format!("{path}?order_by=metrics.auc%20DESC"), 2).await;
        let asc = collect_pages(&app, &format!("{path}?order_by=metrics.auc%20ASC"), 4).await;

        let aucs = |runs: &[Value]| runs.iter().map(|r| metric_value(r, "auc")).collect::<Vec<_>>();
        assert_eq!(aucs(&desc), [Some(0.9), Some(0.7), Some(0.7), Some(0.5), None, None]);
        assert_eq!(aucs(&asc), [Some(0.5), Some(0.7), Some(0.7), Some(0.9), None, None]);
        let mut ids: Vec<&str> = desc.iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 6, "every run exactly once across pages");
    }

    async fn runs_list_newest_first_by_default(app: TestApp) {
        let experiment = app.create_experiment("default-order").await;
        let mut names = Vec::new();
        for i in 0..5 {
            let start = format!("2026-03-0{}T00:00:00Z", i + 1);
            let body = json!({"name": format!("r{i}"), "start_time": start});
            names.push(app.create_run(&experiment, &body).await["name"].as_str().unwrap().to_owned());
        }

        let listed = collect_pages(&app, &runs_path(&experiment), 2).await;

        let listed: Vec<&str> = listed.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(listed, ["r4", "r3", "r2", "r1", "r0"]);
    }

    async fn a_page_token_only_works_with_its_own_order(app: TestApp) {
        let experiment = app.create_experiment("tokens").await;
        for name in ["a", "b", "c"] {
            run_with_auc(&app, &experiment, name, Some(0.5)).await;
        }
        let path = runs_path(&experiment);
        let page = expect_status(app.get(&format!("{path}?limit=1")).await, StatusCode::OK).await;
        let token = page["next_page_token"].as_str().unwrap();

        let mixed = app.get(&format!("{path}?order_by=metrics.auc&page_token={token}")).await;
        let bad_order = app.get(&format!("{path}?order_by=colour")).await;

        let problem = expect_problem(mixed, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem_fields(&problem), ["page_token"]);
        let problem = expect_problem(bad_order, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem_fields(&problem), ["order_by"]);
    }

    async fn an_ended_run_cannot_be_restarted(app: TestApp) {
        let experiment = app.create_experiment("ended").await;
        let run = app.create_run(&experiment, &json!({"status": "FAILED"})).await;
        let path = format!("{}/{}", runs_path(&experiment), run["id"].as_str().unwrap());

        let restart = app.patch(&path, &json!({"status": "RUNNING"})).await;
        let bad_status = app.patch(&path, &json!({"status": "DONE"})).await;

        let problem = expect_problem(restart, StatusCode::CONFLICT).await;
        assert_eq!(problem_fields(&problem), ["status"]);
        let problem = expect_problem(bad_status, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem_fields(&problem), ["status"]);
    }

    async fn runs_of_an_unknown_experiment_or_run_are_not_found(app: TestApp) {
        let experiment = app.create_experiment("known").await;
        let unknown_experiment = runs_path(&Uuid::now_v7().to_string());
        let unknown_run = format!("{}/{}", runs_path(&experiment), Uuid::now_v7());

        let create = app.post(&unknown_experiment, &json!({})).await;
        let list = app.get(&unknown_experiment).await;
        let get = app.get(&unknown_run).await;
        let log = app.post(&format!("{unknown_run}/log-batch"), &json!({"tags": {"a": "b"}})).await;
        let patch = app.patch(&unknown_run, &json!({"status": "KILLED"})).await;

        for response in [create, list, get, log, patch] {
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }

    async fn a_filter_selects_runs_and_only_the_asked_columns_come_back(app: TestApp) {
        let experiment = app.create_experiment("filtered").await;
        for (name, model, auc, status) in [
            ("a", "xgboost", 0.91, "FINISHED"),
            ("b", "xgboost", 0.72, "FINISHED"),
            ("c", "linear", 0.95, "FINISHED"),
            ("d", "xgboost", 0.97, "FAILED"),
        ] {
            let run = json!({
                "name": name, "status": status, "params": {"model": model, "seed": "1"},
                "metrics": [{"key": "auc", "value": auc}, {"key": "loss", "value": 1.0 - auc}]
            });
            app.create_run(&experiment, &run).await;
        }
        let filter = "metrics.auc > 0.8 and params.model = 'xgboost' and attributes.status = 'FINISHED'";

        let found = app
            .request(reqwest::Method::GET, &runs_path(&experiment))
            .query(&[("filter", filter), ("metric_keys", "auc"), ("param_keys", "model")])
            .send()
            .await
            .unwrap();
        let everything_but = app
            .request(reqwest::Method::GET, &runs_path(&experiment))
            .query(&[("filter", "params.model != 'linear'"), ("order_by", "attributes.status DESC, metrics.auc")])
            .send()
            .await
            .unwrap();

        let found = expect_status(found, StatusCode::OK).await;
        let items = found["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["name"], "a");
        assert_eq!(items[0]["metrics"].as_array().unwrap().len(), 1);
        assert_eq!(items[0]["params"], json!({"model": "xgboost"}));
        let problem = expect_problem(everything_but, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem_fields(&problem), ["order_by"]);
    }

    async fn several_order_keys_page_through_every_run_once(app: TestApp) {
        let experiment = app.create_experiment("multi-order").await;
        for i in 0..9 {
            let run = json!({
                "name": format!("r{i}"), "status": "FINISHED",
                "params": {"group": if i % 3 == 0 { "x" } else { "y" }},
                "metrics": if i == 4 { json!([]) } else { json!([{"key": "auc", "value": f64::from(i % 4) / 10.0}]) }
            });
            app.create_run(&experiment, &run).await;
        }

        let path = format!("{}?order_by=params.group%20DESC,%20metrics.auc%20DESC", runs_path(&experiment));
        let runs = collect_pages(&app, &path, 2).await;

        let seen: Vec<(String, Option<f64>)> = runs
            .iter()
            .map(|r| (r["params"]["group"].as_str().unwrap().to_owned(), metric_value(r, "auc")))
            .collect();
        assert_eq!(seen.len(), 9);
        let mut ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 9, "no run twice");
        let groups: Vec<&str> = seen.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(groups, ["y", "y", "y", "y", "y", "y", "x", "x", "x"]);
        let y: Vec<Option<f64>> = seen[..6].iter().map(|(_, v)| *v).collect();
        assert_eq!(y, [Some(0.3), Some(0.2), Some(0.1), Some(0.1), Some(0.0), None]);
    }

    async fn a_malformed_filter_points_at_the_bad_token(app: TestApp) {
        let experiment = app.create_experiment("bad-filter").await;

        let response = app
            .request(reqwest::Method::GET, &runs_path(&experiment))
            .query(&[("filter", "metrics.auc > 0.8 or params.model = 'x'")])
            .send()
            .await
            .unwrap();

        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem_fields(&problem), ["filter"]);
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("character 19") && message.contains("OR"), "{message}");
    }
}
