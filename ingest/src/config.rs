//! The worker's configuration: one clap struct, every flag with an
//! environment variable and a unit in its name. Defaults live here and
//! nowhere else; [`Config::validate`] rejects combinations that would break
//! the exactness argument of `docs/ingest.md` (for example a batch larger
//! than one ClickHouse insert block).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentmeter_schema::config::{ClickHouseArgs, TOPIC_AGENT_EXECUTIONS, TOPIC_DEAD_LETTER, TOPIC_TOOL_CALLS};
use clap::{Parser, ValueEnum};

use crate::errors::IngestError;
use crate::otlp::Encoding;

/// Topic of OTLP spans (DESIGN: names other tools rely on).
pub const TOPIC_OTLP_SPANS: &str = "agentmeter.otlp-spans";

/// Largest batch the worker accepts: ClickHouse cuts an INSERT into blocks of
/// `max_insert_block_size` rows (default 1,048,449); one batch must stay one
/// block so that its insert is atomic and deduplicated as a whole.
pub const MAX_BATCH_ROWS_LIMIT: usize = 1_000_000;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// agentmeter-ingest: moves tool-call and agent-execution events from Kafka
/// into ClickHouse, exactly once (see docs/ingest.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "agentmeter-ingest", version, about)]
pub struct Config {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,

    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "AGENTMETER_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Kafka consumer group shared by all ingest workers.
    #[arg(long, env = "AGENTMETER_KAFKA_GROUP", default_value = "agentmeter-ingest")]
    pub kafka_group: String,

    /// Topic of tool-call events.
    #[arg(long, env = "AGENTMETER_TOOL_CALLS_TOPIC", default_value = TOPIC_TOOL_CALLS)]
    pub tool_calls_topic: String,

    /// Topic of agent-execution events.
    #[arg(long, env = "AGENTMETER_AGENT_EXECUTIONS_TOPIC", default_value = TOPIC_AGENT_EXECUTIONS)]
    pub agent_executions_topic: String,

    /// Topic that receives rejected messages, with the reason in headers.
    #[arg(long, env = "AGENTMETER_DEAD_LETTER_TOPIC", default_value = TOPIC_DEAD_LETTER)]
    pub dead_letter_topic: String,

    /// Topic of OpenTelemetry spans: OTLP `ExportTraceServiceRequest`s as the
    /// OpenTelemetry Collector's `kafka` exporter writes them (empty: not read).
    #[arg(long, env = "AGENTMETER_OTLP_SPANS_TOPIC", default_value = TOPIC_OTLP_SPANS)]
    pub otlp_spans_topic: String,

    /// Encoding of the OTLP topic's messages: the Collector's `otlp_proto`
    /// (its default) or `otlp_json`; `auto` detects it per message.
    #[arg(long, env = "AGENTMETER_OTLP_ENCODING", value_enum, default_value_t = Encoding::Auto)]
    pub otlp_encoding: Encoding,

    /// OTLP attribute (span, else resource) holding the tenant id (a UUID).
    #[arg(long, env = "AGENTMETER_OTLP_TENANT_ATTRIBUTE", default_value = "agentmeter.tenant_id")]
    pub otlp_tenant_attribute: String,

    /// OTLP attribute (span, else resource) holding the organization id (a UUID).
    #[arg(long, env = "AGENTMETER_OTLP_ORGANIZATION_ATTRIBUTE", default_value = "agentmeter.organization_id")]
    pub otlp_organization_attribute: String,

    /// OTLP attribute (span, else resource) holding the project id (a UUID).
    #[arg(long, env = "AGENTMETER_OTLP_PROJECT_ATTRIBUTE", default_value = "agentmeter.project_id")]
    pub otlp_project_attribute: String,

    /// OTLP attribute (span, else resource) holding the end user (a UUID, or
    /// any other value, turned into a UUID deterministically).
    #[arg(long, env = "AGENTMETER_OTLP_USER_ATTRIBUTE", default_value = "enduser.id")]
    pub otlp_user_attribute: String,

    /// Single-tenant setups: every OTLP span belongs to this tenant, and the
    /// tenant attribute is not read.
    #[arg(long, env = "AGENTMETER_OTLP_FIXED_TENANT_ID")]
    pub otlp_fixed_tenant_id: Option<uuid::Uuid>,

    /// TOML price table (model -> input/output USD per token, effective from
    /// a date) that prices OTLP spans without an `agentmeter.cost_usd`
    /// attribute; without a price the cost is unknown (stored with
    /// cost_known = false, left out of cost sums), never 0 or a guess.
    #[arg(long, env = "AGENTMETER_OTLP_PRICE_TABLE")]
    pub otlp_price_table: Option<PathBuf>,

    /// Kafka group session timeout. The local broker's first join waits half of it.
    #[arg(long, env = "AGENTMETER_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_session_timeout_ms: u64,

    /// Partition assignment strategy (librdkafka `partition.assignment.strategy`).
    #[arg(long, env = "AGENTMETER_KAFKA_ASSIGNMENT_STRATEGY", default_value = "cooperative-sticky")]
    pub kafka_assignment_strategy: String,

    /// Upper bound of librdkafka's prefetch queue per consumer, in KiB
    /// (`queued.max.messages.kbytes`); counts toward the worker's memory.
    #[arg(long, env = "AGENTMETER_KAFKA_FETCH_QUEUE_KIB", default_value_t = 8192)]
    pub kafka_fetch_queue_kib: u64,

    /// At start, create any of the three topics that does not exist yet, with
    /// this many partitions (0: create nothing and wait for them to appear).
    #[arg(long, env = "AGENTMETER_KAFKA_CREATE_TOPICS_PARTITIONS", default_value_t = 4)]
    pub kafka_create_topics_partitions: i32,

    /// Flush a table's batch when it holds this many rows.
    #[arg(long, env = "AGENTMETER_INGEST_MAX_BATCH_ROWS", default_value_t = 50_000)]
    pub max_batch_rows: usize,

    /// Flush a table's batch when its rows take this many bytes in memory
    /// (each row held as the RowBinary its INSERT sends, plus about 100
    /// bytes of bookkeeping; about 400 bytes for a typical tool call).
    #[arg(long, env = "AGENTMETER_INGEST_MAX_BATCH_BYTES", default_value_t = 24 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Flush a table's batch when its oldest message has waited this long
    /// (the last batch of a backlog goes as soon as the backlog is read,
    /// 100 ms after its last message).
    #[arg(long, env = "AGENTMETER_INGEST_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,

    /// Bytes the worker may hold in batches (rows as counted for
    /// --max-batch-bytes, buffered plus being written, and the messages of
    /// dead letters and forwarded copies not yet acknowledged) before it
    /// stops reading until ClickHouse catches up (after 2 s it also pauses
    /// the partitions).
    #[arg(long, env = "AGENTMETER_INGEST_MAX_INFLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_inflight_bytes: usize,

    /// First retry delay after a retryable ClickHouse or Kafka error.
    #[arg(long, env = "AGENTMETER_INGEST_RETRY_INITIAL_MS", default_value_t = 100)]
    pub retry_initial_ms: u64,

    /// Cap of the exponential retry delay.
    #[arg(long, env = "AGENTMETER_INGEST_RETRY_MAX_MS", default_value_t = 10_000)]
    pub retry_max_ms: u64,

    /// Time allowed for one INSERT or duplicate look-up before it counts as failed (and is retried).
    #[arg(long, env = "AGENTMETER_INGEST_CLICKHOUSE_TIMEOUT_MS", default_value_t = 30_000)]
    pub clickhouse_timeout_ms: u64,

    /// How long a partition revocation waits for the batches of that
    /// partition that are being written, before giving the partition up.
    #[arg(long, env = "AGENTMETER_INGEST_REVOKE_TIMEOUT_MS", default_value_t = 20_000)]
    pub revoke_timeout_ms: u64,

    /// On SIGTERM/SIGINT: time allowed to flush, commit and exit.
    #[arg(long, env = "AGENTMETER_INGEST_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,

    /// Days the text of a navigator query (`query_text`, content that may
    /// be personal data) is kept in `query_texts` after the query occurred;
    /// 0 = never stored. The metering rows are unaffected.
    #[arg(long, env = "AGENTMETER_QUERY_TEXT_RETENTION_DAYS", default_value_t = 30)]
    pub query_text_retention_days: u32,

    /// Address of the Prometheus `/metrics` and `/health` endpoints (port 0 picks a free port).
    #[arg(long, env = "AGENTMETER_INGEST_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "AGENTMETER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Defaults for everything, as `--help` shows them; tests start here.
    pub fn defaults() -> Self {
        Self::parse_from(["agentmeter-ingest"])
    }

    /// Rejects settings the worker cannot honour.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |m: String| Err(IngestError::Config(m));
        if self.max_batch_rows == 0 || self.max_batch_rows > MAX_BATCH_ROWS_LIMIT {
            return bad(format!("max_batch_rows must be 1..={MAX_BATCH_ROWS_LIMIT} (one insert block)"));
        }
        if self.max_batch_bytes == 0 || self.max_inflight_bytes < self.max_batch_bytes {
            return bad("max_inflight_bytes must be at least max_batch_bytes, and both above 0".into());
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return bad("retry_max_ms must be at least retry_initial_ms, and both above 0".into());
        }
        if self.flush_interval_ms == 0 {
            return bad("flush_interval_ms must be above 0".into());
        }
        let (a, b, d) = (&self.tool_calls_topic, &self.agent_executions_topic, &self.dead_letter_topic);
        if a.is_empty() || b.is_empty() || d.is_empty() || a == b || a == d || b == d {
            return bad("the three topics must be distinct and non-empty".into());
        }
        let o = &self.otlp_spans_topic;
        if !o.is_empty() && (o == a || o == b || o == d) {
            return bad("the OTLP topic must differ from the other topics".into());
        }
        Ok(())
    }

    /// The OTLP mapping settings; reads the price table file.
    pub fn otlp_mapping(&self) -> Result<crate::otlp::MappingConfig, IngestError> {
        let prices = match &self.otlp_price_table {
            Some(path) => crate::otlp::prices::PriceTable::load(path)?,
            None => crate::otlp::prices::PriceTable::default(),
        };
        Ok(crate::otlp::MappingConfig {
            tenant_attribute: self.otlp_tenant_attribute.clone(),
            organization_attribute: self.otlp_organization_attribute.clone(),
            project_attribute: self.otlp_project_attribute.clone(),
            user_attribute: self.otlp_user_attribute.clone(),
            fixed_tenant: self.otlp_fixed_tenant_id,
            prices,
        })
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults();
        c.validate().unwrap();
        assert_eq!(c.kafka_group, "agentmeter-ingest");
        assert_eq!(c.tool_calls_topic, "agentmeter.tool-calls");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(c.otlp_spans_topic, "agentmeter.otlp-spans");
        assert_eq!(c.otlp_tenant_attribute, "agentmeter.tenant_id");
        assert_eq!(c.otlp_user_attribute, "enduser.id");
    }

    #[test]
    fn oversized_batches_are_refused() {
        let mut c = Config::defaults();
        c.max_batch_rows = MAX_BATCH_ROWS_LIMIT + 1;
        assert!(c.validate().is_err());
        let mut c = Config::defaults();
        c.max_inflight_bytes = c.max_batch_bytes - 1;
        assert!(c.validate().is_err());
        let mut c = Config::defaults();
        c.dead_letter_topic = c.tool_calls_topic.clone();
        assert!(c.validate().is_err());
        let mut c = Config::defaults();
        c.otlp_spans_topic = c.dead_letter_topic.clone();
        assert!(c.validate().is_err());
    }
}
