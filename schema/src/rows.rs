//! ClickHouse rows of the raw tables `tool_calls` and `agent_executions`, and
//! of `query_texts` (the text of navigator queries, kept apart).
//!
//! Columns are named as the event fields. Optional ids are stored as the nil
//! UUID and optional strings as `''` (not `Nullable`) so that rollup keys and
//! filters stay cheap; readers treat nil / empty as "absent". `cost_usd` is
//! `Decimal(18, 6)`, carried here as its integer number of micro-dollars;
//! an unknown cost is `cost_usd = 0` with `cost_known = false` (a flag
//! rather than a `Nullable` column, see migration 0010).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{AgentExecutionEvent, ToolCallEvent};

/// A row of `tool_calls`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ToolCallRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub project_id: Uuid,
    /// Added by migration 0008.
    pub project_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub navigator_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub navigator_instance_id: Uuid,
    pub navigator_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub query_id: Uuid,
    pub call_kind: String,
    pub suggestions_count: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    pub server_id: Uuid,
    pub server_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub server_instance_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub tool_id: Uuid,
    pub tool_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub user_token_id: Uuid,
    pub user_email: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub agent_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub agent_execution_id: Uuid,
    pub latency_ms: f64,
    pub runtime_ms: Option<f64>,
    pub success: bool,
    pub error_type: String,
    pub error_message: String,
}

/// A row of `agent_executions`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct AgentExecutionRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub execution_id: Uuid,
    pub execution_kind: String,
    pub billable: bool,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub user_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub agent_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub conversation_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub plan_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub project_id: Uuid,
    /// Added by migration 0008.
    pub project_name: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub navigator_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub navigator_instance_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub user_token_id: Uuid,
    pub user_email: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    /// `Decimal(18, 6)`: micro-dollars.
    pub cost_usd: i64,
    /// `false`: the cost is not known and `cost_usd` is 0 (migration 0010).
    pub cost_known: bool,
    pub messages_count: u32,
    pub duration_ms: Option<f64>,
    pub status: String,
    pub error_type: String,
    pub error_message: String,
    /// The `query_text` of a navigator query, carried to the writer but
    /// never a column of `agent_executions`: it goes to `query_texts`
    /// ([`QueryTextRow`]), apart from the metering rows.
    #[serde(skip)]
    pub query_text: Option<String>,
}

/// A row of `query_texts`: the text of one navigator query, kept apart from
/// the metering rows and deleted at `expire_at` (table TTL).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct QueryTextRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub query_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub project_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub occurred_at: DateTime<Utc>,
    pub query_text: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub expire_at: DateTime<Utc>,
}

impl AgentExecutionRow {
    /// The `query_texts` row of this execution, kept for `retention_days`
    /// after it occurred; `None` without a text or with a retention of 0.
    pub fn query_text_row(&self, retention_days: u32) -> Option<QueryTextRow> {
        let text = self.query_text.as_ref().filter(|_| retention_days > 0)?;
        Some(QueryTextRow {
            tenant_id: self.tenant_id,
            query_id: self.execution_id,
            project_id: self.project_id,
            occurred_at: self.occurred_at,
            query_text: text.clone(),
            expire_at: self.occurred_at + chrono::Duration::days(i64::from(retention_days)),
        })
    }
}

/// Micro-dollars of a validated amount (at most 6 places, below 10^12).
pub fn decimal_to_micros(d: Decimal) -> i64 {
    let mut d = d;
    d.rescale(6);
    i64::try_from(d.mantissa()).expect("validated amounts fit Decimal(18, 6)")
}

/// The amount of a number of micro-dollars.
pub fn micros_to_decimal(micros: i64) -> Decimal {
    Decimal::new(micros, 6)
}

fn id(v: Option<Uuid>) -> Uuid {
    v.unwrap_or(Uuid::nil())
}

impl From<&ToolCallEvent> for ToolCallRow {
    fn from(e: &ToolCallEvent) -> Self {
        Self::from(e.clone())
    }
}

/// Moves the event's strings into the row (the ingest path: no copies).
impl From<ToolCallEvent> for ToolCallRow {
    fn from(e: ToolCallEvent) -> Self {
        Self {
            event_id: e.event_id,
            occurred_at: e.occurred_at,
            tenant_id: e.tenant_id,
            project_id: id(e.project_id),
            project_name: e.project_name.unwrap_or_default(),
            navigator_id: id(e.navigator_id),
            navigator_instance_id: id(e.navigator_instance_id),
            navigator_name: e.navigator_name.unwrap_or_default(),
            query_id: id(e.query_id),
            call_kind: e.call_kind.as_str().to_owned(),
            suggestions_count: e.suggestions_count.unwrap_or(0),
            server_id: id(e.server_id),
            server_name: e.server_name.unwrap_or_default(),
            server_instance_id: id(e.server_instance_id),
            tool_id: id(e.tool_id),
            tool_name: e.tool_name,
            user_token_id: id(e.user_token_id),
            user_email: e.user_email.unwrap_or_default(),
            organization_id: id(e.organization_id),
            agent_id: id(e.agent_id),
            agent_execution_id: id(e.agent_execution_id),
            latency_ms: e.latency_ms,
            runtime_ms: e.runtime_ms,
            success: e.success,
            error_type: e.error_type.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            error_message: e.error_message.unwrap_or_default(),
        }
    }
}

impl From<&AgentExecutionEvent> for AgentExecutionRow {
    fn from(e: &AgentExecutionEvent) -> Self {
        Self::from(e.clone())
    }
}

/// Moves the event's strings into the row (the ingest path: no copies).
impl From<AgentExecutionEvent> for AgentExecutionRow {
    fn from(e: AgentExecutionEvent) -> Self {
        Self {
            event_id: e.event_id,
            occurred_at: e.occurred_at,
            tenant_id: e.tenant_id,
            execution_id: e.execution_id,
            execution_kind: e.execution_kind.as_str().to_owned(),
            billable: e.billable,
            organization_id: id(e.organization_id),
            user_id: id(e.user_id),
            agent_id: id(e.agent_id),
            conversation_id: id(e.conversation_id),
            plan_id: id(e.plan_id),
            project_id: id(e.project_id),
            project_name: e.project_name.unwrap_or_default(),
            navigator_id: id(e.navigator_id),
            navigator_instance_id: id(e.navigator_instance_id),
            user_token_id: id(e.user_token_id),
            user_email: e.user_email.unwrap_or_default(),
            model: e.model.unwrap_or_default(),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            total_tokens: e.total_tokens,
            cost_usd: decimal_to_micros(e.cost_usd),
            cost_known: e.cost_known,
            messages_count: e.messages_count,
            duration_ms: e.duration_ms,
            status: e.status.as_str().to_owned(),
            error_type: e.error_type.map(|t| t.as_str().to_owned()).unwrap_or_default(),
            error_message: e.error_message.unwrap_or_default(),
            query_text: e.query_text,
        }
    }
}
