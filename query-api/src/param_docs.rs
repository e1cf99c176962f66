//! The query parameters as the OpenAPI document describes them, with the
//! constraints the handlers enforce.
//!
//! The analytics handlers read every parameter as a string ([`RawParams`])
//! so that a bad value becomes a 422 naming it; these types describe the
//! same parameters for the document. Defaults, ranges and accepted filters
//! come from the constants the handlers use ([`Accepts`], [`LIST_LIMIT`]
//! and its siblings), so
//! the two cannot disagree; the vocabularies of `window`, `frequency` and
//! `tz` are written as patterns and an enum of every IANA zone
//! `chrono-tz` knows (what [`crate::calendar::parse_tz`] accepts).
//!
//! [`RawParams`]: crate::params::RawParams

use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, Ref, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Required, Schema};
use utoipa::IntoParams;

use crate::params::{Accepts, LIST_LIMIT, MAX_POINTS_DEFAULT, SERIES_TOP, TOP_LIMIT};

/// `<n><unit>` as `window` accepts it (n up to six digits).
pub const WINDOW_PATTERN: &str = "^[0-9]{1,6}(m|h|d|w|mo|mon)$";
/// `window` of the user-analytics endpoint.
pub const WINDOW_STRICT_PATTERN: &str = "^[0-9]{1,6}(h|d|w|mon)$";
/// `<n><unit>` as `frequency` and `step` accept it.
pub const FREQUENCY_PATTERN: &str = "^[0-9]{1,6}(m|h|d|w|mo|mon)$";
/// `frequency` of the user-analytics endpoint (no months).
pub const FREQUENCY_STRICT_PATTERN: &str = "^[0-9]{1,6}(m|h|d|w)$";

fn query(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn pattern(p: &str, default: Option<&str>) -> ObjectBuilder {
    string().pattern(Some(p)).default(default.map(|d| json!(d)))
}

fn one_of(values: &[&str], default: Option<&str>) -> ObjectBuilder {
    string().enum_values(Some(values.iter().copied())).default(default.map(|d| json!(d)))
}

fn integer((default, min, max): (u32, u32, u32)) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(f64::from(min)))
        .maximum(Some(f64::from(max)))
        .default(Some(json!(default)))
}

fn uuid() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// An instant: RFC 3339 with offset, or epoch milliseconds (1–16 digits).
pub fn instant() -> Schema {
    instant_builder().into()
}

fn instant_builder() -> AnyOfBuilder {
    AnyOfBuilder::new()
        .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
        .item(string().pattern(Some("^[0-9]{1,16}$")))
}

/// `timestamp__gte` of the query logs: an [`instant`] with its meaning.
pub fn query_logs_from() -> Schema {
    described_instant("Start timestamp (inclusive, RFC 3339 or epoch ms), on the query's first event")
}

/// `timestamp__lte` of the query logs: an [`instant`] with its meaning.
pub fn query_logs_to() -> Schema {
    described_instant("End timestamp (inclusive, RFC 3339 or epoch ms), on the query's first event")
}

fn described_instant(description: &str) -> Schema {
    instant_builder().description(Some(description)).into()
}

/// The `tz` parameter: a `$ref` to the [`time_zone_schema`] component.
fn tz() -> Parameter {
    query("tz", "IANA time zone of calendar windows and day/week/month buckets (default UTC)", Ref::from_schema_name("TimeZone"))
}

/// Every IANA zone name `chrono-tz` parses, as the `TimeZone` component.
pub fn time_zone_schema() -> Schema {
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
    string().enum_values(Some(names)).default(Some(json!("UTC"))).description(Some("An IANA time zone name")).into()
}

/// `window`, `from`, `to`, `tz` with the given default window.
fn range(default_window: &str, strict: bool) -> Vec<Parameter> {
    let p = if strict { WINDOW_STRICT_PATTERN } else { WINDOW_PATTERN };
    vec![
        query(
            "window",
            "Lookback ending at `to` (default now): <n><unit>, unit m, h, d, w or mon; at most 403 days",
            pattern(p, Some(default_window)),
        ),
        query("from", "Absolute start (RFC 3339 or epoch ms); overrides window; before `to`, at most 403 days earlier", instant()),
        query("to", "Absolute end (RFC 3339 or epoch ms), default now", instant()),
        tz(),
    ]
}

/// The filters of [`Accepts`].
fn filters(a: Accepts) -> Vec<Parameter> {
    let mut v = Vec::new();
    if a.project {
        v.push(query("project_id", "Filter by project (an id without events of the caller's tenant counts zero)", uuid()));
    }
    if a.navigator_instance {
        v.push(query(
            "navigator_instance_id",
            "Filter by navigator instance (an id without events of the caller's tenant counts zero)",
            uuid(),
        ));
    }
    if a.server_instance {
        v.push(query("server_instance_id", "Filter by server instance (an id without events of the caller's tenant counts zero)", uuid()));
        v.push(query(
            "server_id",
            "Filter by server, as top-servers lists it (an id without events of the caller's tenant counts zero)",
            uuid(),
        ));
    }
    if a.tool_id {
        v.push(query("tool_id", "Filter by tool id (an id without events of the caller's tenant counts zero)", uuid()));
    }
    if a.tool_name {
        v.push(query(
            "tool_name",
            "Filter by tool name (1 to 256 bytes)",
            string().min_length(Some(1)).max_length(Some(agentmeter_schema::event::MAX_NAME_BYTES)),
        ));
    }
    if a.user {
        v.push(query(
            "user_email",
            "Filter by end user e-mail, as /analytics/users lists them (1 to 256 bytes; read from the raw events, not the rollups)",
            string().min_length(Some(1)).max_length(Some(agentmeter_schema::event::MAX_NAME_BYTES)),
        ));
    }
    v
}

fn view() -> Parameter {
    query("view", "Chart type", one_of(&["timeseries", "bar", "pie", "heatmap"], Some("timeseries")))
}

fn frequency(default: &str, strict: bool) -> Parameter {
    let p = if strict { FREQUENCY_STRICT_PATTERN } else { FREQUENCY_PATTERN };
    query("frequency", "Bucket width: <n><unit>, unit m, h, d, w or mo; at most --max-buckets buckets", pattern(p, Some(default)))
}

fn sort_order(default: &str) -> Parameter {
    query("sort_order", "asc or desc", one_of(&["asc", "desc"], Some(default)))
}

fn limit(bounds: (u32, u32, u32)) -> Parameter {
    query("limit", "Maximum number of items", integer(bounds))
}

/// Declares a parameter set: a unit struct whose [`IntoParams`] lists
/// the parameters `$body` builds.
macro_rules! param_set {
    ($(#[$doc:meta])* $name:ident => $body:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                $body
            }
        }
    };
}

fn cat(parts: impl IntoIterator<Item = Vec<Parameter>>) -> Vec<Parameter> {
    parts.into_iter().flatten().collect()
}

param_set!(
    /// Single figures over the last day, all instance filters.
    Summary24h => cat([range("24h", false), filters(Accepts::PNS)])
);
param_set!(
    /// `average-tool-calls-per-query`.
    CallsPerQueryParams => cat([range("24h", false), filters(Accepts::PNS_TOOL_ID), vec![view(), frequency("1h", false)]])
);
param_set!(
    /// Totals against the previous period, by tool name.
    Processed => cat([range("1mon", false), filters(Accepts::PNS_TOOL_NAME)])
);
param_set!(
    /// Proxy-tool counts.
    Proxy => cat([range("1w", false), filters(Accepts::PN)])
);
param_set!(
    /// Graphs with all instance filters.
    GraphPns => cat([range("1mon", false), filters(Accepts::PNS), vec![view(), frequency("1d", false)]])
);
param_set!(
    /// Graphs filtered by tool id.
    GraphToolId => cat([range("1mon", false), filters(Accepts::PNS_TOOL_ID), vec![view(), frequency("1d", false)]])
);
param_set!(
    /// Graphs filtered by tool name.
    GraphToolName => cat([range("1mon", false), filters(Accepts::PNS_TOOL_NAME), vec![view(), frequency("1d", false)]])
);
param_set!(
    /// `heroes/global/stats`: the period ends at `to`.
    GlobalStatsParams => {
        let mut v = vec![
            query(
                "comparison_period",
                "Length of the current and the previous period",
                one_of(&["rolling_month", "rolling_week", "rolling_day", "rolling_hour"], Some("rolling_month")),
            ),
            query("to", "End of the current period (RFC 3339 or epoch ms), default now", instant()),
            tz(),
        ];
        v.extend(filters(Accepts::PNS));
        v
    }
);
param_set!(
    /// `tools` (name order).
    ToolsParams => cat([range("1w", false), filters(Accepts::PNS), vec![sort_order("asc"), limit(LIST_LIMIT)]])
);
param_set!(
    /// `servers`, `users` (count order).
    CountList => cat([range("1w", false), filters(Accepts::PN), vec![sort_order("desc"), limit(LIST_LIMIT)]])
);
param_set!(
    /// `navigator-tool-connections`.
    Connections => cat([range("24h", false), filters(Accepts::PNS)])
);
param_set!(
    /// `top-servers`.
    TopServersParams => cat([range("1w", false), filters(Accepts::PN), vec![limit(TOP_LIMIT)]])
);
param_set!(
    /// `top-projects`.
    TopProjectsParams => cat([range("1w", false), filters(Accepts::NONE), vec![limit(TOP_LIMIT)]])
);
param_set!(
    /// `top-navigators`.
    TopNavigatorsParams => cat([range("1w", false), filters(Accepts::P), vec![limit(TOP_LIMIT)]])
);
param_set!(
    /// `users/summary`.
    TzOnly => vec![tz()]
);
param_set!(
    /// `users/{user_id}/analytics`.
    UserAnalyticsParams => cat([range("1w", true), vec![frequency("1d", true)]])
);
param_set!(
    /// `query/timeseries`.
    TimeseriesParams => {
        use crate::queries::analytics::timeseries::{GROUP_BY_NAMES, METRIC_NAMES};
        let metrics: Vec<&str> = METRIC_NAMES.split(',').map(str::trim).collect();
        let groups: Vec<&str> = GROUP_BY_NAMES.split(',').map(str::trim).collect();
        let mut metric = query("metric", "The metric", one_of(&metrics, None));
        metric.required = Required::True;
        let mut v = vec![metric];
        v.extend(range("24h", false));
        v.extend(filters(Accepts { tool_id: true, tool_name: true, ..Accepts::PNS }));
        v.extend([
            query("step", "Bucket width (<n><unit>); default: from max_points", pattern(FREQUENCY_PATTERN, None)),
            query(
                "max_points",
                "Most buckets when no step is given (at most --max-buckets)",
                ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1f64)).default(Some(json!(MAX_POINTS_DEFAULT))),
            ),
            query("group_by", "One series per group (not every group suits every metric)", one_of(&groups, None)),
            query("top", "Groups shown; the rest are summed into `other`", integer(SERIES_TOP)),
            query("format", "series (default) or table rows", one_of(&["series", "table"], Some("series"))),
        ]);
        v
    }
);
param_set!(
    /// `period_start` / `period_end` of the organization usage aggregate.
    UsagePeriod => vec![
        query("period_start", "RFC 3339 or epoch ms, together with period_end (default: this UTC month)", instant()),
        query("period_end", "RFC 3339 or epoch ms, after period_start", instant()),
    ]
);
