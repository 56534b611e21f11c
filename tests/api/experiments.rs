use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{collect_pages, expect_problem, expect_status, problem_fields};
use crate::on_both_stores;

on_both_stores! {
    async fn creating_an_experiment_returns_it_with_its_location(app: TestApp) {
        let body = json!({
            "name": "churn-model",
            "description": "Predict churn",
            "tags": {"team": "growth"}
        });

        let response = app.post("/api/v1/experiments", &body).await;

        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let created = expect_status(response, StatusCode::CREATED).await;
        assert_eq!(created["name"], "churn-model");
        assert_eq!(created["description"], "Predict churn");
        assert_eq!(created["tags"], json!({"team": "growth"}));
        assert_eq!(created["version"], 1);
        let id = created["id"].as_str().unwrap();
        assert_eq!(location, format!("/api/v1/experiments/{id}"));
        let fetched = expect_status(app.get(&location).await, StatusCode::OK).await;
        assert_eq!(fetched, created);
    }

    async fn experiment_names_are_unique_per_tenant_only(app: TestApp) {
        app.create_experiment("fraud").await;
        let other_tenant = Uuid::now_v7();

        let duplicate = app.post("/api/v1/experiments", &json!({"name": "fraud"})).await;
        let elsewhere = app
            .request_as(other_tenant, reqwest::Method::POST, "/api/v1/experiments")
            .json(&json!({"name": "fraud"}))
            .send()
            .await
            .unwrap();

        let problem = expect_problem(duplicate, StatusCode::CONFLICT).await;
        assert_eq!(problem_fields(&problem), ["name"]);
        expect_status(elsewhere, StatusCode::CREATED).await;
    }

    async fn an_invalid_experiment_is_refused_with_every_invalid_field(app: TestApp) {
        let body = json!({
            "name": "   ",
            "description": "d".repeat(5001),
            "tags": {"bad key!": "x", "ok": "v".repeat(5001)}
        });

        let response = app.post("/api/v1/experiments", &body).await;

        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let fields = problem_fields(&problem);
        assert!(fields.contains(&"name".to_owned()), "{fields:?}");
        assert!(fields.contains(&"description".to_owned()), "{fields:?}");
        assert!(fields.contains(&"tags[\"bad key!\"] (key)".to_owned()), "{fields:?}");
        assert!(fields.contains(&"tags[\"ok\"]".to_owned()), "{fields:?}");
    }

    async fn listing_pages_through_every_experiment_once_newest_first(app: TestApp) {
        let mut created = Vec::new();
        for i in 0..7 {
            created.push(app.create_experiment(&format!("exp-{i}")).await);
        }

        let listed = collect_pages(&app, "/api/v1/experiments", 3).await;

        let ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let newest_first: Vec<&str> = created.iter().rev().map(String::as_str).collect();
        assert_eq!(ids, newest_first);
    }

    async fn experiments_filter_by_name_prefix_and_tag(app: TestApp) {
        for (name, team) in [("churn-a", "growth"), ("churn-b", "risk"), ("fraud-a", "growth")] {
            let body = json!({"name": name, "tags": {"team": team}});
            expect_status(app.post("/api/v1/experiments", &body).await, StatusCode::CREATED).await;
        }

        let names = |page: serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        };
        let by_prefix = app.get("/api/v1/experiments?name_prefix=churn").await;
        let by_tag = app.get("/api/v1/experiments?tag=team:growth").await;
        let by_both = app.get("/api/v1/experiments?name_prefix=churn&tag=team:growth").await;
        let by_key = app.get("/api/v1/experiments?tag=team").await;

        assert_eq!(names(expect_status(by_prefix, StatusCode::OK).await), ["churn-a", "churn-b"]);
        assert_eq!(names(expect_status(by_tag, StatusCode::OK).await), ["churn-a", "fraud-a"]);
        assert_eq!(names(expect_status(by_both, StatusCode::OK).await), ["churn-a"]);
        assert_eq!(names(expect_status(by_key, StatusCode::OK).await).len(), 3);
    }

    async fn bad_listing_parameters_are_all_reported(app: TestApp) {
        let response = app.get("/api/v1/experiments?limit=0&page_token=nonsense&tag=bad!").await;

        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        let mut fields = problem_fields(&problem);
        fields.sort();
        assert_eq!(fields, ["limit", "page_token", "tag"]);
    }

    async fn an_unknown_experiment_is_not_found(app: TestApp) {
        let unknown = app.get(&format!("/api/v1/experiments/{}", Uuid::now_v7())).await;
        let not_a_uuid = app.get("/api/v1/experiments/not-a-uuid").await;

        expect_problem(unknown, StatusCode::NOT_FOUND).await;
        expect_problem(not_a_uuid, StatusCode::NOT_FOUND).await;
    }
}
