//! The SQL of the analytics endpoints:
//!
//! * [`scope`]: tenant, range, filters and kinds of a query and its `WHERE`
//!   on the tool-call tables.
//! * [`rollup`]: which rollup answers a request (an hourly rollup shaped
//!   for the question for whole UTC hours that fall inside one bucket, a
//!   minute rollup for the rest; queries from the per-hour and per-minute
//!   execution counts) and the `FROM` sources that follow.
//! * [`bucket_index`]: the bucket of a row, computed in ClickHouse.
//! * [`tool_calls`]: tool-call figures from the tool-call rollups.
//! * [`raw`]: the few answers the rollups cannot give (per-user figures),
//!   read from the raw `tool_calls` table.
//! * [`names`]: the latest name of listed ids, from `dimension_names`.
//! * [`timeseries`]: the Grafana endpoint's metric/group-by queries over
//!   the tool-call and execution rollups.

pub mod bucket_index;
pub mod names;
pub mod raw;
pub mod rollup;
pub mod scope;
pub mod timeseries;
pub mod tool_calls;
