//! The agent-execution event (`agentmeter.agent-executions`): one per agent
//! run, carrying the billable usage (SEED_SPEC §4.3).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use super::fields::Fields;
use super::vocabulary::{ErrorType, ExecutionKind, ExecutionStatus};
use super::{Rejection, RejectionKind, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_QUERY_TEXT_BYTES};

/// One agent run (a chat, an external agent call, a completion, or a
/// navigator query) with its token, cost and message usage.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(title = "agentmeter agent-execution event, version 1")]
pub struct AgentExecutionEvent {
    /// Idempotency key: the same event sent twice is counted once.
    pub event_id: Uuid,
    /// When the execution happened: RFC 3339 with offset, or epoch
    /// milliseconds. Stored in UTC with millisecond precision.
    #[serde(with = "super::millis_rfc3339")]
    #[schemars(with = "String")]
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: Uuid,
    /// The execution (= `query_id` of its tool calls). Defaults to `event_id`.
    pub execution_id: Uuid,
    /// Defaults to `agent_chat`.
    pub execution_kind: ExecutionKind,
    /// Whether the usage counts toward plan limits. Defaults to `true`.
    pub billable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// The project's name at the time of the event; the latest name of each
    /// project is what the API shows beside its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub navigator_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub navigator_instance_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_token_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Defaults to 0.
    pub input_tokens: u64,
    /// Defaults to 0.
    pub output_tokens: u64,
    /// Defaults to `input_tokens + output_tokens`.
    pub total_tokens: u64,
    /// US dollars, at most 6 decimal places, defaults to 0; send it as a string to keep
    /// every digit (numbers are exact up to 15 significant digits).
    #[serde(with = "rust_decimal::serde::str")]
    #[schemars(with = "String")]
    pub cost_usd: Decimal,
    /// Whether `cost_usd` is the execution's cost. Defaults to `true` (an
    /// absent `cost_usd` then means a cost of 0, as it always has). `false`
    /// says nobody knows what the execution cost (an OpenTelemetry span of a
    /// model without a price): `cost_usd` must then be absent, `null` or 0,
    /// is stored as 0 with `cost_known = false`, adds nothing to cost sums,
    /// and the execution is counted in `unpriced_executions` instead.
    pub cost_known: bool,
    /// Defaults to 1.
    pub messages_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Defaults to `success`.
    pub status: ExecutionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The text the user asked, for `navigator_query` executions only (the
    /// `query` of the query logs). Content, possibly personal data: stored
    /// apart from the metering rows, in `query_texts`, and deleted after the
    /// ingest worker's `--query-text-retention-days`. At most
    /// [`MAX_QUERY_TEXT_BYTES`] bytes are kept: a longer text is cut at the
    /// last UTF-8 character boundary within the limit (the execution itself
    /// is never refused for it). Ignored on other execution kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_text: Option<String>,
}

/// Parses and validates one agent-execution message. `now` bounds
/// `occurred_at`.
pub fn parse_agent_execution(bytes: &[u8], now: DateTime<Utc>) -> Result<AgentExecutionEvent, Rejection> {
    let f = Fields::parse(bytes)?;
    let event_id = f.uuid("event_id")?;
    let occurred_at = f.timestamp("occurred_at", now)?;
    let tenant_id = f.uuid("tenant_id")?;
    let input_tokens = f.opt_count("input_tokens")?.unwrap_or(0);
    let output_tokens = f.opt_count("output_tokens")?.unwrap_or(0);
    let sum = input_tokens
        .checked_add(output_tokens)
        .ok_or_else(|| Rejection::new(RejectionKind::InvalidValue, "output_tokens", "input_tokens + output_tokens overflows"))?;
    let total_tokens = f.opt_count("total_tokens")?.unwrap_or(sum);
    let messages_count = match f.opt_count("messages_count")? {
        Some(n) => {
            u32::try_from(n).map_err(|_| Rejection::new(RejectionKind::InvalidValue, "messages_count", "is larger than 4294967295"))?
        }
        None => 1,
    };
    let execution_kind =
        f.opt_vocabulary("execution_kind", ExecutionKind::parse, ExecutionKind::expected)?.unwrap_or(ExecutionKind::AgentChat);
    let cost_known = f.opt_bool("cost_known")?.unwrap_or(true);
    let cost_usd = f.opt_money("cost_usd")?.unwrap_or_default();
    if !cost_known && !cost_usd.is_zero() {
        return Err(Rejection::new(
            RejectionKind::InvalidValue,
            "cost_usd",
            "must be absent when cost_known is false (a cost that is not known has no amount)",
        ));
    }
    let query_text = match execution_kind {
        ExecutionKind::NavigatorQuery => f.opt_truncated_string("query_text", MAX_QUERY_TEXT_BYTES)?,
        _ => None,
    };
    Ok(AgentExecutionEvent {
        event_id,
        occurred_at,
        tenant_id,
        execution_id: f.opt_uuid("execution_id")?.unwrap_or(event_id),
        execution_kind,
        billable: f.opt_bool("billable")?.unwrap_or(true),
        organization_id: f.opt_uuid("organization_id")?,
        user_id: f.opt_uuid("user_id")?,
        agent_id: f.opt_uuid("agent_id")?,
        conversation_id: f.opt_uuid("conversation_id")?,
        plan_id: f.opt_uuid("plan_id")?,
        project_id: f.opt_uuid("project_id")?,
        project_name: f.opt_string("project_name", MAX_NAME_BYTES)?,
        navigator_id: f.opt_uuid("navigator_id")?,
        navigator_instance_id: f.opt_uuid("navigator_instance_id")?,
        user_token_id: f.opt_uuid("user_token_id")?,
        user_email: f.opt_string("user_email", MAX_NAME_BYTES)?,
        model: f.opt_string("model", MAX_NAME_BYTES)?,
        input_tokens,
        output_tokens,
        total_tokens,
        cost_usd,
        cost_known,
        messages_count,
        duration_ms: f.opt_non_negative("duration_ms")?,
        status: f.opt_vocabulary("status", ExecutionStatus::parse, ExecutionStatus::expected)?.unwrap_or(ExecutionStatus::Success),
        error_type: f.opt_vocabulary("error_type", ErrorType::parse, ErrorType::expected)?,
        error_message: f.opt_string("error_message", MAX_MESSAGE_BYTES)?,
        query_text,
    })
}
