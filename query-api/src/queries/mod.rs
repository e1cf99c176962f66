//! Every SQL statement of the API, one module per concern:
//!
//! * [`analytics`]: the analytics and Grafana endpoints (rollup choice,
//!   tool-call figures, raw fallbacks, time series).
//! * [`usage_counters`]: what the usage refresher reads (minute rollups,
//!   executions seen) and the organization usage aggregate.
//! * [`limits`]: the `plan_limits` table.
//! * [`plans`]: the `plans` and `plan_assignments` tables.
//! * [`health`]: the store's liveness probe.
//! * [`query_logs`]: query logs, query details and traces, from
//!   `query_events` and `query_texts`.
//! * [`project_users`]: a project's end users, from the raw tables.
//!
//! Shared by them: [`sql`] (a statement and its bound parameters) and
//! [`conditions`] (the one filters-to-`WHERE` builder, with the plain
//! [`Filters`] the HTTP layer converts its parameters into).
//!
//! Rule: the tenant id and every user-supplied value reach ClickHouse as
//! query parameters (`{name:Type}`); the SQL text is assembled only from
//! constant fragments chosen by code. Nothing here knows HTTP: failures are
//! [`QueryError`]s, which `error.rs` turns into responses.

pub mod analytics;
pub mod conditions;
pub mod health;
pub mod limits;
pub mod plans;
pub mod project_users;
pub mod query_logs;
pub mod sql;
pub mod usage_counters;

pub use crate::db::QueryError;
pub use analytics::scope::Scope;
pub use conditions::{CallKinds, Filters, Order};
pub use sql::{Param, Sql};
