//! Writes one batch to ClickHouse, however long it takes, and reports what
//! happened to each row: inserted, skipped as a duplicate, or refused by
//! ClickHouse. Refused rows are returned with their Kafka position and
//! ClickHouse's reason; the writer never talks to Kafka; the consumer,
//! which owns Kafka, reads them again and dead-letters them.
//!
//! * Retryable failures (see [`crate::errors`]) are retried with capped
//!   exponential backoff and jitter, forever: the caller's offsets do not
//!   move meanwhile, and the caller pauses consumption once its in-flight
//!   byte bound is reached.
//! * Each INSERT is one block (batches are capped below
//!   `max_insert_block_size`), so it lands completely or not at all, and it
//!   carries a deterministic `insert_deduplication_token` (a hash of the
//!   table and the sorted event ids) with
//!   `deduplicate_blocks_in_dependent_materialized_views = 1`: an INSERT
//!   whose first attempt landed although the client saw a timeout or a 5xx
//!   is dropped on retry, from the raw table and from the rollups.
//! * A data error is never retried as is: the batch is split in halves,
//!   recursively, until the offending rows are isolated.
//! * The query texts a batch carries ([`crate::query_texts`]) are written
//!   before its rows, so a row that is stored always has its text stored
//!   (until the text's retention ends).
//! * A write is two steps, [`Writer::look_up`] (in-batch dedup and the
//!   duplicate look-up) and [`Writer::insert`], so that the consumer can run
//!   a batch's look-up while the previous batch of its table is still being
//!   inserted. Such a look-up cannot see that insert; the rows the previous
//!   batch [`Landed`] are removed in memory before the insert
//!   ([`LookedUp::drop_landed`]), which keeps the write exact (docs/ingest.md,
//!   "Look-up ahead").

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::batch::{Encoded, Entry, IngestRow, Source};
use crate::config::MAX_BATCH_ROWS_LIMIT;
use crate::dedup::{dedup_in_batch, stored_ids};
use crate::errors::{classify, Backoff};
use crate::metrics::Metrics;
use crate::query_texts;

/// A row ClickHouse refused on its own (a data error), and where its
/// message was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    /// ClickHouse's error, for the dead letter's `agentmeter-error` header.
    pub reason: String,
}

/// What became of a batch's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub inserted: usize,
    pub deduplicated: usize,
    /// Rows ClickHouse refused, in batch order; the caller dead-letters them.
    pub refused: Vec<Refused>,
}

/// Bytes of RowBinary gathered before they are compressed and sent as one
/// chunk (about the `clickhouse` crate's own `Insert` chunk).
const INSERT_CHUNK_BYTES: usize = 256 * 1024;

/// The event ids a batch stored: its rows ClickHouse acknowledged (not the
/// ones it skipped as duplicates, nor the ones ClickHouse refused).
pub type Landed = HashSet<Uuid>;

/// A batch after the in-batch dedup and the duplicate look-up, ready for
/// [`Writer::insert`].
pub struct LookedUp<R> {
    entries: Vec<Entry<Encoded<R>>>,
    deduplicated: usize,
}

impl<R: IngestRow> LookedUp<R> {
    /// Removes the rows whose id `landed` holds (counted as duplicates):
    /// what the previous batch of the table stored after this batch's
    /// look-up may have run.
    pub fn drop_landed(&mut self, landed: &Landed) {
        if landed.is_empty() {
            return;
        }
        let before = self.entries.len();
        self.entries.retain(|e| !landed.contains(&e.row.event_id()));
        self.deduplicated += before - self.entries.len();
    }

    /// The event ids still to be inserted, in batch order.
    pub fn ids(&self) -> Vec<Uuid> {
        self.entries.iter().map(|e| e.row.event_id()).collect()
    }

    /// Rows skipped as duplicates so far.
    pub fn deduplicated(&self) -> usize {
        self.deduplicated
    }
}

pub struct Writer {
    client: Client,
    backoff: Backoff,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// The deduplication token of a set of rows: the same rows give the same
/// token, whatever their order.
pub fn dedup_token<R: IngestRow>(entries: &[Entry<Encoded<R>>]) -> String {
    let mut ids: Vec<[u8; 16]> = entries.iter().map(|e| *e.row.event_id().as_bytes()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    h.update(R::TABLE.as_bytes());
    h.update([0u8]);
    for id in &ids {
        h.update(id);
    }
    format!("{}-{}-{:x}", R::TABLE, ids.len(), h.finalize())
}

impl Writer {
    pub fn new(client: Client, backoff: Backoff, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        // The look-up's answers in RowBinary without per-query schema
        // look-ups; the row types are tested against the migrations in the
        // schema crate.
        Self { client: client.with_validation(false), backoff, timeout, metrics }
    }

    /// Writes `entries` (look-up, then insert), returning once every row is
    /// acknowledged, skipped as a duplicate, or refused by ClickHouse (those
    /// are returned in [`Written::refused`]; nothing else is done with them
    /// here).
    pub async fn write<R: IngestRow>(&self, entries: Vec<Entry<Encoded<R>>>) -> Written {
        let batch = self.look_up(entries).await;
        self.insert(batch).await.0
    }

    /// Steps 1 and 2 of a write: removes the repeats within the batch, then
    /// the rows whose id ClickHouse already holds (retrying the look-up
    /// until it answers).
    pub async fn look_up<R: IngestRow>(&self, mut entries: Vec<Entry<Encoded<R>>>) -> LookedUp<R> {
        let deduplicated = dedup_in_batch(&mut entries);
        self.look_up_again(LookedUp { entries, deduplicated }).await
    }

    /// The look-up of step 2 alone, for a batch whose previous batch ended
    /// without saying what it landed: that batch is over, so a look-up now
    /// sees everything it stored.
    pub async fn look_up_again<R: IngestRow>(&self, mut batch: LookedUp<R>) -> LookedUp<R> {
        if batch.entries.is_empty() {
            return batch;
        }
        let mut attempt = 0;
        let stored = loop {
            match stored_ids(&self.client, &batch.entries, self.timeout).await {
                Ok(stored) => break stored,
                Err(e) => {
                    self.wait_after(&e, attempt, R::TABLE, "duplicate look-up").await;
                    attempt += 1;
                }
            }
        };
        batch.drop_landed(&stored);
        batch
    }

    /// Step 3: inserts what the look-up left (query texts first), returning
    /// what became of the rows and the ids that landed.
    pub async fn insert<R: IngestRow>(&self, batch: LookedUp<R>) -> (Written, Landed) {
        let LookedUp { entries, deduplicated } = batch;
        let mut written = Written { deduplicated, ..Written::default() };
        self.metrics.events_deduplicated.with_label_values(&[R::EVENT_KIND]).inc_by(written.deduplicated as u64);

        let texts: Vec<_> = entries.iter().filter_map(|e| e.row.query_text().cloned()).collect();
        if !texts.is_empty() {
            let mut attempt = 0;
            while let Err(e) = query_texts::insert(&self.client, &texts, self.timeout).await {
                if !classify(&e).is_retryable() {
                    // Texts are content, not metering: a refused text must not hold the rows back.
                    self.metrics.clickhouse_errors.with_label_values(&[classify(&e).as_str()]).inc();
                    tracing::warn!(rows = texts.len(), error = %e, "ClickHouse refused query texts; the executions are written without them");
                    break;
                }
                self.wait_after(&e, attempt, "query_texts", "insert").await;
                attempt += 1;
            }
        }

        let refused = self.insert_isolating(&entries).await;
        written.inserted = entries.len() - refused.len();
        self.metrics.events_inserted.with_label_values(&[R::EVENT_KIND]).inc_by(written.inserted as u64);
        let now = chrono::Utc::now();
        // Observed into a local copy and added to the shared histogram once:
        // one atomic update per batch instead of a few per row.
        let delay = self.metrics.delay(R::EVENT_KIND).local();
        let refused_idx: HashSet<usize> = refused.iter().map(|(i, _)| *i).collect();
        let mut landed = Landed::with_capacity(written.inserted);
        for (i, e) in entries.iter().enumerate() {
            if !refused_idx.contains(&i) {
                delay.observe((now - e.row.occurred_at()).num_milliseconds().max(0) as f64 / 1000.0);
                landed.insert(e.row.event_id());
            }
        }
        delay.flush();
        written.refused = refused
            .into_iter()
            .map(|(index, reason)| {
                let Source { partition, offset, .. } = entries[index].source;
                tracing::warn!(table = R::TABLE, partition, offset, error = %reason, "ClickHouse refused a row");
                Refused { partition, offset, reason }
            })
            .collect();
        (written, landed)
    }

    /// Inserts every row it can; returns the index and error of each row
    /// ClickHouse refused on its own, in batch order.
    async fn insert_isolating<R: IngestRow>(&self, entries: &[Entry<Encoded<R>>]) -> Vec<(usize, String)> {
        let mut rejected = Vec::new();
        let mut pending = Vec::with_capacity(16);
        pending.push(0..entries.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let slice = &entries[range.clone()];
            let mut attempt = 0;
            loop {
                let started = Instant::now();
                match self.insert_once(slice).await {
                    Ok(()) => {
                        self.metrics.batch_rows.with_label_values(&[R::EVENT_KIND]).observe(slice.len() as f64);
                        tracing::debug!(
                            table = R::TABLE,
                            rows = slice.len(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "inserted"
                        );
                        break;
                    }
                    Err(e) if classify(&e).is_retryable() => {
                        self.wait_after(&e, attempt, R::TABLE, "insert").await;
                        self.metrics.insert_retries.inc();
                        attempt += 1;
                    }
                    Err(e) => {
                        self.metrics.clickhouse_errors.with_label_values(&[classify(&e).as_str()]).inc();
                        if slice.len() == 1 {
                            rejected.push((range.start, e.to_string()));
                        } else {
                            tracing::info!(table = R::TABLE, rows = slice.len(), error = %e, "data error; splitting the batch to isolate the rows");
                            let mid = range.start + slice.len() / 2;
                            pending.push(mid..range.end);
                            pending.push(range.start..mid);
                        }
                        break;
                    }
                }
            }
        }
        rejected.sort_unstable_by_key(|(index, _)| *index);
        rejected
    }

    async fn insert_once<R: IngestRow>(&self, entries: &[Entry<Encoded<R>>]) -> Result<(), clickhouse::error::Error> {
        // The rows are already RowBinary (encoded when parsed): the INSERT
        // names the columns in the row type's order, as the crate's `Insert` does.
        let columns = R::COLUMN_NAMES.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(",");
        let mut insert = self
            .client
            .insert_formatted_with(format!("INSERT INTO {}({columns}) FORMAT RowBinary", R::TABLE))
            .with_option("insert_deduplicate", "1")
            .with_option("insert_deduplication_token", dedup_token(entries))
            .with_option("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_option("max_insert_block_size", (MAX_BATCH_ROWS_LIMIT + 1).to_string())
            .with_timeouts(Some(self.timeout), Some(self.timeout))
            .buffered_with_capacity(INSERT_CHUNK_BYTES + 4096);
        for e in entries {
            insert.write_buffered(e.row.bytes());
            if insert.buf_len() >= INSERT_CHUNK_BYTES {
                insert.flush().await?;
            }
        }
        insert.end().await
    }

    /// Counts and logs a retryable failure, then sleeps the backoff delay.
    async fn wait_after(&self, e: &clickhouse::error::Error, attempt: u32, table: &str, what: &str) {
        let class = classify(e);
        self.metrics.clickhouse_errors.with_label_values(&[class.as_str()]).inc();
        let delay = self.backoff.delay(attempt);
        if attempt == 0 || attempt.is_power_of_two() {
            tracing::warn!(table, what, class = class.as_str(), attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "ClickHouse request failed; retrying");
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Source;
    use agentmeter_schema::rows::ToolCallRow;

    fn entry(id: u128) -> Entry<Encoded<ToolCallRow>> {
        let raw = serde_json::json!({
            "event_id": uuid::Uuid::from_u128(id), "occurred_at": 1_700_000_000_000i64,
            "tenant_id": uuid::Uuid::from_u128(7), "tool_name": "t", "latency_ms": 1.0, "success": true,
        });
        let row = <ToolCallRow as IngestRow>::parse(raw.to_string().as_bytes(), chrono::Utc::now()).unwrap();
        Entry { row: Encoded::new(&row, 30), source: Source { partition: 0, offset: id as i64, bytes: 0 } }
    }

    #[test]
    fn token_depends_on_the_set_of_ids_only() {
        let a = vec![entry(1), entry(2), entry(3)];
        let b = vec![entry(3), entry(1), entry(2)];
        assert_eq!(dedup_token(&a), dedup_token(&b));
        assert_ne!(dedup_token(&a), dedup_token(&a[..2]));
        assert!(dedup_token(&a).starts_with("tool_calls-3-"));
    }

    #[test]
    fn landed_ids_are_removed_and_counted_as_duplicates() {
        let mut batch = LookedUp { entries: vec![entry(1), entry(2), entry(3), entry(4)], deduplicated: 1 };
        batch.drop_landed(&Landed::from([Uuid::from_u128(2), Uuid::from_u128(4), Uuid::from_u128(9)]));
        assert_eq!(batch.ids(), vec![Uuid::from_u128(1), Uuid::from_u128(3)]);
        assert_eq!(batch.deduplicated(), 3);
        batch.drop_landed(&Landed::new());
        assert_eq!(batch.ids().len(), 2);
    }

    #[test]
    fn repeats_within_a_batch_are_removed() {
        let mut batch = vec![entry(1), entry(2), entry(1), entry(3), entry(2)];
        assert_eq!(dedup_in_batch(&mut batch), 2);
        let offsets: Vec<i64> = batch.iter().map(|e| e.source.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3]);
    }
}
