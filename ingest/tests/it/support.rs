//! Shared test plumbing: databases, topics, producing generated traffic,
//! the totals a test expects, the totals ClickHouse holds, and the
//! dead-letter topic's content.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_bench::{Generator, Kind, Message, Settings};
use agentmeter_ingest::Config;
use agentmeter_schema::config::ClickHouseArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn brokers() -> String {
    std::env::var("AGENTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("AGENTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Messages per test: `AGENTMETER_TEST_EVENTS` (default `default`).
pub fn event_count(default: usize) -> usize {
    std::env::var("AGENTMETER_TEST_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A fresh database and topic names for one test.
pub struct Fixture {
    pub name: String,
    /// The broker list of this fixture's topics.
    pub brokers: String,
    pub ch: ClickHouseArgs,
    pub tool_calls_topic: String,
    pub executions_topic: String,
    pub dead_letter_topic: String,
    pub otlp_spans_topic: String,
    pub group: String,
}

impl Fixture {
    /// On the shared broker.
    pub async fn new(what: &str, partitions: i32) -> Self {
        Self::new_on(what, partitions, &brokers()).await
    }

    /// On the broker(s) `brokers`.
    pub async fn new_on(what: &str, partitions: i32, brokers: &str) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("{what}_{}", &id[..12]);
        let ch = ClickHouseArgs::new(clickhouse_url(), format!("agentmeter_test_{name}"));
        agentmeter_schema::migrations::migrate(&ch.server_client(), &ch.database).await.expect("migrate");
        let f = Self {
            tool_calls_topic: format!("test.{name}.tool-calls"),
            executions_topic: format!("test.{name}.agent-executions"),
            dead_letter_topic: format!("test.{name}.dead-letter"),
            otlp_spans_topic: format!("test.{name}.otlp-spans"),
            group: format!("test-{name}"),
            brokers: brokers.to_owned(),
            name,
            ch,
        };
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &f.brokers).create().expect("admin client");
        let topics: Vec<NewTopic> = [&f.tool_calls_topic, &f.executions_topic, &f.dead_letter_topic, &f.otlp_spans_topic]
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in admin.create_topics(&topics, &AdminOptions::new()).await.expect("create topics") {
            result.expect("topic created");
        }
        f
    }

    /// Worker settings for this fixture: small batches so that duplicates
    /// and redeliveries cross batch boundaries, a free metrics port.
    pub fn config(&self) -> Config {
        let mut c = Config::defaults();
        c.clickhouse = self.ch.clone();
        c.kafka_brokers = self.brokers.clone();
        c.kafka_group = self.group.clone();
        c.tool_calls_topic = self.tool_calls_topic.clone();
        c.agent_executions_topic = self.executions_topic.clone();
        c.dead_letter_topic = self.dead_letter_topic.clone();
        c.otlp_spans_topic = self.otlp_spans_topic.clone();
        c.kafka_session_timeout_ms = 6000;
        c.max_batch_rows = 2000;
        c.flush_interval_ms = 200;
        c.retry_max_ms = 1000;
        c.shutdown_timeout_ms = 10_000;
        c.metrics_addr = "127.0.0.1:0".parse().unwrap();
        c
    }

    /// Command-line arguments for the binary equivalent to [`Self::config`].
    pub fn args(&self) -> Vec<String> {
        let c = self.config();
        [
            ("--clickhouse-url", c.clickhouse.url),
            ("--clickhouse-database", c.clickhouse.database),
            ("--kafka-brokers", c.kafka_brokers),
            ("--kafka-group", c.kafka_group),
            ("--tool-calls-topic", c.tool_calls_topic),
            ("--agent-executions-topic", c.agent_executions_topic),
            ("--dead-letter-topic", c.dead_letter_topic),
            ("--otlp-spans-topic", c.otlp_spans_topic),
            ("--kafka-session-timeout-ms", c.kafka_session_timeout_ms.to_string()),
            ("--max-batch-rows", c.max_batch_rows.to_string()),
            ("--flush-interval-ms", c.flush_interval_ms.to_string()),
            ("--retry-max-ms", c.retry_max_ms.to_string()),
            ("--shutdown-timeout-ms", c.shutdown_timeout_ms.to_string()),
            ("--metrics-addr", c.metrics_addr.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    pub async fn drop_database(&self) {
        self.ch.server_client().query(&format!("DROP DATABASE IF EXISTS `{}`", self.ch.database)).execute().await.unwrap();
    }
}

/// Generated traffic: 2 % duplicates, 1 % bad messages, both kinds.
pub fn traffic(seed: u64, count: usize) -> Vec<Message> {
    let mut g = Generator::new(Settings {
        seed,
        duplicate_ratio: 0.02,
        bad_ratio: 0.01,
        backfill_hours: 2.0,
        tenants: vec![agentmeter_bench::TENANT_A, agentmeter_bench::TENANT_B, Uuid::new_v4()],
    });
    let now = chrono::Utc::now();
    (0..count).map(|_| g.next_message(now)).collect()
}

/// Where a produced message landed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A producer on the shared broker.
pub fn producer() -> FutureProducer {
    producer_on(&brokers())
}

pub fn producer_on(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// A valid tool-call message of demo tenant A, occurring now.
pub fn tool_call(event_id: Uuid) -> Vec<u8> {
    serde_json::json!({
        "event_id": event_id, "occurred_at": chrono::Utc::now().timestamp_millis(),
        "tenant_id": agentmeter_bench::TENANT_A, "tool_name": "search", "latency_ms": 12.5, "success": true,
    })
    .to_string()
    .into_bytes()
}

/// Produces `messages` (keyed by event id) and returns where each landed.
pub async fn produce(f: &Fixture, producer: &FutureProducer, messages: &[Message]) -> Vec<Position> {
    let sends = messages.iter().map(|m| {
        let topic = match m.kind {
            Kind::ToolCall => &f.tool_calls_topic,
            Kind::AgentExecution => &f.executions_topic,
        };
        let record = FutureRecord::to(topic).key(&m.key).payload(&m.payload);
        async move {
            let delivery = producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e).expect("produced");
            Position { topic: topic.clone(), partition: delivery.partition, offset: delivery.offset }
        }
    });
    futures::future::join_all(sends).await
}

/// Produces `messages` in chunks over about `over`, in the background.
pub fn produce_over(f: &Fixture, messages: Vec<Message>, over: Duration) -> tokio::task::JoinHandle<Vec<Position>> {
    let (tc, ae) = (f.tool_calls_topic.clone(), f.executions_topic.clone());
    let shadow = Fixture {
        name: f.name.clone(),
        ch: f.ch.clone(),
        tool_calls_topic: tc,
        executions_topic: ae,
        dead_letter_topic: f.dead_letter_topic.clone(),
        otlp_spans_topic: f.otlp_spans_topic.clone(),
        group: f.group.clone(),
        brokers: f.brokers.clone(),
    };
    tokio::spawn(async move {
        let producer = producer_on(&shadow.brokers);
        let chunks = 40;
        let per = messages.len().div_ceil(chunks).max(1);
        let pause = over / chunks as u32;
        let mut positions = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(per) {
            positions.extend(produce(&shadow, &producer, chunk).await);
            tokio::time::sleep(pause).await;
        }
        positions
    })
}

/// Totals of one tenant set, computed from the generator's records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub call_errors: u64,
    pub executions: u64,
    pub failed_executions: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Decimal,
    pub messages: u64,
}

/// What the worker must end with: totals over unique valid events, and the
/// bad messages with their reasons.
pub struct Expectation {
    pub totals: Totals,
    pub bad: HashMap<Position, (&'static str, Vec<u8>)>,
}

pub fn expect(messages: &[Message], positions: &[Position]) -> Expectation {
    let mut seen = HashSet::new();
    let mut t = Totals::default();
    let mut bad = HashMap::new();
    for (m, p) in messages.iter().zip(positions) {
        if let Some(reason) = m.bad_reason {
            bad.insert(p.clone(), (reason, m.payload.clone()));
        }
        let Some(e) = &m.expected else { continue };
        if !seen.insert(e.event_id) {
            continue;
        }
        match m.kind {
            Kind::ToolCall => {
                t.calls += 1;
                t.call_errors += u64::from(!e.success);
            }
            Kind::AgentExecution => {
                t.executions += 1;
                t.failed_executions += u64::from(!e.success);
                t.input_tokens += e.input_tokens;
                t.output_tokens += e.output_tokens;
                t.cost_usd += e.cost_usd;
                t.messages += e.messages;
            }
        }
    }
    assert!(messages.iter().any(|m| m.duplicate), "the traffic has duplicates");
    Expectation { totals: t, bad }
}

/// Totals in the raw tables.
pub async fn raw_totals(ch: &ClickHouseArgs) -> Totals {
    let db = ch.client();
    let (calls, call_errors): (u64, u64) = db.query("SELECT count(), countIf(NOT success) FROM tool_calls").fetch_one().await.unwrap();
    let (executions, failed_executions, input_tokens, output_tokens, cost, messages): (u64, u64, u64, u64, String, u64) = db
        .query(
            "SELECT count(), countIf(status = 'failed'), sum(input_tokens), sum(output_tokens), \
             toString(sum(cost_usd)), sum(messages_count) FROM agent_executions",
        )
        .fetch_one()
        .await
        .unwrap();
    Totals { calls, call_errors, executions, failed_executions, input_tokens, output_tokens, cost_usd: cost.parse().unwrap(), messages }
}

/// Totals in the rollups.
pub async fn rollup_totals(ch: &ClickHouseArgs) -> Totals {
    let db = ch.client();
    let (calls, call_errors): (u64, u64) = db.query("SELECT sum(calls), sum(errors) FROM tool_calls_1m").fetch_one().await.unwrap();
    let (executions, failed_executions, input_tokens, output_tokens, cost, messages): (u64, u64, u64, u64, String, u64) = db
        .query(
            "SELECT sum(executions), sumIf(executions, status = 'failed'), sum(input_tokens), sum(output_tokens), \
             toString(sum(cost_usd)), sum(messages) FROM agent_executions_1m",
        )
        .fetch_one()
        .await
        .unwrap();
    Totals { calls, call_errors, executions, failed_executions, input_tokens, output_tokens, cost_usd: cost.parse().unwrap(), messages }
}

/// Distinct event ids in the raw tables equal their row counts.
pub async fn assert_no_duplicate_rows(ch: &ClickHouseArgs) {
    let db = ch.client();
    for table in ["tool_calls", "agent_executions"] {
        let (rows, ids): (u64, u64) = db.query(&format!("SELECT count(), uniqExact(event_id) FROM {table}")).fetch_one().await.unwrap();
        assert_eq!(rows, ids, "{table} holds a duplicate event");
    }
}

/// Polls the raw tables until they hold `expected` rows (or the deadline
/// passes), then returns the totals found.
pub async fn wait_for_rows(ch: &ClickHouseArgs, expected: &Totals, within: Duration) -> Totals {
    let deadline = Instant::now() + within;
    loop {
        let t = raw_totals(ch).await;
        if (t.calls >= expected.calls && t.executions >= expected.executions) || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the fixture's consumer group has committed, on every
/// partition one of `positions` is on, an offset past the last of them, or
/// panics after `within`. The worker stores a message's offset only once
/// what it became is written and acknowledged (rows inserted or found
/// stored, dead letter or forwarded copy delivered), so afterwards every
/// one of these messages has been handled: every bad one is in the
/// dead-letter topic, every duplicate was looked up and counted. Waiting
/// for the raw tables' totals is not enough for that: they are complete as
/// soon as the last unique event is in, while duplicates and bad messages
/// behind it may not have been read yet.
///
/// The ends are the produced positions, not the broker's high watermarks
/// (the local broker's can lag behind the last message of a batch).
pub async fn wait_until_committed(f: &Fixture, positions: &[Position], within: Duration) {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for p in positions {
        let end = ends.entry((p.topic.clone(), p.partition)).or_insert(0);
        *end = (*end).max(p.offset + 1);
    }
    let group: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &f.brokers).set("group.id", &f.group).create().expect("consumer");
    let (group, ends) = (Arc::new(group), Arc::new(ends));
    let deadline = Instant::now() + within;
    loop {
        let (g, ends) = (Arc::clone(&group), Arc::clone(&ends));
        // Partitions not committed to their end, as `topic/partition committed/end`.
        let behind = tokio::task::spawn_blocking(move || -> Result<Vec<String>, rdkafka::error::KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in ends.keys() {
                tpl.add_partition(topic, *partition);
            }
            let committed = g.committed_offsets(tpl, Duration::from_secs(10))?;
            let mut behind = Vec::new();
            for ((topic, partition), end) in ends.iter() {
                let at = match committed.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => n,
                    _ => 0,
                };
                if at < *end {
                    behind.push(format!("{topic}/{partition} {at}/{end}"));
                }
            }
            Ok(behind)
        })
        .await
        .expect("committed offsets read");
        match behind {
            Ok(behind) if behind.is_empty() => return,
            other => assert!(Instant::now() < deadline, "the workers never handled every message: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After [`wait_until_committed`] on the messages the test produced, waits
/// until the workers have read every copy they forwarded to a home
/// partition as well: messages read from the JSON topics reach `produced`
/// (the test's own messages there) plus the copies forwarded (counted once
/// Kafka acknowledged them, which is before their source's offset is
/// committed, so the count is final by then). Panics after `within`.
pub async fn wait_for_forwarded_copies(workers: &[&agentmeter_ingest::Metrics], produced: u64, within: Duration) {
    let kinds = ["tool_call", "agent_execution"];
    let sum = |c: fn(&agentmeter_ingest::Metrics) -> &prometheus::IntCounterVec| {
        workers.iter().flat_map(|m| kinds.map(|k| c(m).with_label_values(&[k]).get())).sum::<u64>()
    };
    let deadline = Instant::now() + within;
    loop {
        let (read, forwarded) = (sum(|m| &m.events_consumed), sum(|m| &m.events_forwarded));
        if read >= produced + forwarded {
            return;
        }
        assert!(Instant::now() < deadline, "{read} messages read of {produced} produced and {forwarded} forwarded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dead-lettered message as read back.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: String,
    pub source: Position,
    pub payload: Vec<u8>,
    /// Every header (`agentmeter-field`, `agentmeter-error`, ...).
    pub headers: HashMap<String, String>,
}

/// Reads the dead-letter topic until every position in `expected` has been
/// seen (or the deadline passes).
pub async fn read_dead_letters(f: &Fixture, expected: &HashSet<Position>, within: Duration) -> Vec<DeadLetter> {
    read_dead_letters_until(f, within, |letters| expected.iter().all(|p| letters.iter().any(|d| &d.source == p))).await
}

/// Reads the dead-letter topic until `done` says the letters read are
/// enough (or the deadline passes).
pub async fn read_dead_letters_until(f: &Fixture, within: Duration, done: impl Fn(&[DeadLetter]) -> bool) -> Vec<DeadLetter> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &f.brokers)
        .set("group.id", format!("{}-dlq-reader", f.group))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&f.dead_letter_topic]).unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else { continue };
        let mut h = HashMap::new();
        if let Some(headers) = m.headers() {
            for header in headers.iter() {
                h.insert(header.key.to_string(), String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned());
            }
        }
        let source = Position {
            topic: h.get("agentmeter-source-topic").cloned().unwrap_or_default(),
            partition: h.get("agentmeter-source-partition").and_then(|v| v.parse().ok()).unwrap_or(-1),
            offset: h.get("agentmeter-source-offset").and_then(|v| v.parse().ok()).unwrap_or(-1),
        };
        out.push(DeadLetter {
            reason: h.get("agentmeter-reason").cloned().unwrap_or_default(),
            source,
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: h,
        });
    }
    out
}

/// The rows `found` while polling, the raw tables and the rollups hold
/// exactly the expected totals, and no event id is stored twice.
pub async fn assert_exact(f: &Fixture, expected: &Expectation, found: Totals) {
    assert_eq!(found, expected.totals, "raw tables (as polled)");
    assert_eq!(raw_totals(&f.ch).await, expected.totals, "raw tables");
    assert_eq!(rollup_totals(&f.ch).await, expected.totals, "rollups");
    assert_no_duplicate_rows(&f.ch).await;
}

/// Reads the dead letters until every bad message is there and checks them
/// ([`assert_dead_letters`]; a letter repeated after a crash is allowed).
pub async fn assert_dead_lettered(f: &Fixture, expected: &Expectation) {
    let bad: HashSet<Position> = expected.bad.keys().cloned().collect();
    assert_dead_letters(&read_dead_letters(f, &bad, Duration::from_secs(60)).await, &expected.bad);
}

/// Checks the dead letters against the bad messages: each one there, with
/// its reason and original bytes; nothing else there.
pub fn assert_dead_letters(found: &[DeadLetter], expected: &HashMap<Position, (&'static str, Vec<u8>)>) {
    let mut seen = HashSet::new();
    for d in found {
        let (reason, payload) = expected.get(&d.source).unwrap_or_else(|| panic!("unexpected dead letter {:?}", d.source));
        assert_eq!(&d.reason, reason, "reason of {:?}", d.source);
        assert_eq!(&d.payload, payload, "payload of {:?}", d.source);
        seen.insert(d.source.clone());
    }
    assert_eq!(seen.len(), expected.len(), "every bad message is dead-lettered");
    let reasons: HashSet<&str> = expected.values().map(|(r, _)| *r).collect();
    assert_eq!(reasons.len(), agentmeter_bench::BAD_REASONS.len(), "every kind of bad message was tested");
}

/// Runs the worker in-process; the returned sender stops it.
pub fn spawn_worker(config: Config) -> (tokio::sync::oneshot::Sender<()>, Arc<agentmeter_ingest::Metrics>, tokio::task::JoinHandle<()>) {
    let metrics = agentmeter_ingest::Metrics::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let m = Arc::clone(&metrics);
    let handle = tokio::spawn(async move {
        agentmeter_ingest::run_with_metrics(config, m, async {
            let _ = stopped.await;
        })
        .await
        .expect("worker ran");
    });
    (stop, metrics, handle)
}

/// Every rollup table against the raw tables it is fed from: for each
/// tool-call rollup (`tool_calls_1m`, `tool_calls_1h`, `tool_calls_tenant_1m`,
/// `tool_calls_tenant_1h`, `tool_calls_tenant_kind_1h`,
/// `tool_calls_error_type_1h`) its calls, errors,
/// suggestions and runtime counts; for `tool_call_queries_1h` its tool and
/// proxy calls and distinct queries; for `agent_executions_1m` the totals
/// of [`rollup_totals`], for `agent_executions_1h` (migration 0016) and
/// `agent_executions_executor_1h` (0019) their counts, tokens, cost and
/// messages. Call it after the raw tables were
/// found equal to the expected totals.
pub async fn assert_every_rollup_matches_raw(ch: &ClickHouseArgs) {
    let db = ch.client();
    type Figures = (u64, u64, u64, u64);
    let raw: Figures = db
        .query("SELECT count(), countIf(NOT success), sum(suggestions_count), count(runtime_ms) FROM tool_calls")
        .fetch_one()
        .await
        .unwrap();
    for table in [
        "tool_calls_1m",
        "tool_calls_1h",
        "tool_calls_tenant_1m",
        "tool_calls_tenant_1h",
        "tool_calls_tenant_kind_1h",
        "tool_calls_error_type_1h",
    ] {
        let rollup: Figures = db
            .query(&format!("SELECT sum(calls), sum(errors), sum(suggestions), sum(runtime_count) FROM {table}"))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(rollup, raw, "{table}: calls, errors, suggestions, runtime count");
    }
    let nil = "toUUID('00000000-0000-0000-0000-000000000000')";
    let raw: (u64, u64, u64) = db
        .query(&format!(
            "SELECT countIf(call_kind = 'tool' AND query_id != {nil}), countIf(call_kind != 'tool' AND query_id != {nil}), \
             uniqExactIf(query_id, query_id != {nil}) FROM tool_calls"
        ))
        .fetch_one()
        .await
        .unwrap();
    let rollup: (u64, u64, u64) =
        db.query("SELECT sum(tool_calls), sum(proxy_calls), uniqExact(query_id) FROM tool_call_queries_1h").fetch_one().await.unwrap();
    assert_eq!(rollup, raw, "tool_call_queries_1h: tool calls, proxy calls, distinct queries");
    assert_eq!(rollup_totals(ch).await, raw_totals(ch).await, "agent_executions_1m and tool_calls_1m");
    type Executions = (u64, u64, u64, u64, String, u64);
    let raw: Executions = db
        .query(
            "SELECT count(), countIf(NOT cost_known), sum(input_tokens), sum(output_tokens), toString(sum(cost_usd)), \
             sum(messages_count) FROM agent_executions",
        )
        .fetch_one()
        .await
        .unwrap();
    for table in ["agent_executions_1h", "agent_executions_executor_1h"] {
        let rollup: Executions = db
            .query(&format!(
                "SELECT sum(executions), sum(unpriced_executions), sum(input_tokens), sum(output_tokens), toString(sum(cost_usd)), \
                 sum(messages) FROM {table}"
            ))
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(rollup, raw, "{table}: executions, unpriced, tokens, cost, messages");
    }
}

/// Reads `value` every `quiet` until two reads in a row agree, and returns
/// that value; panics if it still moves after `within`. For what settles
/// after a cut (messages already fetched, inserts already sent) at a pace
/// that depends on the machine's load.
pub async fn steady<T: PartialEq + std::fmt::Debug>(value: impl Fn() -> T, quiet: Duration, within: Duration) -> T {
    let deadline = Instant::now() + within;
    let mut last = value();
    loop {
        tokio::time::sleep(quiet).await;
        let now = value();
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "still moving after {within:?}: {last:?} then {now:?}");
        last = now;
    }
}

/// Waits until the workers together hold `partitions` partitions, each
/// at least one (the group has settled), or panics after `within`.
pub async fn wait_for_assignment(workers: &[&agentmeter_ingest::Metrics], partitions: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let held: Vec<i64> = workers.iter().map(|m| m.assigned_partitions.get()).collect();
        if held.iter().sum::<i64>() == partitions && held.iter().all(|n| *n > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "partitions never settled over the workers: {held:?}, expected {partitions} in all");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy that can drop every connection and refuse new ones while
/// down (a network partition between the worker and one service).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    target: Arc<std::sync::Mutex<String>>,
    /// Open connections closed by going down.
    pub cut: Arc<std::sync::atomic::AtomicU64>,
    /// Connections refused while down.
    pub refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// A proxy to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let proxy = Self::start_unbound().await;
        proxy.set_target(target);
        proxy
    }

    /// A proxy whose target is set later ([`Self::set_target`]); until
    /// then connections are closed at once.
    pub async fn start_unbound() -> Self {
        use tokio::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = tokio::sync::watch::channel(true);
        let up_rx = up.subscribe();
        let target = Arc::new(std::sync::Mutex::new(String::new()));
        let to = Arc::clone(&target);
        let (cut, refused) = (Arc::<std::sync::atomic::AtomicU64>::default(), Arc::<std::sync::atomic::AtomicU64>::default());
        let (cuts, refusals) = (Arc::clone(&cut), Arc::clone(&refused));
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !*up_rx.borrow() {
                    refusals.fetch_add(1, SeqCst);
                    drop(inbound);
                    continue;
                }
                let target = to.lock().unwrap().clone();
                let mut up_rx = up_rx.clone();
                let cuts = Arc::clone(&cuts);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up_rx.wait_for(|up| !*up) => {
                            cuts.fetch_add(1, SeqCst);
                        }
                    }
                });
            }
        });
        Self { addr, up, target, cut, refused }
    }

    pub fn set_target(&self, target: String) {
        *self.target.lock().unwrap() = target;
    }

    /// Up: connections pass. Down: open ones are closed, new ones refused.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
