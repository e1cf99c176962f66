//! Usage the API itself records: `POST /v1/usage/consume` and reservation
//! commits become agent-execution events on the same Kafka topic the
//! runtimes produce to, so what enforcement admitted and what analytics
//! count are one record, counted once by the ingest worker's `event_id`
//! deduplication however often a request is retried.
//!
//! The producer is rdkafka's `FutureProducer` (the client the ingest worker
//! already uses) with `enable.idempotence=true` and `acks=all`: an
//! acknowledged event is on every in-sync replica, and the producer's own
//! retries never duplicate it. Events are keyed by `event_id`.

use std::time::Duration;

use agentmeter_schema::event::AgentExecutionEvent;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Where recorded usage goes. Every field in the unit its name says.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The agent-execution topic.
    pub topic: String,
    /// Longest wait for the broker's acknowledgement.
    pub produce_timeout_ms: u64,
}

/// The producer of recorded usage.
pub struct Recorder {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Recorder {
    /// A producer for `settings` (connects lazily; fails only on a bad
    /// configuration).
    pub fn new(settings: &RecorderSettings) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", settings.produce_timeout_ms.to_string())
            .create()
            .map_err(|e| anyhow::anyhow!("Kafka producer: {e}"))?;
        Ok(Self { producer, topic: settings.topic.clone(), timeout: Duration::from_millis(settings.produce_timeout_ms) })
    }

    /// Produces one event and waits for its acknowledgement. `Err` is the
    /// 503 detail.
    pub async fn record(&self, event: &AgentExecutionEvent) -> Result<(), String> {
        let payload = serde_json::to_vec(event).map_err(|e| format!("usage event not serialisable: {e}"))?;
        let key = event.event_id.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        match self.producer.send(record, Timeout::After(self.timeout)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(format!("Usage could not be recorded: Kafka did not acknowledge the event ({e}); nothing was consumed, retry with the same Idempotency-Key")),
        }
    }
}
