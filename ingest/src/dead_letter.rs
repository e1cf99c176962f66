//! The dead-letter topic: where messages go that must never block the good
//! ones (invalid JSON, wrong types, missing fields, impossible values,
//! oversize messages, and rows ClickHouse refused).
//!
//! The payload and key are the original bytes; the headers say why:
//! `agentmeter-reason` (the rejection kind), `agentmeter-field`,
//! `agentmeter-error`, `agentmeter-source-topic`,
//! `agentmeter-source-partition`, `agentmeter-source-offset`.
//!
//! A row ClickHouse refuses is dead-lettered with its message read again
//! from the source topic ([`DeadLetters::read_original`]): batches do not
//! keep the original bytes, and the message is still there because its
//! offset is only committed after the dead letter is acknowledged.
//!
//! A delivery is retried until Kafka acknowledges it: the source offset of a
//! dead-lettered message is stored only after that acknowledgement, so a
//! rejected message is never lost, at the price of an occasional second copy
//! in the dead-letter topic after a crash or rebalance.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::errors::{Backoff, IngestError};
use crate::metrics::Metrics;

pub const HEADER_REASON: &str = "agentmeter-reason";
pub const HEADER_FIELD: &str = "agentmeter-field";
pub const HEADER_ERROR: &str = "agentmeter-error";
pub const HEADER_SOURCE_TOPIC: &str = "agentmeter-source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "agentmeter-source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "agentmeter-source-offset";

/// A message to dead-letter, with why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Metric label of the event kind.
    pub kind: &'static str,
    /// The rejection kind (`invalid_json`, ..., `clickhouse_rejected`).
    pub reason: &'static str,
    pub field: String,
    pub error: String,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A source message read again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Attempts at reading a source message again before giving up on its bytes.
const READ_ORIGINAL_ATTEMPTS: u32 = 3;
const READ_ORIGINAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Producer of the dead-letter topic.
pub struct DeadLetters {
    brokers: String,
    producer: FutureProducer,
    topic: String,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: &str, backoff: Backoff, metrics: Arc<Metrics>) -> Result<Self, IngestError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { brokers: brokers.to_owned(), producer, topic: topic.to_owned(), backoff, metrics })
    }

    /// The key and bytes of the message at `offset` of `topic`/`partition`,
    /// read again (a rare path: only rows ClickHouse refused need it). If it
    /// cannot be read after a few attempts (the topic's retention removed
    /// it), the payload is empty; the headers still name the source.
    pub async fn read_original(&self, topic: &str, partition: i32, offset: i64) -> Original {
        let mut attempt = 0;
        loop {
            let (brokers, topic_owned) = (self.brokers.clone(), topic.to_owned());
            let read = tokio::task::spawn_blocking(move || read_at(&brokers, &topic_owned, partition, offset))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match read {
                Ok(original) => return original,
                Err(error) if attempt + 1 >= READ_ORIGINAL_ATTEMPTS => {
                    tracing::error!(topic, partition, offset, %error, "cannot read the refused message again; dead-lettering it without its bytes");
                    return Original::default();
                }
                Err(error) => {
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(topic, partition, offset, %error, retry_in_ms = delay.as_millis() as u64, "cannot read the refused message again");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Delivers in the background; the handle completes once Kafka has
    /// acknowledged the message (retrying for as long as it takes).
    pub fn spawn(self: &Arc<Self>, rejected: Rejected) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(&rejected).await })
    }

    /// Delivers and returns once Kafka acknowledged the message.
    pub async fn deliver(&self, r: &Rejected) {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let mut attempt = 0u32;
        loop {
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(Header { key: HEADER_REASON, value: Some(r.reason) })
                .insert(Header { key: HEADER_FIELD, value: Some(r.field.as_str()) })
                .insert(Header { key: HEADER_ERROR, value: Some(r.error.as_str()) })
                .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(r.source_topic.as_str()) })
                .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(partition.as_str()) })
                .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(offset.as_str()) });
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(&r.payload).headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key.as_slice());
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => {
                    self.metrics.events_dead_lettered.with_label_values(&[r.kind, r.reason]).inc();
                    return;
                }
                Err((e, _)) => {
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(error = %e, topic = %self.topic, retry_in_ms = delay.as_millis() as u64, "dead-letter delivery failed");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Reads one message by position with a short-lived consumer that joins no
/// group and commits nothing.
fn read_at(brokers: &str, topic: &str, partition: i32, offset: i64) -> Result<Original, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "agentmeter-ingest-read-again")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A position no longer (or not yet) there is an error, not a reset;
        // reaching the end of the partition says so instead of waiting.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + READ_ORIGINAL_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match consumer.poll(left) {
            Some(Ok(m)) if m.offset() == offset => {
                return Ok(Original { key: m.key().map(<[u8]>::to_vec), payload: m.payload().unwrap_or_default().to_vec() });
            }
            Some(Ok(m)) if m.offset() > offset => return Err(format!("the partition continues at offset {}", m.offset())),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    Err(format!("nothing read within {} s", READ_ORIGINAL_TIMEOUT.as_secs()))
}
