//! All SQL of the analytics endpoints, one module per concern:
//!
//! * [`scope`]: the `WHERE` clause every query shares (tenant, time range,
//!   filters), built from fixed fragments with bound values only.
//! * [`rollup`]: which rollup answers a request (`tool_calls_1h` for whole
//!   UTC hours that fall inside one bucket, `tool_calls_1m` for the rest)
//!   and the `FROM` sources that follow.
//! * [`tool_calls`]: tool-call figures from the tool-call rollups.
//! * [`raw`]: the few answers the rollups cannot give (per-user figures),
//!   read from the raw `tool_calls` table.
//! * [`ownership`]: does a filter id belong to the caller's tenant.
//! * [`timeseries`]: the Grafana endpoint's metric/group-by queries over
//!   the tool-call rollups or `agent_executions_1m`.
//!
//! Rule: the tenant id and every user-supplied value reach ClickHouse as
//! query parameters (`{name:Type}`); the SQL text is assembled only from
//! constant fragments chosen by code.

pub mod ownership;
pub mod raw;
pub mod rollup;
pub mod scope;
pub mod timeseries;
pub mod tool_calls;

pub use scope::{CallKinds, Scope, Sql};
