use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    collect_pages, create_database, expect_problem, expect_status, problem_fields, Backend, TestApp,
};
use crate::kafka::{consume, Broker, Received};
use crate::on_both_stores;

/// Settings that point the relay at `broker` with topics under a fresh prefix.
pub fn kafka_settings(broker: &Broker) -> (String, Vec<(&'static str, String)>) {
    let prefix = format!("test.{}.", Uuid::now_v7().simple());
    let vars = vec![
        ("AUMOS_KAFKA__BROKERS", broker.address()),
        ("AUMOS_KAFKA__TOPIC_PREFIX", prefix.clone()),
        ("AUMOS_KAFKA__MESSAGE_TIMEOUT_MS", "3000".to_owned()),
        ("AUMOS_OUTBOX__POLL_INTERVAL_MS", "50".to_owned()),
        ("AUMOS_OUTBOX__MAX_BACKOFF_SECONDS", "1".to_owned()),
        ("AUMOS_OUTBOX__LEASE_SECONDS", "10".to_owned()),
    ];
    (prefix, vars)
}

/// A service relaying to `broker`. On PostgreSQL it gets a database of its own: a relay
/// publishes every tenant's events of its database, so the shared test database would hand it
/// the events of other tests.
async fn spawn_with_kafka(backend: Backend, broker: &Broker) -> (TestApp, String) {
    let (prefix, vars) = kafka_settings(broker);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let database = match backend {
        Backend::Postgres => Some(create_database().await),
        Backend::Sqlite => None,
    };
    (TestApp::spawn_on(database, &vars).await, prefix)
}

fn topics(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}experiment"), format!("{prefix}run")]
}

async fn audit_trail(app: &TestApp) -> Vec<Value> {
    collect_pages(app, "/api/v1/events", 1000).await
}

async fn published_events_arrive_with_their_cloudevents_attributes(backend: Backend) {
    let broker = Broker::start().await;
    let (app, prefix) = spawn_with_kafka(backend, &broker).await;
    let experiment = app.create_experiment("published").await;

    let run = app
        .create_run(&experiment, &json!({"name": "r", "params": {"lr": "0.1"}}))
        .await;

    let received = consume(&broker, &topics(&prefix), 2, Duration::from_secs(30)).await;
    let audit = audit_trail(&app).await;
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(audit.len(), 2);
    let by_topic: HashMap<&str, &Received> =
        received.iter().map(|r| (r.topic.as_str(), r)).collect();
    let experiment_event = by_topic[format!("{prefix}experiment").as_str()];
    let run_event = by_topic[format!("{prefix}run").as_str()];
    assert_eq!(experiment_event.key, experiment);
    assert_eq!(experiment_event.header("ce_specversion"), "1.0");
    assert_eq!(
        experiment_event.header("ce_type"),
        "com.aumos.mlops.experiment.created.v1"
    );
    assert_eq!(
        experiment_event.header("ce_source"),
        "/aumos-mlops-lifecycle"
    );
    assert_eq!(
        experiment_event.header("ce_subject"),
        format!("experiments/{experiment}")
    );
    assert_eq!(
        experiment_event.header("ce_tenantid"),
        app.tenant.to_string()
    );
    assert_eq!(experiment_event.header("content-type"), "application/json");
    assert!(chrono::DateTime::parse_from_rfc3339(experiment_event.header("ce_time")).is_ok());
    assert_eq!(experiment_event.data["name"], "published");
    assert_eq!(
        experiment_event.header("ce_id"),
        audit[0]["id"].as_str().unwrap()
    );
    let run_id = run["id"].as_str().unwrap();
    assert_eq!(run_event.key, run_id);
    assert_eq!(
        run_event.header("ce_type"),
        "com.aumos.mlops.run.created.v1"
    );
    assert_eq!(run_event.header("ce_id"), audit[1]["id"].as_str().unwrap());
    assert_eq!(run_event.data["params"], json!({"lr": "0.1"}));
    assert_eq!(audit[1]["data"], run_event.data);
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_arrive_with_their_cloudevents_attributes_on_sqlite() {
    published_events_arrive_with_their_cloudevents_attributes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_arrive_with_their_cloudevents_attributes_on_postgres() {
    published_events_arrive_with_their_cloudevents_attributes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_change_publishes_nothing() {
    let broker = Broker::start().await;
    let (app, prefix) = spawn_with_kafka(Backend::Postgres, &broker).await;
    let experiment = app.create_experiment("once").await;
    let run = app
        .create_run(&experiment, &json!({"params": {"lr": "0.1"}}))
        .await;
    let run_path = format!(
        "/api/v1/experiments/{experiment}/runs/{}",
        run["id"].as_str().unwrap()
    );

    let duplicate = app
        .post("/api/v1/experiments", &json!({"name": "once"}))
        .await;
    let invalid = app.post("/api/v1/experiments", &json!({"name": ""})).await;
    let changed = app
        .post(
            &format!("{run_path}/log-batch"),
            &json!({"params": {"lr": "0.2"}}),
        )
        .await;
    let restart = app.patch(&run_path, &json!({"status": "RUNNING"})).await;
    let ended = app.patch(&run_path, &json!({"status": "FINISHED"})).await;

    expect_problem(duplicate, StatusCode::CONFLICT).await;
    expect_problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    expect_problem(changed, StatusCode::CONFLICT).await;
    expect_status(restart, StatusCode::OK).await;
    expect_status(ended, StatusCode::OK).await;
    // Everything that will ever arrive has arrived once the last good change has.
    let received = consume(&broker, &topics(&prefix), 3, Duration::from_secs(30)).await;
    let late = consume(&broker, &topics(&prefix), 4, Duration::from_secs(2)).await;
    let types: Vec<&str> = received.iter().map(|r| r.header("ce_type")).collect();
    let late_types: Vec<&str> = late.iter().map(|r| r.header("ce_type")).collect();
    assert_eq!(
        late.len(),
        3,
        "no event for a refused or no-op change: {late_types:?}"
    );
    assert!(types.contains(&"com.aumos.mlops.run.ended.v1"), "{types:?}");
    let audit = audit_trail(&app).await;
    let audit_types: Vec<&str> = audit.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        audit_types,
        [
            "com.aumos.mlops.experiment.created.v1",
            "com.aumos.mlops.run.created.v1",
            "com.aumos.mlops.run.ended.v1"
        ]
    );
}

/// Makes 50 changes over 10 runs: create, three batches, end.
async fn fifty_changes(app: &TestApp, experiment: &str) {
    for r in 0..10 {
        let run = app
            .create_run(experiment, &json!({"name": format!("r{r}")}))
            .await;
        let path = format!(
            "/api/v1/experiments/{experiment}/runs/{}",
            run["id"].as_str().unwrap()
        );
        for step in 0..3 {
            let batch = json!({"metrics": [{"key": "loss", "value": 1.0 / f64::from(step + 1), "step": step}]});
            expect_status(
                app.post(&format!("{path}/log-batch"), &batch).await,
                StatusCode::OK,
            )
            .await;
        }
        expect_status(
            app.patch(&path, &json!({"status": "FINISHED"})).await,
            StatusCode::OK,
        )
        .await;
    }
}

/// Asserts that, for every aggregate, Kafka holds its events in audit-trail order.
fn assert_order_per_aggregate(received: &[Received], audit: &[Value]) {
    let position: HashMap<&str, usize> = audit
        .iter()
        .enumerate()
        .map(|(i, e)| (e["id"].as_str().unwrap(), i))
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for message in received {
        by_key
            .entry(message.key.as_str())
            .or_default()
            .push(message);
    }
    for (key, mut messages) in by_key {
        messages.sort_by_key(|m| (m.partition, m.offset));
        let order: Vec<usize> = messages
            .iter()
            .map(|m| position[m.header("ce_id")])
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "events of {key} arrived out of order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_wait_in_the_outbox_while_the_broker_is_down_and_arrive_in_order_after() {
    let mut broker = Broker::start().await;
    let (app, prefix) = spawn_with_kafka(Backend::Postgres, &broker).await;
    let experiment = app.create_experiment("outage").await;
    assert_eq!(
        consume(&broker, &topics(&prefix), 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );

    broker.stop();
    fifty_changes(&app, &experiment).await;
    let ready = wait_for_kafka_status(&app, "degraded").await;
    broker.restart().await;

    assert!(
        ready["checks"]["outbox"]["pending_events"]
            .as_i64()
            .unwrap()
            >= 1,
        "{ready}"
    );
    assert!(
        ready["checks"]["outbox"]["oldest_pending_seconds"]
            .as_f64()
            .is_some(),
        "{ready}"
    );
    // The restarted broker forgot everything, including the first event: 50 arrive now.
    let received = consume(&broker, &topics(&prefix), 50, Duration::from_secs(60)).await;
    let audit = audit_trail(&app).await;
    assert_eq!(received.len(), 50);
    let ids: HashSet<&str> = received.iter().map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len(), 50, "no event published twice");
    assert_order_per_aggregate(&received, &audit);
    let ready = wait_for_kafka_status(&app, "up").await;
    assert_eq!(ready["checks"]["outbox"]["pending_events"], 0);
}

async fn wait_for_kafka_status(app: &TestApp, status: &str) -> Value {
    for _ in 0..300 {
        let ready = app.client.get(app.url("/ready")).send().await.unwrap();
        let ready: Value = ready.json().await.unwrap();
        if ready["checks"]["kafka"]["status"] == status {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Kafka never became {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_relays_on_one_database_publish_every_event_exactly_once() {
    let broker = Broker::start().await;
    let database = create_database().await;
    let (prefix, vars) = kafka_settings(&broker);
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.push(("AUMOS_OUTBOX__BATCH_AGGREGATES", "3"));
    let first = TestApp::spawn_on(Some(database.clone()), &vars).await;
    let mut second = TestApp::spawn_on(Some(database), &vars).await;
    second.tenant = first.tenant;
    let experiment = first.create_experiment("shared").await;

    let (a, b) = tokio::join!(
        fifty_changes(&first, &experiment),
        fifty_changes(&second, &experiment)
    );
    let _ = (a, b);

    let received = consume(&broker, &topics(&prefix), 101, Duration::from_secs(60)).await;
    let extra = consume(&broker, &topics(&prefix), 102, Duration::from_secs(2)).await;
    let audit = audit_trail(&first).await;
    assert_eq!(audit.len(), 101);
    assert_eq!(received.len(), 101);
    assert_eq!(extra.len(), 101, "nothing published twice");
    let published: HashSet<&str> = received.iter().map(|r| r.header("ce_id")).collect();
    let recorded: HashSet<&str> = audit.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(published, recorded);
    assert_order_per_aggregate(&received, &audit);
}

on_both_stores! {
    async fn the_audit_trail_lists_a_tenants_events_with_filters(app: TestApp) {
        let experiment = app.create_experiment("audited").await;
        let run = app.create_run(&experiment, &json!({"name": "r"})).await;
        let run_id = run["id"].as_str().unwrap();
        let path = format!("/api/v1/experiments/{experiment}/runs/{run_id}");
        app.patch(&path, &json!({"status": "KILLED"})).await;
        let stranger = Uuid::now_v7();

        let all = collect_pages(&app, "/api/v1/events", 1).await;
        let runs = app.get("/api/v1/events?aggregate_type=run").await;
        let one = app.get(&format!("/api/v1/events?aggregate_id={experiment}")).await;
        let ended = app.get("/api/v1/events?type=com.aumos.mlops.run.ended.v1").await;
        let future = app.get("/api/v1/events?since=2999-01-01T00:00:00Z").await;
        let foreign = app
            .request_as(stranger, reqwest::Method::GET, "/api/v1/events")
            .send()
            .await
            .unwrap();
        let bad = app.get("/api/v1/events?aggregate_type=widget&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z").await;

        let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, [
            "com.aumos.mlops.experiment.created.v1",
            "com.aumos.mlops.run.created.v1",
            "com.aumos.mlops.run.ended.v1",
        ]);
        assert_eq!(all[1]["subject"], format!("runs/{run_id}"));
        assert_eq!(all[1]["specversion"], "1.0");
        assert_eq!(all[1]["tenantid"], app.tenant.to_string());
        assert_eq!(all[1]["published"], false, "no broker is configured");
        assert_eq!(all[2]["data"]["previous_status"], "RUNNING");
        assert_eq!(expect_status(runs, StatusCode::OK).await["items"].as_array().unwrap().len(), 2);
        assert_eq!(expect_status(one, StatusCode::OK).await["items"].as_array().unwrap().len(), 1);
        assert_eq!(expect_status(ended, StatusCode::OK).await["items"].as_array().unwrap().len(), 1);
        assert_eq!(expect_status(future, StatusCode::OK).await["items"], json!([]));
        assert_eq!(expect_status(foreign, StatusCode::OK).await["items"], json!([]));
        let mut fields = problem_fields(&expect_problem(bad, StatusCode::BAD_REQUEST).await);
        fields.sort();
        assert_eq!(fields, ["aggregate_type", "until"]);
    }

    async fn readiness_reports_publishing_off_and_the_waiting_events(app: TestApp) {
        app.create_experiment("waiting").await;

        let ready = app.client.get(app.url("/ready")).send().await.unwrap();

        let ready = expect_status(ready, StatusCode::OK).await;
        assert_eq!(ready["checks"]["kafka"]["status"], "disabled");
        assert!(ready["checks"]["outbox"]["pending_events"].as_i64().unwrap() >= 1);
        assert_eq!(ready["status"], "ready");
    }
}
