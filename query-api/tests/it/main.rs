//! Integration tests of agentmeter-api against the local stack, each with
//! its own database.

mod abuse;
mod analytics;
mod common;
mod consume;
mod dashboards;
mod kafka;
mod openapi_doc;
mod otlp;
mod plans;
mod project_users;
mod query_logs;
mod replicas;
mod ui;
mod usage;
mod usage_history;
mod user_tokens;
