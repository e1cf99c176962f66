//! Kafka side of the benchmarks: fresh topics, pre-loading generated
//! traffic as fast as the broker takes it, and the raw consume rate (a bare
//! consumer that decodes nothing) that is half of the ingest ceiling.

use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Settings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// The topics of one run.
#[derive(Debug, Clone)]
pub struct Topics {
    pub tool_calls: String,
    pub executions: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn fresh(run: &str) -> Self {
        Self {
            tool_calls: format!("bench.{run}.tool-calls"),
            executions: format!("bench.{run}.agent-executions"),
            dead_letter: format!("bench.{run}.dead-letter"),
        }
    }

    pub async fn create(&self, brokers: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        let topics = [
            NewTopic::new(&self.tool_calls, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&self.executions, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&self.dead_letter, 1, TopicReplication::Fixed(1)),
        ];
        for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e:?}"))?;
        }
        Ok(())
    }

    /// Deletes the topics: the local broker keeps every message in memory,
    /// so runs that leave theirs behind add up to gigabytes.
    pub async fn delete(&self, brokers: &str) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        let names = [self.tool_calls.as_str(), self.executions.as_str(), self.dead_letter.as_str()];
        for r in admin.delete_topics(&names, &AdminOptions::new()).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("deleting topic {t}: {e:?}"))?;
        }
        Ok(())
    }

    pub fn of(&self, kind: Kind) -> &str {
        match kind {
            Kind::ToolCall => &self.tool_calls,
            Kind::AgentExecution => &self.executions,
        }
    }
}

/// What was produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Produced {
    pub tool_calls: u64,
    pub executions: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Produced {
    pub fn events(&self) -> u64 {
        self.tool_calls + self.executions
    }
}

/// A producer tuned for bulk loading.
pub fn bulk_producer(brokers: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create()?)
}

/// Sends `m` to `topic`, waiting while the local queue is full.
pub fn send_blocking(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => anyhow::bail!("produce: {e}"),
        }
    }
}

/// Produces `events` valid events of generated traffic (seed `seed`, the
/// given tenants). `occurred_at` is the time of producing (refreshed every
/// 1000 messages) plus the settings' backfill, as for live traffic: a
/// backlog then reaches the worker in roughly `occurred_at` order, as it
/// does in production. Blocking; run it on a blocking thread.
pub fn preload(brokers: &str, topics: &Topics, events: u64, settings: Settings) -> anyhow::Result<Produced> {
    let producer = bulk_producer(brokers)?;
    let mut generator = Generator::new(settings);
    let mut out = Produced::default();
    let started = Instant::now();
    let mut now = chrono::Utc::now();
    while out.events() < events {
        if out.events() % 1000 == 0 {
            now = chrono::Utc::now();
        }
        let m = generator.next_message(now);
        send_blocking(&producer, topics.of(m.kind), &m.key, &m.payload)?;
        out.bytes += m.payload.len() as u64;
        match m.kind {
            Kind::ToolCall => out.tool_calls += 1,
            Kind::AgentExecution => out.executions += 1,
        }
    }
    producer.flush(Duration::from_secs(300))?;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Result of draining the topics with a bare consumer.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub messages: u64,
    pub bytes: u64,
    /// First message received -> last message received.
    pub seconds: f64,
    /// Subscribe -> first message (group join; not part of the rate).
    pub join_seconds: f64,
}

/// Reads `expected` messages from both event topics with a fresh group and
/// a consumer that touches nothing but the payload length. The same fetch
/// queue bound as the worker's default. Blocking.
pub fn raw_consume(brokers: &str, topics: &Topics, expected: u64, fetch_queue_kib: u64, timeout: Duration) -> anyhow::Result<Consumed> {
    let group = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("queued.max.messages.kbytes", fetch_queue_kib.to_string())
        // As the worker: fetch again soon after the queue drained (default 1 s).
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    consumer.subscribe(&[&topics.tool_calls, &topics.executions])?;
    let subscribed = Instant::now();
    let deadline = subscribed + timeout;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while messages < expected {
        anyhow::ensure!(Instant::now() < deadline, "raw consumer read {messages} of {expected} messages before the timeout");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                messages += 1;
                bytes += m.payload_len() as u64;
                last = Instant::now();
            }
            Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
            None => {}
        }
    }
    let first = first.unwrap_or(last);
    Ok(Consumed { messages, bytes, seconds: (last - first).as_secs_f64(), join_seconds: (first - subscribed).as_secs_f64() })
}
