//! Every copy of an event is inserted by one worker: the owner of the
//! event's **home partition**, `crc32(event_id as text) % partitions` of
//! its topic.
//!
//! Why: the duplicate look-up ([`crate::dedup`]) is exact only between
//! batches written one after the other. Two workers writing two copies of
//! one event at the same moment could both look the id up before either
//! insert lands, and both insert it. Copies on one partition are read by
//! one worker at a time, in order, so they can never be written
//! concurrently. A valid message read on any other partition is therefore
//! not inserted where it was read: it is **forwarded**, verbatim (key,
//! payload, headers), to its home partition of the same topic, and the
//! source offset is stored only once Kafka acknowledged the copy (like a
//! dead letter). Its home partition's owner then inserts it, or finds it
//! stored.
//!
//! The home partition is the partition librdkafka's default partitioner
//! (`consistent_random`: CRC-32 of the key modulo the partition count)
//! picks for a message keyed by the event id's text: producers that key by
//! `event_id` with librdkafka (as the load generator does) write every
//! message to its home partition, and nothing is forwarded. Unkeyed
//! messages and other partitioners cost one extra produce for the messages
//! that landed elsewhere.
//!
//! This module never decides anything about a message it cannot parse:
//! those are dead-lettered where they were read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::errors::{Backoff, IngestError};
use crate::metrics::Metrics;

/// The partition (of a topic with `partitions` partitions) every copy of
/// `event_id` is inserted from.
pub fn home_partition(event_id: Uuid, partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = event_id.hyphenated().encode_lower(&mut text);
    (crc32fast::hash(text.as_bytes()) % partitions.max(1) as u32) as i32
}

/// The partition counts of the event topics, read from the broker's
/// metadata at start and after every assignment (the count only changes
/// when an operator adds partitions, which starts a rebalance).
#[derive(Debug, Default, Clone)]
pub struct PartitionCounts(HashMap<String, i32>);

impl PartitionCounts {
    pub fn get(&self, topic: &str) -> Option<i32> {
        self.0.get(topic).copied()
    }

    /// Reads the counts of `topics` from the broker; `None` if one of them
    /// is not known yet (missing topic, broker away).
    pub fn fetch<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(consumer: &C, topics: &[&str]) -> Option<Self> {
        let mut counts = HashMap::new();
        for topic in topics {
            let metadata = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "cannot read the topic's partition count");
                    return None;
                }
            };
            let n = metadata.topics().iter().find(|t| t.name() == *topic).map_or(0, |t| t.partitions().len());
            if n == 0 {
                return None;
            }
            counts.insert((*topic).to_owned(), n as i32);
        }
        Some(Self(counts))
    }
}

/// Copies messages to their home partition.
pub struct Forwarder {
    producer: FutureProducer,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// A message to copy to its home partition.
#[derive(Debug, Clone)]
pub struct Forward {
    pub kind: &'static str,
    pub topic: String,
    pub home: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

impl Forward {
    /// The copy of `m` for partition `home` of its topic.
    pub fn of(m: &BorrowedMessage<'_>, kind: &'static str, home: i32) -> Self {
        Self {
            kind,
            topic: m.topic().to_owned(),
            home,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: m.headers().map(|h| h.detach()),
        }
    }
}

impl Forwarder {
    pub fn new(brokers: &str, backoff: Backoff, metrics: Arc<Metrics>) -> Result<Self, IngestError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { producer, backoff, metrics })
    }

    /// Copies in the background; the handle completes once Kafka has
    /// acknowledged the copy (retrying for as long as it takes).
    pub fn spawn(self: &Arc<Self>, forward: Forward) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(&forward).await })
    }

    async fn deliver(&self, f: &Forward) {
        let mut attempt = 0u32;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&f.topic).partition(f.home).payload(&f.payload);
            if let Some(key) = &f.key {
                record = record.key(key.as_slice());
            }
            if let Some(headers) = &f.headers {
                record = record.headers(headers.clone());
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => {
                    self.metrics.events_forwarded.with_label_values(&[f.kind]).inc();
                    return;
                }
                Err((e, _)) => {
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(error = %e, topic = %f.topic, partition = f.home, retry_in_ms = delay.as_millis() as u64, "forwarding to the home partition failed");
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_partition_is_crc32_of_the_id_text() {
        let id = Uuid::parse_str("0b5c3f0e-5d7a-4b8e-9c1d-2f3a4b5c6d7e").unwrap();
        let crc = crc32fast::hash(b"0b5c3f0e-5d7a-4b8e-9c1d-2f3a4b5c6d7e");
        for n in 1..=12 {
            assert_eq!(home_partition(id, n), (crc % n as u32) as i32);
        }
        // The IEEE CRC-32 librdkafka uses ("123456789" -> 0xCBF43926).
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
