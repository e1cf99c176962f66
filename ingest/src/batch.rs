//! Per-table batches: what has been read from Kafka and not yet acknowledged.
//!
//! A [`Batch`] holds the valid rows of one table together with where they
//! came from (partition, offset, size), the pending deliveries (dead letters
//! of rejected messages, copies forwarded to their home partition, see
//! [`crate::routing`]) of the messages read in the same period, and the highest offset
//! read per partition. The original bytes are not kept: a row ClickHouse
//! refuses is read again from Kafka to be dead-lettered verbatim (its
//! offset is not committed yet, so it is still there), which halves the
//! memory a batch takes. The batch is the unit of
//! progress: its offsets are stored only after every row in it is
//! acknowledged by ClickHouse and every delivery by Kafka.
//!
//! A topic feeds exactly one table, so a partition's offsets only ever
//! appear in that table's batches, and batches of one table are written one
//! at a time, in order; offsets therefore never overtake unacknowledged rows.
//!
//! A row is kept as [`Encoded`]: the `RowBinary` bytes its INSERT sends
//! ([`crate::row_binary`]), its sort key and its query text, encoded when
//! the message is parsed. A batch's size (`--max-batch-bytes`, the in-flight
//! bound) is the memory its rows take, not their messages' length.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use agentmeter_schema::rows::{AgentExecutionRow, QueryTextRow, ToolCallRow};
use agentmeter_schema::{parse_agent_execution, parse_tool_call, Rejection};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A row type of a raw table, with what the worker needs to know about it.
pub trait IngestRow: Sized + clickhouse::RowOwned + clickhouse::RowWrite + Send + Sync + 'static {
    /// The raw table.
    const TABLE: &'static str;
    /// The metric label of the event kind.
    const EVENT_KIND: &'static str;
    /// Parses and validates one Kafka message into a row.
    fn parse(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection>;
    fn event_id(&self) -> Uuid;
    fn tenant_id(&self) -> Uuid;
    fn occurred_at(&self) -> DateTime<Utc>;
    /// The `query_texts` row this row carries (navigator queries with a
    /// text), kept `retention_days`; written apart from the raw table.
    fn query_text_row(&self, retention_days: u32) -> Option<QueryTextRow>;
}

/// The two raw tables differ only in these names: one impl for both.
macro_rules! ingest_row {
    ($row:ty, $table:literal, $kind:literal, $parse:path, $text:expr) => {
        impl IngestRow for $row {
            const TABLE: &'static str = $table;
            const EVENT_KIND: &'static str = $kind;
            fn parse(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Rejection> {
                $parse(bytes, now).map(<$row>::from)
            }
            fn event_id(&self) -> Uuid {
                self.event_id
            }
            fn tenant_id(&self) -> Uuid {
                self.tenant_id
            }
            fn occurred_at(&self) -> DateTime<Utc> {
                self.occurred_at
            }
            fn query_text_row(&self, retention_days: u32) -> Option<QueryTextRow> {
                let text: fn(&$row, u32) -> Option<QueryTextRow> = $text;
                text(self, retention_days)
            }
        }
    };
}

ingest_row!(ToolCallRow, "tool_calls", "tool_call", parse_tool_call, |_, _| None);
ingest_row!(AgentExecutionRow, "agent_executions", "agent_execution", parse_agent_execution, |row, days| row.query_text_row(days));

/// A parsed row as a batch holds it: its `RowBinary` bytes, the sort key
/// the duplicate look-up needs, and the `query_texts` row it carries.
#[derive(Debug, Clone)]
pub struct Encoded<R> {
    event_id: Uuid,
    tenant_id: Uuid,
    occurred_at: DateTime<Utc>,
    bytes: Box<[u8]>,
    query_text: Option<Box<QueryTextRow>>,
    _row: PhantomData<fn() -> R>,
}

impl<R: IngestRow> Encoded<R> {
    /// Encodes `row`; its query text (if any) is kept `retention_days`.
    pub fn new(row: &R, retention_days: u32) -> Self {
        Self::with_buffer(row, retention_days, &mut Vec::new())
    }

    /// [`Encoded::new`] with a reusable scratch buffer.
    pub fn with_buffer(row: &R, retention_days: u32, scratch: &mut Vec<u8>) -> Self {
        scratch.clear();
        // The row types hold only what RowBinary encodes (tested): a failure is a bug.
        crate::row_binary::encode(row, scratch).expect("raw-table rows encode as RowBinary");
        Self {
            event_id: row.event_id(),
            tenant_id: row.tenant_id(),
            occurred_at: row.occurred_at(),
            bytes: scratch.as_slice().into(),
            query_text: row.query_text_row(retention_days).map(Box::new),
            _row: PhantomData,
        }
    }
}

impl<R> Encoded<R> {
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }

    /// The row in `RowBinary`, as the INSERT sends it.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn query_text(&self) -> Option<&QueryTextRow> {
        self.query_text.as_deref()
    }

    /// The memory this row takes (approximately: the allocator's own
    /// overhead is not counted), which a batch counts toward its size.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Entry<Self>>()
            + self.bytes.len()
            + self.query_text.as_ref().map_or(0, |t| std::mem::size_of::<QueryTextRow>() + t.query_text.len())
    }
}

/// Where a message came from, and the bytes it holds in the batch (an
/// encoded row's memory, or a dead letter's or forwarded copy's message).
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    pub bytes: usize,
}

/// A valid row and its source message.
#[derive(Debug, Clone)]
pub struct Entry<R> {
    pub row: R,
    pub source: Source,
}

/// When a batch must be written.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// The open batch of one table.
#[derive(Debug)]
pub struct Batch<R> {
    pub entries: Vec<Entry<R>>,
    /// Pending Kafka deliveries (dead letters, forwarded copies):
    /// partition, message bytes, delivery.
    pub deliveries: Vec<(i32, usize, JoinHandle<()>)>,
    /// Highest offset read per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Bytes held: rows as the memory they take, dead letters and
    /// forwarded copies as their messages.
    pub bytes: usize,
    opened_at: Option<Instant>,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Self { entries: Vec::new(), deliveries: Vec::new(), offsets: BTreeMap::new(), bytes: 0, opened_at: None }
    }
}

impl<R> Batch<R> {
    /// Records that the message at `offset` was read (and counts its bytes),
    /// for messages that leave neither a row nor a dead letter.
    pub fn touch(&mut self, partition: i32, offset: i64, bytes: usize) {
        self.opened_at.get_or_insert_with(Instant::now);
        let o = self.offsets.entry(partition).or_insert(offset);
        *o = (*o).max(offset);
        self.bytes += bytes;
    }

    pub fn push_row(&mut self, row: R, source: Source) {
        self.touch(source.partition, source.offset, source.bytes);
        self.entries.push(Entry { row, source });
    }

    /// A message that leaves through Kafka (dead letter, forwarded copy):
    /// its offset is stored once `delivery` completes.
    pub fn push_delivery(&mut self, partition: i32, offset: i64, bytes: usize, delivery: JoinHandle<()>) {
        self.touch(partition, offset, bytes);
        self.deliveries.push((partition, bytes, delivery));
    }

    /// Nothing read since the batch was opened.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Must be written now because of its size.
    pub fn is_full(&self, limits: &Limits) -> bool {
        self.entries.len() >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// Must be written now because of its size or the age of its oldest message.
    pub fn is_due(&self, limits: &Limits, now: Instant) -> bool {
        !self.is_empty() && (self.is_full(limits) || self.opened_at.is_some_and(|t| now.duration_since(t) >= limits.max_age))
    }

    /// Forgets everything read from `partitions` (after they were revoked:
    /// their next owner reads them again from the committed offset). Returns
    /// the bytes released. Deliveries already handed to the producer are
    /// left to complete; a second copy may then reach the dead-letter topic
    /// or the home partition (where the look-up removes it).
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        if partitions.is_empty() || self.is_empty() {
            return 0;
        }
        let before = self.bytes;
        self.entries.retain(|e| !partitions.contains(&e.source.partition));
        self.deliveries.retain(|(p, _, _)| !partitions.contains(p));
        self.offsets.retain(|p, _| !partitions.contains(p));
        self.bytes =
            self.entries.iter().map(|e| e.source.bytes).sum::<usize>() + self.deliveries.iter().map(|(_, bytes, _)| bytes).sum::<usize>();
        if self.is_empty() {
            self.opened_at = None;
        }
        before - self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(partition: i32, offset: i64, len: usize) -> Source {
        Source { partition, offset, bytes: len }
    }

    fn limits() -> Limits {
        Limits { max_rows: 3, max_bytes: 100, max_age: Duration::from_millis(50) }
    }

    #[test]
    fn full_by_rows() {
        let mut b = Batch::<u32>::default();
        for i in 0..2 {
            b.push_row(i, source(0, i as i64, 1));
        }
        assert!(!b.is_full(&limits()));
        b.push_row(9, source(1, 7, 1));
        assert!(b.is_full(&limits()));
        assert_eq!(b.offsets, BTreeMap::from([(0, 1), (1, 7)]));
    }

    #[test]
    fn full_by_bytes() {
        let mut b = Batch::<u32>::default();
        b.push_row(1, source(0, 0, 60));
        assert!(!b.is_full(&limits()));
        b.push_row(2, source(0, 1, 40));
        assert!(b.is_full(&limits()));
        assert_eq!(b.bytes, 100);
    }

    #[test]
    fn due_by_age_only_when_not_empty() {
        let mut b = Batch::<u32>::default();
        let later = Instant::now() + Duration::from_millis(60);
        assert!(!b.is_due(&limits(), later));
        b.push_row(1, source(0, 0, 1));
        assert!(!b.is_due(&limits(), Instant::now()));
        assert!(b.is_due(&limits(), Instant::now() + Duration::from_millis(60)));
    }

    #[tokio::test]
    async fn dead_letters_count_and_move_offsets() {
        let mut b = Batch::<u32>::default();
        b.push_delivery(2, 41, 10, tokio::spawn(async {}));
        assert!(!b.is_empty());
        assert_eq!(b.offsets, BTreeMap::from([(2, 41)]));
        assert_eq!(b.bytes, 10);
        assert!(b.entries.is_empty());
    }

    #[tokio::test]
    async fn revoked_partitions_are_forgotten() {
        let mut b = Batch::<u32>::default();
        b.push_row(1, source(0, 5, 10));
        b.push_row(2, source(1, 3, 20));
        b.push_delivery(1, 4, 30, tokio::spawn(async {}));
        let released = b.drop_partitions(&[1]);
        assert_eq!(released, 50);
        assert_eq!(b.bytes, 10);
        assert_eq!(b.entries.len(), 1);
        assert!(b.deliveries.is_empty());
        assert_eq!(b.offsets, BTreeMap::from([(0, 5)]));
        assert_eq!(b.drop_partitions(&[0]), 10);
        assert!(b.is_empty());
        assert_eq!(b.bytes, 0);
    }
}
