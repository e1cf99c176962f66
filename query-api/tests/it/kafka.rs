//! Real events through Kafka for the tests that need the whole path: a
//! test's own topics, an ingest worker carrying them into the test's
//! database, and a producer of event JSON.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::common::clickhouse_url;

/// The event kinds, by topic.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    ToolCall,
    AgentExecution,
}

/// Kafka topics of one test and an ingest worker carrying them into the
/// test's database.
pub struct Pipeline {
    producer: rdkafka::producer::FutureProducer,
    topics: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<Result<(), agentmeter_ingest::IngestError>>>,
    metrics: std::sync::Arc<agentmeter_ingest::Metrics>,
}

fn brokers() -> String {
    std::env::var("AGENTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

impl Pipeline {
    pub async fn start(what: &str, db_name: &str) -> Pipeline {
        Self::start_run(what, db_name, &Uuid::new_v4().simple().to_string(), None).await
    }

    /// A pipeline whose worker writes batches of at most `max_batch_rows`
    /// rows (small batches make usage arrive a few events at a time, and
    /// repeats of an event cross batch boundaries).
    pub async fn start_batched(what: &str, db_name: &str, max_batch_rows: usize) -> Pipeline {
        Self::start_run(what, db_name, &Uuid::new_v4().simple().to_string(), Some(max_batch_rows)).await
    }

    /// The agent-execution topic of the pipeline `start_run(what, _, run, _)`
    /// (so that API replicas started before it can be told its topic).
    pub fn executions_topic(what: &str, run: &str) -> String {
        format!("test.{what}_{}.agent-executions", &run[..12])
    }

    /// A pipeline whose topics are named after `run`; `max_batch_rows`
    /// overrides the worker's batch size (small batches make usage arrive a
    /// few events at a time).
    pub async fn start_run(what: &str, db_name: &str, run: &str, max_batch_rows: Option<usize>) -> Pipeline {
        Self::start_with(what, db_name, run, max_batch_rows, None).await
    }

    /// A pipeline whose worker also reads an OTLP spans topic (see
    /// [`Pipeline::produce_otlp`]), with `price_table` (TOML) if given.
    pub async fn start_otlp(what: &str, db_name: &str, price_table: Option<&str>) -> Pipeline {
        Self::start_with(what, db_name, &Uuid::new_v4().simple().to_string(), None, Some(price_table)).await
    }

    async fn start_with(what: &str, db_name: &str, run: &str, max_batch_rows: Option<usize>, otlp: Option<Option<&str>>) -> Pipeline {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::config::ClientConfig;
        let brokers = brokers();
        let topic = |kind: &str| format!("test.{what}_{}.{kind}", &run[..12]);
        let mut topics = vec![topic("tool-calls"), topic("agent-executions"), topic("dead-letter")];
        if otlp.is_some() {
            topics.push(topic("otlp-spans"));
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let new_topics: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, 2, TopicReplication::Fixed(1))).collect();
        for r in admin.create_topics(&new_topics, &AdminOptions::new()).await.unwrap() {
            r.expect("topic created");
        }
        let mut config = agentmeter_ingest::Config::defaults();
        config.clickhouse = agentmeter_schema::config::ClickHouseArgs::new(clickhouse_url(), db_name);
        config.kafka_brokers = brokers.clone();
        config.kafka_group = format!("test-{what}-{run}");
        config.tool_calls_topic = topics[0].clone();
        config.agent_executions_topic = topics[1].clone();
        config.dead_letter_topic = topics[2].clone();
        config.kafka_session_timeout_ms = 6000;
        // Without OTLP, no spans topic at all (the default is the shared one).
        config.otlp_spans_topic = String::new();
        if let Some(prices) = otlp {
            config.otlp_spans_topic = topics[3].clone();
            config.otlp_price_table = prices.map(|toml| {
                let path = std::env::temp_dir().join(format!("agentmeter-prices-{what}-{run}.toml"));
                std::fs::write(&path, toml).unwrap();
                path
            });
        }
        if let Some(rows) = max_batch_rows {
            config.max_batch_rows = rows;
        }
        config.flush_interval_ms = 100;
        config.metrics_addr = "127.0.0.1:0".parse().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = agentmeter_ingest::Metrics::new();
        let worker = tokio::spawn(agentmeter_ingest::consumer::run(config, metrics.clone(), async {
            let _ = stopped.await;
        }));
        let producer = ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "5").create().unwrap();
        Pipeline { producer, topics, stop: Some(stop), worker: Some(worker), metrics }
    }

    /// Produces every event (keyed by its `event_id`) and waits for the
    /// broker's acknowledgements.
    pub async fn produce(&self, kind: Kind, events: &[Value]) {
        let records: Vec<(String, Vec<u8>)> =
            events.iter().map(|e| (e["event_id"].as_str().unwrap_or_default().to_owned(), serde_json::to_vec(e).unwrap())).collect();
        self.produce_keyed(kind, &records).await;
    }

    /// Produces `(key, payload)` records as they are (repeats, and payloads
    /// that are not events, too), enqueued in their order (the records of
    /// one key go to one partition), and waits for the broker's
    /// acknowledgements.
    pub async fn produce_keyed(&self, kind: Kind, records: &[(String, Vec<u8>)]) {
        let topic = match kind {
            Kind::ToolCall => &self.topics[0],
            Kind::AgentExecution => &self.topics[1],
        };
        let sends = records.iter().map(|(key, payload)| {
            self.producer.send(rdkafka::producer::FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produced");
        }
    }

    /// Produces OTLP messages, in order, to partition 0 of the spans topic.
    pub async fn produce_otlp(&self, payloads: &[Vec<u8>]) {
        let topic = self.topics.get(3).expect("a pipeline started with start_otlp");
        for payload in payloads {
            self.producer
                .send(rdkafka::producer::FutureRecord::<[u8], [u8]>::to(topic).partition(0).payload(payload), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    }

    /// Waits until `table` holds `n` rows **and** the worker has nothing in
    /// flight. The raw rows of an INSERT are visible before the rollups its
    /// materialized views write; the INSERT is acknowledged only after all
    /// of them, and the worker's in-flight bytes fall to 0 only after the
    /// acknowledgement. So a test that reads rollups after this sees them
    /// complete.
    pub async fn wait_rows(&self, db: &clickhouse::Client, table: &str, n: u64) {
        wait_rows(db, table, n).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.metrics.inflight_bytes.get() != 0 {
            assert!(Instant::now() < deadline, "{table}: the worker still holds rows 60 s after they were stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::config::ClientConfig;
        self.stop.take().unwrap().send(()).unwrap();
        let worker = self.worker.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap().unwrap();
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
    }
}

/// Waits (up to 90 s) until `table` of the database holds `n` rows.
pub async fn wait_rows(db: &clickhouse::Client, table: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have: u64 = db.query(&format!("SELECT count() FROM {table}")).fetch_one().await.unwrap();
        if have >= n {
            assert_eq!(have, n, "{table}: more rows than events");
            return;
        }
        assert!(Instant::now() < deadline, "{table}: {have} of {n} rows after 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tool-call event of `tenant` at `at`; `extra` fields are merged in.
pub fn tool_call(tenant: Uuid, at: chrono::DateTime<chrono::Utc>, tool_name: &str, extra: Value) -> Value {
    let mut e = serde_json::json!({
        "event_id": Uuid::new_v4(),
        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "tenant_id": tenant,
        "tool_name": tool_name,
        "latency_ms": 120.0,
        "success": true,
    });
    if let (Some(o), Value::Object(x)) = (e.as_object_mut(), extra) {
        o.extend(x);
    }
    e
}
