//! Publishes outbox events to Kafka as CloudEvents 1.0 in binary mode: the value is the event's
//! JSON data, the attributes travel as `ce_*` headers, the key is the aggregate id (so one
//! aggregate's events stay in order on one partition).
//!
//! The producer is idempotent with `acks=all`; an event counts as published only once the
//! broker acknowledged it. Topics, one per aggregate kind, are created through the admin API,
//! since production clusters (and the test broker) do not create topics on first use.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::core::events::{AggregateKind, StoredEvent};
use crate::core::ports::EventPublisher;
use crate::settings::KafkaSettings;

/// The CloudEvents extension attribute that carries the tenant.
pub const TENANT_EXTENSION: &str = "tenantid";

/// Topic names and CloudEvents attributes, shared by the publisher and the audit trail.
#[derive(Debug, Clone)]
pub struct EventNaming {
    /// CloudEvents `source`, such as `/aumos-mlops-lifecycle`.
    pub source: String,
    pub topic_prefix: String,
}

impl EventNaming {
    pub fn topic(&self, kind: AggregateKind) -> String {
        format!("{}{}", self.topic_prefix, kind.as_str())
    }
}

/// Keeps librdkafka's own messages at debug level: a broker outage makes it report every
/// failed connection, while the relay reports the outage once.
#[derive(Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, _level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(kafka.facility = facility, "librdkafka: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(kafka.error = %error, "librdkafka: {reason}");
    }
}

type KafkaProducer = FutureProducer<QuietContext>;

pub struct KafkaPublisher {
    config: ClientConfig,
    producer: Mutex<KafkaProducer>,
    naming: EventNaming,
    partitions: i32,
    replication: i32,
    request_timeout: Duration,
}

impl KafkaPublisher {
    pub fn new(settings: &KafkaSettings, naming: EventNaming) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", settings.brokers.join(","))
            .set("client.id", "aumos-mlops-lifecycle")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                settings.message_timeout.as_millis().to_string(),
            )
            .set("allow.auto.create.topics", "false")
            .set("log_level", "3");
        let producer = config.create_with_context(QuietContext)?;
        Ok(Self {
            config,
            producer: Mutex::new(producer),
            naming,
            partitions: settings.topic_partitions,
            replication: settings.topic_replication_factor,
            request_timeout: settings.message_timeout,
        })
    }

    fn producer(&self) -> KafkaProducer {
        match self.producer.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts over with a new producer after a failed batch. An idempotent producer can be
    /// left unusable by a broker that restarted and no longer knows its producer id (it is
    /// then "fenced"); every message of the failed batch has already been reported, so
    /// nothing is lost by dropping the old one.
    fn renew_producer(&self) {
        match self.config.create_with_context(QuietContext) {
            Ok(fresh) => {
                if let Ok(mut slot) = self.producer.lock() {
                    *slot = fresh;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot create a new Kafka producer"),
        }
    }

    fn headers(&self, stored: &StoredEvent) -> OwnedHeaders {
        let event = &stored.event;
        let id = event.id.to_string();
        let time = event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let subject = event.subject();
        let tenant = event.tenant_id.to_string();
        let pairs: [(&str, &str); 8] = [
            ("ce_specversion", "1.0"),
            ("ce_id", &id),
            ("ce_source", &self.naming.source),
            ("ce_type", &event.event_type),
            ("ce_time", &time),
            ("ce_subject", &subject),
            ("ce_tenantid", &tenant),
            ("content-type", "application/json"),
        ];
        pairs.iter().fold(
            OwnedHeaders::new_with_capacity(pairs.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(*value),
                })
            },
        )
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    async fn prepare(&self, kinds: &[AggregateKind]) -> Result<(), String> {
        let admin: AdminClient<QuietContext> = self
            .config
            .create_with_context(QuietContext)
            .map_err(|e| format!("cannot create the Kafka admin client: {e}"))?;
        let names: Vec<String> = kinds.iter().map(|k| self.naming.topic(*k)).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Timeout::After(self.request_timeout)))
            .request_timeout(Some(Timeout::After(self.request_timeout)));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .map_err(|e| format!("cannot create Kafka topics: {e}"))?;
        let mut created = HashSet::new();
        for result in results {
            match result {
                Ok(topic) => {
                    created.insert(topic);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
            }
        }
        if !created.is_empty() {
            tracing::info!(kafka.topics = ?created, "Kafka topics created");
        }
        Ok(())
    }

    async fn publish(&self, events: &[StoredEvent]) -> Vec<Result<(), String>> {
        let producer = self.producer();
        let mut deliveries = Vec::with_capacity(events.len());
        for stored in events {
            let topic = self.naming.topic(stored.event.aggregate_kind);
            let key = stored.event.aggregate_id.to_string();
            let payload = stored.event.data.to_string();
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(self.headers(stored));
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e.to_string()));
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for delivery in deliveries {
            let outcome = match delivery {
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error.to_string()),
                    Err(_) => Err("the producer dropped the message".to_owned()),
                },
                Err(error) => Err(error),
            };
            outcomes.push(outcome);
        }
        if outcomes.iter().any(Result::is_err) {
            self.renew_producer();
        }
        outcomes
    }

    async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)));
        if let Ok(Err(error)) = flushed.await {
            tracing::warn!(%error, "Kafka producer could not flush every message before stopping");
        }
    }
}
