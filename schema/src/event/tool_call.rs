//! The tool-call event (`agentmeter.tool-calls`): one per tool invocation or
//! proxy operation (SEED_SPEC §4.2).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use super::fields::Fields;
use super::vocabulary::{CallKind, ErrorType};
use super::{Rejection, MAX_MESSAGE_BYTES, MAX_NAME_BYTES};

/// One tool invocation (or proxy operation) made on behalf of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(title = "agentmeter tool-call event, version 1")]
pub struct ToolCallEvent {
    /// Idempotency key: the same event sent twice is counted once.
    pub event_id: Uuid,
    /// When the call happened: RFC 3339 with offset, or epoch milliseconds.
    /// Stored in UTC with millisecond precision.
    #[serde(with = "super::millis_rfc3339")]
    #[schemars(with = "String")]
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// The project's name at the time of the event; the latest name of each
    /// project is what the API shows beside its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// Navigator identity (not the instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub navigator_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub navigator_instance_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub navigator_name: Option<String>,
    /// The query (agent execution) this call belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<Uuid>,
    /// Defaults to `tool`.
    pub call_kind: CallKind,
    /// For `suggest_tools`: how many tools were suggested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestions_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_instance_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_id: Option<Uuid>,
    pub tool_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_token_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_execution_id: Option<Uuid>,
    /// Milliseconds from request to response, `>= 0`.
    pub latency_ms: f64,
    /// Milliseconds of the whole tool procedure, `>= 0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<f64>,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Parses and validates one tool-call message. `now` bounds `occurred_at`.
pub fn parse_tool_call(bytes: &[u8], now: DateTime<Utc>) -> Result<ToolCallEvent, Rejection> {
    let f = Fields::parse(bytes)?;
    let suggestions_count = match f.opt_count("suggestions_count")? {
        Some(n) => Some(
            u32::try_from(n)
                .map_err(|_| Rejection::new(super::RejectionKind::InvalidValue, "suggestions_count", "is larger than 4294967295"))?,
        ),
        None => None,
    };
    Ok(ToolCallEvent {
        event_id: f.uuid("event_id")?,
        occurred_at: f.timestamp("occurred_at", now)?,
        tenant_id: f.uuid("tenant_id")?,
        project_id: f.opt_uuid("project_id")?,
        project_name: f.opt_string("project_name", MAX_NAME_BYTES)?,
        navigator_id: f.opt_uuid("navigator_id")?,
        navigator_instance_id: f.opt_uuid("navigator_instance_id")?,
        navigator_name: f.opt_string("navigator_name", MAX_NAME_BYTES)?,
        query_id: f.opt_uuid("query_id")?,
        call_kind: f.opt_vocabulary("call_kind", CallKind::parse, CallKind::expected)?.unwrap_or(CallKind::Tool),
        suggestions_count,
        server_id: f.opt_uuid("server_id")?,
        server_name: f.opt_string("server_name", MAX_NAME_BYTES)?,
        server_instance_id: f.opt_uuid("server_instance_id")?,
        tool_id: f.opt_uuid("tool_id")?,
        tool_name: f.string("tool_name", MAX_NAME_BYTES)?,
        user_token_id: f.opt_uuid("user_token_id")?,
        user_email: f.opt_string("user_email", MAX_NAME_BYTES)?,
        organization_id: f.opt_uuid("organization_id")?,
        agent_id: f.opt_uuid("agent_id")?,
        agent_execution_id: f.opt_uuid("agent_execution_id")?,
        latency_ms: f.non_negative("latency_ms")?,
        runtime_ms: f.opt_non_negative("runtime_ms")?,
        success: f.bool("success")?,
        error_type: f.opt_vocabulary("error_type", ErrorType::parse, ErrorType::expected)?,
        error_message: f.opt_string("error_message", MAX_MESSAGE_BYTES)?,
    })
}
