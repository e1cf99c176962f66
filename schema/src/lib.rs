//! The agentmeter contract shared by every binary.
//!
//! * [`event`]: the two event kinds producers publish to Kafka (tool calls and
//!   agent executions), their strict parser and the JSON Schemas generated from
//!   the Rust types. The parser is the only place that decides whether a
//!   message is a valid event; everything downstream trusts its output.
//! * [`rows`]: the ClickHouse rows of the raw tables, built from events.
//! * [`migrations`]: the numbered ClickHouse migrations and their runner.
//! * [`config`]: connection settings shared by the binaries (ClickHouse,
//!   Kafka topic names), so every binary spells them the same way.

pub mod config;
pub mod event;
pub mod migrations;
pub mod rows;

pub use event::{parse_agent_execution, parse_tool_call, AgentExecutionEvent, Rejection, RejectionKind, ToolCallEvent};
