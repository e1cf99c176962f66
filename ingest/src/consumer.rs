//! The consumer loop: reads both event topics, fills one batch per table,
//! hands full or due batches to the [`Writer`], and stores a batch's
//! offsets only once the writer has acknowledged every row of it.
//!
//! * Up to [`BATCHES_IN_FLIGHT`] batches per table are handed to the writer:
//!   the next batch's duplicate look-up runs while the previous batch is
//!   inserted, and its insert waits for the previous batch to end, then
//!   drops the rows that batch landed (its look-up could not see them).
//!   Inserts, and the stores of offsets, therefore stay one at a time and in
//!   order; reading continues into the open batch meanwhile.
//! * A batch is due when full, when its oldest message is
//!   `--flush-interval-ms` old, or at the end of a backlog: the batch after
//!   a full one, once no message has come for [`IDLE`] (`Table::after_full`).
//! * Memory is bounded: when the bytes held in batches (open and being
//!   written) reach `max_inflight_bytes`, the loop stops taking messages and
//!   librdkafka's bounded prefetch queue stops fetching. A writer that
//!   catches up within [`HOLD_BEFORE_PAUSE`] finds the queue full and reading
//!   continues without a gap. Held longer (ClickHouse slow or away), every
//!   assigned partition is paused and the loop polls again, so rebalances
//!   are served; they are resumed below three quarters of the bound. Pausing
//!   straight away would cost a re-fetch (up to a second on librdkafka's
//!   broker thread) each time the writer is the bottleneck, the normal case
//!   at full throughput.
//! * Revocation (rebalance or shutdown): [`IngestContext::pre_rebalance`]
//!   waits for the batches being written that cover the revoked partitions,
//!   commits the stored offsets synchronously, and the loop then forgets
//!   the unwritten rows of those partitions: their next owner reads them
//!   again from the committed offset, and the duplicate look-up makes a
//!   second write of anything that did land harmless.
//! * Rows ClickHouse refused come back from the writer with their position;
//!   the loop's batch task reads each message again and dead-letters it
//!   before the batch's offsets are stored (the writer never touches Kafka).
//! * A valid message read off its event's home partition is not inserted
//!   here but forwarded there ([`crate::routing`]); its offset moves like a
//!   dead letter's, once Kafka acknowledged the copy.
//! * Offsets are committed after each acknowledged batch (asynchronously),
//!   on revocation and on shutdown (synchronously).
//! * The OTLP topic (when configured) has its own batch, which holds no
//!   rows: each mapped span is produced, as its JSON event, to its home
//!   partition of the JSON topic of its kind ([`crate::otlp`]), and the OTLP
//!   message's offset moves once Kafka acknowledged all of them and its dead
//!   letters. The spans are inserted by the home partitions' owners.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use futures::StreamExt;
use prometheus::IntCounter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::batch::{Batch, Encoded, IngestRow, Limits, Source};
use crate::config::{Config, MAX_BATCH_ROWS_LIMIT};
use crate::dead_letter::{DeadLetters, Rejected};
use crate::errors::{Backoff, IngestError};
use crate::metrics::{Metrics, REASON_CLICKHOUSE_REJECTED};
use crate::otlp::{Destinations, NoRow, OtlpInput};
use crate::routing::{home_partition, Forward, Forwarder, PartitionCounts};
use crate::writer::{Landed, Refused, Writer};

type Partition = (String, i32);

/// Batches of one table handed to the writer at once: one being inserted,
/// the next one looking up its duplicates meanwhile.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// How long without a message (while the loop is taking them) before the
/// worker counts as idle: the end of a backlog (`Table::after_full`).
/// While a backlog is read, librdkafka's prefetch queue stays full and
/// messages come without such gaps.
pub const IDLE: Duration = Duration::from_millis(100);

/// How long the loop stops taking messages at the in-flight bound before it
/// pauses the partitions (and polls again to serve rebalances).
pub const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(2);

/// State shared between the loop, the batch-writing tasks and the
/// rebalance callbacks (which run inside `recv`).
struct Shared {
    /// Partitions covered by each batch being written, by batch id.
    writing: Mutex<HashMap<u64, Vec<Partition>>>,
    written: Condvar,
    /// Partitions revoked since the loop last looked.
    revoked: Mutex<Vec<Partition>>,
    /// Whether consumption is paused (new assignments start paused too).
    paused: AtomicBool,
    /// Set on every assignment: the loop reads the partition counts again.
    assigned: AtomicBool,
    revoke_timeout: Duration,
}

impl Shared {
    fn begin(&self, id: u64, partitions: Vec<Partition>) {
        self.writing.lock().expect("lock").insert(id, partitions);
    }

    fn finish(&self, id: u64) {
        self.writing.lock().expect("lock").remove(&id);
        self.written.notify_all();
    }

    fn covers(writing: &HashMap<u64, Vec<Partition>>, partitions: &[Partition]) -> bool {
        writing.values().any(|ps| ps.iter().any(|p| partitions.contains(p)))
    }

    /// Blocks until no batch being written covers `partitions`, or the
    /// revoke timeout passes; returns whether they all finished.
    fn wait_for(&self, partitions: &[Partition]) -> bool {
        if !Self::covers(&self.writing.lock().expect("lock"), partitions) {
            return true;
        }
        let wait = || {
            let deadline = Instant::now() + self.revoke_timeout;
            let mut writing = self.writing.lock().expect("lock");
            loop {
                if !Self::covers(&writing, partitions) {
                    return true;
                }
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                writing = self.written.wait_timeout(writing, deadline - now).expect("lock").0;
            }
        };
        // The callback runs on a runtime thread: let the runtime move its
        // other tasks (the writers we wait for) elsewhere meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// The consumer's callbacks.
pub struct IngestContext {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<Partition> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            if !self.shared.wait_for(&partitions) {
                tracing::warn!(?partitions, "revoked partitions still have a batch being written; giving them up");
            }
            commit(consumer, CommitMode::Sync);
            tracing::info!(?partitions, "partitions revoked");
            self.shared.revoked.lock().expect("lock").extend(partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<Partition> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                tracing::info!(?partitions, "partitions assigned");
                self.shared.assigned.store(true, Ordering::SeqCst);
                if self.shared.paused.load(Ordering::SeqCst) {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                    }
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
        match consumer.assignment() {
            Ok(tpl) => self.metrics.assigned_partitions.set(tpl.count() as i64),
            Err(e) => tracing::warn!(error = %e, "cannot read the assignment"),
        }
    }
}

/// The event topics' partition counts, read without blocking the runtime;
/// `None` while one is unknown.
async fn read_partition_counts(consumer: &Arc<StreamConsumer<IngestContext>>, topics: &[String; 2]) -> Option<PartitionCounts> {
    let (consumer, topics) = (Arc::clone(consumer), topics.clone());
    tokio::task::spawn_blocking(move || PartitionCounts::fetch(consumer.as_ref(), &[&topics[0], &topics[1]])).await.ok().flatten()
}

/// The end of every batch: waits until Kafka acknowledged each of its
/// deliveries (dead letters, forwarded copies), then stores the offset after
/// the highest message read per partition, so a message is never committed
/// before what it produced is safe.
async fn acknowledge_then_store_offsets(
    consumer: &StreamConsumer<IngestContext>,
    topic: &str,
    deliveries: Vec<(i32, usize, JoinHandle<()>)>,
    offsets: &std::collections::BTreeMap<i32, i64>,
) {
    for (_, _, delivery) in deliveries {
        let _ = delivery.await;
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::info!(error = %e, topic = %topic, "offsets not stored (partition no longer assigned)");
    }
}

/// Commits the stored offsets; "nothing to commit" is not an error.
fn commit<C: Consumer<X>, X: ConsumerContext>(consumer: &C, mode: CommitMode) {
    match consumer.commit_consumer_state(mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "offset commit failed"),
    }
}

/// Dead-letters the rows ClickHouse refused (reason `clickhouse_rejected`),
/// each with its message read again from `topic` by position. Returns once
/// Kafka acknowledged every one, before the batch's offsets are stored.
async fn dead_letter_refused<R: IngestRow>(dead_letters: &DeadLetters, topic: &str, refused: &[Refused]) {
    for r in refused {
        let original = dead_letters.read_original(topic, r.partition, r.offset).await;
        dead_letters
            .deliver(&Rejected {
                kind: R::EVENT_KIND,
                reason: REASON_CLICKHOUSE_REJECTED,
                field: String::new(),
                error: r.reason.clone(),
                source_topic: topic.to_owned(),
                partition: r.partition,
                offset: r.offset,
                key: original.key,
                payload: original.payload,
            })
            .await;
    }
}

/// A batch being written.
struct Writing {
    id: u64,
    bytes: usize,
    handle: JoinHandle<()>,
}

/// One topic and the table it feeds.
struct Table<R> {
    topic: String,
    /// `agentmeter_ingest_events_consumed_total` of the topic's kind,
    /// resolved once: a label look-up per message cost 1-2 % of the
    /// worker's CPU.
    consumed: IntCounter,
    open: Batch<R>,
    /// Batches handed to the writer, oldest first.
    writing: VecDeque<Writing>,
    /// What the last batch handed to the writer landed, once it is over:
    /// the next batch drops those rows before its insert.
    landed: Option<oneshot::Receiver<Landed>>,
    /// Whether the last batch handed to the writer went because it was
    /// full: the worker is reading a backlog. When the backlog is drained
    /// (the loop idle), its last, partial batch is written at once instead
    /// of after `--flush-interval-ms`. Steady traffic that the worker keeps
    /// up with flushes by age, so this never fires for it: writing early
    /// whenever the loop was idle was measured to double the inserts of
    /// steady traffic (docs/ingest.md).
    after_full: bool,
}

impl<R> Table<R> {
    fn new(topic: &str, consumed: IntCounter) -> Self {
        Self { topic: topic.to_owned(), consumed, open: Batch::default(), writing: VecDeque::new(), landed: None, after_full: false }
    }

    fn held_bytes(&self) -> usize {
        self.open.bytes + self.writing.iter().map(|w| w.bytes).sum::<usize>()
    }
}

/// Whether an open batch of `rows` rows may take one more. A table whose
/// [`BATCHES_IN_FLIGHT`] batches are all being written keeps filling its
/// open batch past `--max-batch-rows` (bigger inserts while ClickHouse is
/// slow), and only the in-flight byte bound would stop it; but a batch must
/// stay one INSERT block ([`MAX_BATCH_ROWS_LIMIT`] rows): a batch of two
/// blocks can land half, and if ClickHouse then refuses a row of the
/// second block, the halves the writer retries to isolate that row carry
/// new deduplication tokens and would store the first block's rows again.
/// Small rows reach a million before a large byte bound does.
fn fits_one_block(rows: usize) -> bool {
    rows < MAX_BATCH_ROWS_LIMIT
}

/// Resolves when the oldest batch being written is done, and removes it;
/// never resolves while nothing is being written (for `select!`).
async fn written(slot: &mut VecDeque<Writing>) {
    match slot.front_mut() {
        Some(w) => {
            if let Err(e) = (&mut w.handle).await {
                tracing::error!(error = %e, "batch writer task failed");
            }
            slot.pop_front();
        }
        None => std::future::pending().await,
    }
}

/// Waits for every batch being written.
async fn finish_writing(slot: &mut VecDeque<Writing>) {
    while !slot.is_empty() {
        written(slot).await;
    }
}

struct Worker {
    consumer: Arc<StreamConsumer<IngestContext>>,
    shared: Arc<Shared>,
    writer: Arc<Writer>,
    dead_letters: Arc<DeadLetters>,
    forwarder: Arc<Forwarder>,
    /// The two event topics, and their partition counts (for routing).
    topics: [String; 2],
    partitions: PartitionCounts,
    metrics: Arc<Metrics>,
    limits: Limits,
    max_inflight_bytes: usize,
    next_batch_id: u64,
    /// Since when the in-flight bound has held consumption back.
    held_since: Option<Instant>,
    /// Whether the partitions are paused at the bound.
    paused: bool,
    /// When the last message arrived (read from the clock then, not the
    /// loop's `now`, which is older by the wait for it), or the loop last
    /// stopped waiting while held back or paused at the in-flight bound:
    /// see [`IDLE`].
    last_message_at: Instant,
    otlp: Arc<OtlpInput>,
    /// Days a navigator query's text is kept (`--query-text-retention-days`).
    query_text_retention_days: u32,
    /// Scratch space of the row encoder (one allocation, reused).
    encode_buffer: Vec<u8>,
}

/// Runs the worker until `shutdown` resolves, then writes what it holds,
/// commits and returns (within `shutdown_timeout_ms`).
pub async fn run(config: Config, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) -> Result<(), IngestError> {
    config.validate()?;
    let shared = Arc::new(Shared {
        writing: Mutex::new(HashMap::new()),
        written: Condvar::new(),
        revoked: Mutex::new(Vec::new()),
        paused: AtomicBool::new(false),
        assigned: AtomicBool::new(false),
        revoke_timeout: Duration::from_millis(config.revoke_timeout_ms),
    });
    crate::topics::ensure_topics(&config).await;
    let session_ms = config.kafka_session_timeout_ms;
    let consumer: StreamConsumer<IngestContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("group.id", &config.kafka_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", &config.kafka_assignment_strategy)
        .set("session.timeout.ms", session_ms.to_string())
        .set("heartbeat.interval.ms", (session_ms / 3).max(100).to_string())
        .set("queued.max.messages.kbytes", config.kafka_fetch_queue_kib.to_string())
        // When the fetch queue is full, librdkafka waits this long before it
        // fetches that partition again (default 1 s): with a queue that holds
        // about a second of work, the default caps consumption at one queue
        // per second. Parsing drains the queue in milliseconds, so look again soon.
        .set("fetch.queue.backoff.ms", "10")
        // A topic created after the worker subscribed is noticed within 10 s.
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create_with_context(IngestContext { shared: Arc::clone(&shared), metrics: Arc::clone(&metrics) })?;
    let consumer = Arc::new(consumer);
    let mut subscribed = vec![config.tool_calls_topic.clone(), config.agent_executions_topic.clone()];
    if !config.otlp_spans_topic.is_empty() {
        subscribed.push(config.otlp_spans_topic.clone());
    }
    consumer.subscribe(&subscribed.iter().map(String::as_str).collect::<Vec<_>>())?;
    let otlp = Arc::new(OtlpInput::new(&config.otlp_spans_topic, config.otlp_encoding, config.otlp_mapping()?, &metrics.registry));

    let backoff = Backoff::new(config.retry_initial_ms, config.retry_max_ms);
    let dead_letters = Arc::new(DeadLetters::new(&config.kafka_brokers, &config.dead_letter_topic, backoff, Arc::clone(&metrics))?);
    let forwarder = Arc::new(Forwarder::new(&config.kafka_brokers, backoff, Arc::clone(&metrics))?);
    let topics = [config.tool_calls_topic.clone(), config.agent_executions_topic.clone()];
    // Nothing is read before the partition counts are known: without them
    // no message can be routed to its home partition.
    tokio::pin!(shutdown);
    let partitions = loop {
        if let Some(counts) = read_partition_counts(&consumer, &topics).await {
            break counts;
        }
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("stopped before the topics' partition counts were known; nothing was read");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let writer = Arc::new(Writer::new(
        config.clickhouse.client(),
        backoff,
        Duration::from_millis(config.clickhouse_timeout_ms),
        Arc::clone(&metrics),
    ));
    let mut worker = Worker {
        consumer,
        shared,
        writer,
        dead_letters,
        forwarder,
        topics,
        partitions,
        metrics,
        limits: Limits { max_rows: config.max_batch_rows, max_bytes: config.max_batch_bytes, max_age: config.flush_interval() },
        max_inflight_bytes: config.max_inflight_bytes,
        next_batch_id: 0,
        held_since: None,
        paused: false,
        last_message_at: Instant::now(),
        otlp,
        query_text_retention_days: config.query_text_retention_days,
        encode_buffer: Vec::with_capacity(4096),
    };
    let consumed = |kind: &str| worker.metrics.events_consumed.with_label_values(&[kind]);
    let mut tool_calls = Table::<Encoded<ToolCallRow>>::new(&config.tool_calls_topic, consumed(ToolCallRow::EVENT_KIND));
    let mut executions = Table::<Encoded<AgentExecutionRow>>::new(&config.agent_executions_topic, consumed(AgentExecutionRow::EVENT_KIND));
    let mut otlp = Table::<NoRow>::new(&config.otlp_spans_topic, consumed(crate::otlp::KIND));
    tracing::info!(
        brokers = %config.kafka_brokers, group = %config.kafka_group, topics = ?subscribed,
        database = %config.clickhouse.database, "ingest worker started"
    );

    worker.consume(&mut tool_calls, &mut executions, &mut otlp, &mut shutdown).await;

    let drain =
        tokio::time::timeout(Duration::from_millis(config.shutdown_timeout_ms), worker.drain(&mut tool_calls, &mut executions, &mut otlp))
            .await;
    if drain.is_err() {
        tracing::warn!("shutdown timeout reached; unwritten batches will be read again by the next owner");
        let writing = [&mut tool_calls.writing, &mut executions.writing, &mut otlp.writing];
        for w in writing.into_iter().flat_map(std::mem::take) {
            w.handle.abort();
            worker.shared.finish(w.id);
        }
    }
    commit(worker.consumer.as_ref(), CommitMode::Sync);
    worker.metrics.inflight_bytes.set(0);
    tracing::info!("ingest worker stopped");
    Ok(())
}

impl Worker {
    async fn consume(
        &mut self,
        tool_calls: &mut Table<Encoded<ToolCallRow>>,
        executions: &mut Table<Encoded<AgentExecutionRow>>,
        otlp: &mut Table<NoRow>,
        shutdown: impl Future<Output = ()>,
    ) {
        let tick_every = (self.limits.max_age / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        // One stream for the whole loop: each `recv()` registers a waker
        // slot and removes it again, two locks per message.
        let stream_owner = Arc::clone(&self.consumer);
        let mut messages = stream_owner.stream();
        // The time a message was accepted, read once for both the idle rule
        // and the next flush check (a clock read costs this worker a few
        // per cent of its CPU at full speed when read twice per message).
        let mut accepted_at: Option<Instant> = None;
        loop {
            self.forget_revoked(tool_calls, executions, otlp);
            if self.shared.assigned.swap(false, Ordering::SeqCst) {
                if let Some(counts) = read_partition_counts(&self.consumer, &self.topics).await {
                    self.partitions = counts;
                }
            }
            let now = accepted_at.take().unwrap_or_else(Instant::now);
            self.flush_if_due(tool_calls, now, false);
            self.flush_if_due(executions, now, false);
            self.flush_otlp_if_due(otlp, now, false);
            let held = tool_calls.held_bytes() + executions.held_bytes() + otlp.held_bytes();
            let room = fits_one_block(tool_calls.open.entries.len()) && fits_one_block(executions.open.entries.len());
            let receive = self.apply_bound(held, room, now);
            // Held back or paused at the bound, the loop is not idle: messages
            // are waiting. Its wait ends when a batch is written, and that
            // wait must not look like the end of a backlog at the next flush
            // check: the clock is read again once it is over.
            let bounded = !receive || self.paused;
            let consumer = Arc::clone(&self.consumer);
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = written(&mut tool_calls.writing) => commit(consumer.as_ref(), CommitMode::Async),
                _ = written(&mut executions.writing) => commit(consumer.as_ref(), CommitMode::Async),
                _ = written(&mut otlp.writing) => commit(consumer.as_ref(), CommitMode::Async),
                message = messages.next(), if receive => match message.expect("Kafka message streams never end") {
                    Ok(m) if m.topic() == otlp.topic => {
                        self.last_message_at = Instant::now();
                        otlp.consumed.inc();
                        let n = |topic: &str| self.partitions.get(topic).unwrap_or(1);
                        let destinations = Destinations {
                            tool_calls: (&tool_calls.topic, n(&tool_calls.topic)),
                            agent_executions: (&executions.topic, n(&executions.topic)),
                        };
                        self.otlp.accept(&m, &mut otlp.open, destinations, &self.forwarder, &self.dead_letters);
                    }
                    Ok(m) => {
                        self.accept(&m, tool_calls, executions);
                        let now = Instant::now();
                        self.last_message_at = now;
                        accepted_at = Some(now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tick.tick() => {}
            }
            if bounded {
                self.last_message_at = Instant::now();
            }
        }
    }

    /// Writes everything held, then returns.
    async fn drain(
        &mut self,
        tool_calls: &mut Table<Encoded<ToolCallRow>>,
        executions: &mut Table<Encoded<AgentExecutionRow>>,
        otlp: &mut Table<NoRow>,
    ) {
        self.forget_revoked(tool_calls, executions, otlp);
        finish_writing(&mut tool_calls.writing).await;
        finish_writing(&mut executions.writing).await;
        finish_writing(&mut otlp.writing).await;
        let now = Instant::now();
        self.flush_if_due(tool_calls, now, true);
        self.flush_if_due(executions, now, true);
        self.flush_otlp_if_due(otlp, now, true);
        finish_writing(&mut tool_calls.writing).await;
        finish_writing(&mut executions.writing).await;
        finish_writing(&mut otlp.writing).await;
    }

    fn accept(
        &mut self,
        m: &BorrowedMessage<'_>,
        tool_calls: &mut Table<Encoded<ToolCallRow>>,
        executions: &mut Table<Encoded<AgentExecutionRow>>,
    ) {
        if m.topic() == tool_calls.topic {
            self.accept_into(m, tool_calls);
        } else if m.topic() == executions.topic {
            self.accept_into(m, executions);
        }
    }

    fn accept_into<R: IngestRow>(&mut self, m: &BorrowedMessage<'_>, table: &mut Table<Encoded<R>>) {
        table.consumed.inc();
        let payload = m.payload().unwrap_or_default();
        let (partition, offset) = (m.partition(), m.offset());
        match R::parse(payload, chrono::Utc::now()) {
            Ok(row) => match self.partitions.get(&table.topic).map(|n| home_partition(row.event_id(), n)) {
                Some(home) if home != partition => {
                    let delivery = self.forwarder.spawn(Forward::of(m, R::EVENT_KIND, home));
                    table.open.push_delivery(partition, offset, payload.len() + m.key_len(), delivery);
                }
                _ => {
                    let row = Encoded::with_buffer(&row, self.query_text_retention_days, &mut self.encode_buffer);
                    let bytes = row.memory_bytes();
                    table.open.push_row(row, Source { partition, offset, bytes });
                }
            },
            Err(rejection) => {
                tracing::debug!(topic = %table.topic, partition, offset, %rejection, "rejected message");
                let delivery = self.dead_letters.spawn(Rejected {
                    kind: R::EVENT_KIND,
                    reason: rejection.kind.as_str(),
                    field: rejection.field,
                    error: rejection.message,
                    source_topic: table.topic.clone(),
                    partition,
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                });
                table.open.push_delivery(partition, offset, payload.len(), delivery);
            }
        }
    }

    /// Starts writing the table's open batch if it is due (or `force`d)
    /// and fewer than [`BATCHES_IN_FLIGHT`] batches of the table are being
    /// written. Its look-up starts straight away; its insert waits until
    /// the previous batch is over and has said what it landed.
    fn flush_if_due<R: IngestRow>(&mut self, table: &mut Table<Encoded<R>>, now: Instant, force: bool) {
        let backlog_drained = table.after_full && now.duration_since(self.last_message_at) >= IDLE;
        if backlog_drained && table.open.is_empty() {
            // It ended with a full batch: nothing left for the rule to send early.
            table.after_full = false;
        }
        let due = force || backlog_drained || table.open.is_due(&self.limits, now);
        if table.writing.len() >= BATCHES_IN_FLIGHT || table.open.is_empty() || !due {
            return;
        }
        table.after_full = table.open.is_full(&self.limits);
        let batch = std::mem::take(&mut table.open);
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let topic = table.topic.clone();
        self.shared.begin(id, batch.offsets.keys().map(|p| (topic.clone(), *p)).collect());
        let bytes = batch.bytes;
        let (consumer, shared, writer, metrics, refusals) = (
            Arc::clone(&self.consumer),
            Arc::clone(&self.shared),
            Arc::clone(&self.writer),
            Arc::clone(&self.metrics),
            Arc::clone(&self.dead_letters),
        );
        let previous = table.landed.take();
        let (landed_tx, landed_rx) = oneshot::channel();
        table.landed = Some(landed_rx);
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let Batch { entries, deliveries, offsets, .. } = batch;
            let rows = entries.len();
            let mut looked_up = writer.look_up(entries).await;
            if let Some(previous) = previous {
                match previous.await {
                    Ok(landed) => looked_up.drop_landed(&landed),
                    // The previous batch's task failed: it is over, so a
                    // second look-up sees whatever it stored.
                    Err(_) => looked_up = writer.look_up_again(looked_up).await,
                }
            }
            let (written, landed) = writer.insert(looked_up).await;
            dead_letter_refused::<R>(&refusals, &topic, &written.refused).await;
            let delivered = deliveries.len() + written.refused.len();
            acknowledge_then_store_offsets(&consumer, &topic, deliveries, &offsets).await;
            // After the offsets: the next batch stores its own only after these.
            let _ = landed_tx.send(landed);
            shared.finish(id);
            metrics.flush_duration.with_label_values(&[R::EVENT_KIND]).observe(started.elapsed().as_secs_f64());
            metrics.last_flush_timestamp.set(chrono::Utc::now().timestamp());
            tracing::debug!(
                table = R::TABLE,
                rows,
                bytes,
                inserted = written.inserted,
                deduplicated = written.deduplicated,
                refused = written.refused.len(),
                delivered,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch acknowledged"
            );
        });
        table.writing.push_back(Writing { id, bytes, handle });
    }

    /// Completes the OTLP topic's open batch if it is due (or `force`d) and
    /// no other batch of it is in progress: waits for Kafka to acknowledge
    /// every event produced to a home partition and every dead letter, then
    /// stores the offsets.
    fn flush_otlp_if_due(&mut self, table: &mut Table<NoRow>, now: Instant, force: bool) {
        if !table.writing.is_empty() || table.open.is_empty() || !(force || table.open.is_due(&self.limits, now)) {
            return;
        }
        let batch = std::mem::take(&mut table.open);
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let topic = table.topic.clone();
        self.shared.begin(id, batch.offsets.keys().map(|p| (topic.clone(), *p)).collect());
        let bytes = batch.bytes;
        let (consumer, shared, metrics) = (Arc::clone(&self.consumer), Arc::clone(&self.shared), Arc::clone(&self.metrics));
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let Batch { deliveries, offsets, .. } = batch;
            acknowledge_then_store_offsets(&consumer, &topic, deliveries, &offsets).await;
            shared.finish(id);
            metrics.flush_duration.with_label_values(&[crate::otlp::KIND]).observe(started.elapsed().as_secs_f64());
            metrics.last_flush_timestamp.set(chrono::Utc::now().timestamp());
        });
        table.writing.push_back(Writing { id, bytes, handle });
    }

    /// Drops what was read from partitions revoked since the last call.
    fn forget_revoked(
        &mut self,
        tool_calls: &mut Table<Encoded<ToolCallRow>>,
        executions: &mut Table<Encoded<AgentExecutionRow>>,
        otlp: &mut Table<NoRow>,
    ) {
        let revoked = std::mem::take(&mut *self.shared.revoked.lock().expect("lock"));
        if revoked.is_empty() {
            return;
        }
        let of = |topic: &str| revoked.iter().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect::<Vec<_>>();
        let released = tool_calls.open.drop_partitions(&of(&tool_calls.topic))
            + executions.open.drop_partitions(&of(&executions.topic))
            + otlp.open.drop_partitions(&of(&otlp.topic));
        if released > 0 {
            tracing::info!(released_bytes = released, "dropped unwritten messages of revoked partitions");
        }
    }

    /// Applies the in-flight byte bound to `held` bytes and returns whether
    /// the loop may take messages: below the bound it may; at the bound it
    /// holds back, and after [`HOLD_BEFORE_PAUSE`] it pauses the partitions
    /// and polls again (paused partitions deliver nothing) until `held` falls
    /// below three quarters of the bound. Without `room` (an open batch at
    /// the size of one INSERT block, see [`fits_one_block`]) it holds back
    /// the same way, whatever `held`.
    fn apply_bound(&mut self, held: usize, room: bool, now: Instant) -> bool {
        self.metrics.inflight_bytes.set(held as i64);
        if self.paused {
            if held <= self.max_inflight_bytes * 3 / 4 && room {
                self.set_paused(false, held);
                self.held_since = None;
            }
            return true;
        }
        if held < self.max_inflight_bytes && room {
            self.held_since = None;
            return true;
        }
        let since = *self.held_since.get_or_insert(now);
        if now.duration_since(since) < HOLD_BEFORE_PAUSE {
            return false;
        }
        self.set_paused(true, held);
        true
    }

    /// Pauses or resumes every assigned partition.
    fn set_paused(&mut self, pause: bool, held: usize) {
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment");
                return;
            }
        };
        self.shared.paused.store(pause, Ordering::SeqCst);
        let result = if pause { self.consumer.pause(&assignment) } else { self.consumer.resume(&assignment) };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
        }
        self.paused = pause;
        self.metrics.consumption_paused.set(i64::from(pause));
        tracing::info!(held_bytes = held, paused = pause, "in-flight byte bound: partitions {}", if pause { "paused" } else { "resumed" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_batch_stops_taking_rows_at_one_insert_block() {
        assert!(fits_one_block(0));
        assert!(fits_one_block(MAX_BATCH_ROWS_LIMIT - 1));
        assert!(!fits_one_block(MAX_BATCH_ROWS_LIMIT));
        assert!(!fits_one_block(MAX_BATCH_ROWS_LIMIT + 1));
    }
}
