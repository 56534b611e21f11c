//! A rollout's decisions reach Kafka as CloudEvents, in order and keyed by the deployment:
//! these are the instructions the serving layer follows.

use super::*;
use crate::events::kafka_settings;
use crate::kafka::{consume, Broker};

async fn traffic_instructions_reach_kafka_in_the_order_they_were_decided(backend: Backend) {
    let broker = Broker::start().await;
    let (prefix, kafka) = kafka_settings(&broker);
    let mut vars = fast_vars();
    vars.extend(kafka);
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let database = match backend {
        Backend::Postgres => Some(create_database().await),
        Backend::Sqlite => None,
    };
    let app = TestApp::spawn_on(database, &borrowed).await;
    let model = promoted_model(&app).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "production", &health);
    body["traffic_split"] = json!({"stable": 70, "canary": 30});
    body["analysis"]["step_percent"] = json!(35);
    let id = create(&app, &body).await["id"].as_str().unwrap().to_owned();
    wait_for_end(&app, &id).await;
    let history = history(&app, &id).await;

    let topic = format!("{prefix}deployment");
    let received = consume(&broker, &[topic], history.len(), Duration::from_secs(30)).await;

    assert_eq!(received.len(), history.len(), "{received:?}");
    for (event, decision) in received.iter().zip(&history) {
        assert_eq!(event.key, id);
        assert_eq!(event.header("ce_id"), decision["id"].as_str().unwrap());
        assert_eq!(
            event.header("ce_type"),
            format!(
                "com.aumos.mlops.deployment.{}.v1",
                decision["kind"].as_str().unwrap()
            )
        );
        assert_eq!(event.header("ce_subject"), format!("deployments/{id}"));
        assert_eq!(event.data["traffic_split"], decision["traffic_split"]);
    }
    let shifts: Vec<&Value> = received
        .iter()
        .filter(|e| e.header("ce_type").contains(".traffic_shifted."))
        .map(|e| &e.data["traffic_split"])
        .collect();
    assert_eq!(
        shifts,
        [
            &json!({"stable": 70, "canary": 30}),
            &json!({"stable": 35, "canary": 65}),
            &json!({"stable": 0, "canary": 100}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_instructions_reach_kafka_in_the_order_they_were_decided_on_sqlite() {
    traffic_instructions_reach_kafka_in_the_order_they_were_decided(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_instructions_reach_kafka_in_the_order_they_were_decided_on_postgres() {
    traffic_instructions_reach_kafka_in_the_order_they_were_decided(Backend::Postgres).await;
}
