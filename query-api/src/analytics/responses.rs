//! The typed answers of the analytics endpoints.
//!
//! Each endpoint serializes one of these structs; the same types derive
//! the schemas of the OpenAPI document ([`crate::openapi`]), so the
//! document cannot describe a field the API does not send. Field names
//! and shapes follow the Caylex schemas of SEED_SPEC §1 (the integration
//! tests validate answers against `shared/spec/caylex-openapi.json`).
//! Times are RFC 3339 UTC strings with whole seconds (see [`super::ts`]).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// The spec's success envelope `{success, data, error, timestamp}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true` (failures use the error shapes).
    pub success: bool,
    pub data: T,
    /// Always `null`.
    #[schema(value_type = Option<String>)]
    pub error: Option<String>,
    /// When the answer was computed.
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// The filters a request supplied, echoed back (only those given).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct FilterEcho {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub navigator_instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub server_instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub server_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub tool_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
}

impl From<BTreeMap<String, String>> for FilterEcho {
    fn from(mut m: BTreeMap<String, String>) -> Self {
        Self {
            navigator_instance_id: m.remove("navigator_instance_id"),
            project_id: m.remove("project_id"),
            server_instance_id: m.remove("server_instance_id"),
            server_id: m.remove("server_id"),
            tool_id: m.remove("tool_id"),
            tool_name: m.remove("tool_name"),
            user_email: m.remove("user_email"),
        }
    }
}

/// How fresh an answer is and which range it covers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Freshness {
    /// The watermark: events up to this instant are included.
    #[schema(format = DateTime)]
    pub as_of: String,
    /// Start of the range read (a graph's first bucket start).
    #[schema(format = DateTime)]
    pub from: String,
    /// End of the range read (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    /// IANA time zone of calendar windows and buckets.
    pub tz: String,
}

/// Fields every windowed answer echoes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Echo {
    /// `window` as given (or its default).
    pub window: String,
    pub filters: FilterEcho,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// `average-tool-call-latency`, seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct AverageLatency {
    pub average_latency: f64,
    pub total_calls: u64,
    pub latency_p50: f64,
    pub latency_p95: f64,
    pub latency_p99: f64,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `average-tool-call-runtime`, seconds over calls that reported a runtime.
#[derive(Debug, Serialize, ToSchema)]
pub struct AverageRuntime {
    pub average_runtime: f64,
    pub total_executions: u64,
    pub runtime_p50: f64,
    pub runtime_p95: f64,
    pub runtime_p99: f64,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `average-tool-calls-per-query`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallsPerQuery {
    /// `total_tool_calls / total_queries`; 0 when `total_queries` is 0
    /// (tool calls whose query sent no execution are not queries).
    pub average_tool_calls_per_query: f64,
    pub total_queries: u64,
    pub total_tool_calls: u64,
    pub view: String,
    pub frequency: String,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `queries-processed`: this period against the previous one.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueriesProcessed {
    pub total_queries: u64,
    pub previous_total_queries: u64,
    #[schema(format = DateTime)]
    pub previous_period_start: String,
    /// Percent change against the previous period; `null` when it had none.
    pub change_percent: Option<f64>,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `tool-calls-processed`: this period against the previous one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolCallsProcessed {
    pub total_tool_calls: u64,
    pub previous_total_tool_calls: u64,
    #[schema(format = DateTime)]
    pub previous_period_start: String,
    /// Percent change against the previous period; `null` when it had none.
    pub change_percent: Option<f64>,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `proxy-tools`: calls of each proxy operation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyTools {
    pub suggest_tools_count: u64,
    pub get_tool_schemas_count: u64,
    pub invoke_tools_count: u64,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `proxy-tools/suggest-tools`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuggestTools {
    pub count: u64,
    pub suggested_tools: u64,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `heroes/global/stats`: current against previous rolling period.
#[derive(Debug, Serialize, ToSchema)]
pub struct GlobalStats {
    pub total_queries: u64,
    pub total_tool_calls: u64,
    pub previous_total_queries: u64,
    pub previous_total_tool_calls: u64,
    #[schema(pattern = "^rolling_(month|week|day|hour)$")]
    pub comparison_period: &'static str,
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[schema(format = DateTime)]
    pub previous_from: String,
    pub filters: FilterEcho,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `analytics/health` (200 healthy, 503 unhealthy).
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsHealth {
    #[schema(pattern = "^(healthy|unhealthy)$")]
    pub status: &'static str,
    pub database_connected: bool,
    /// Mirrors `database_connected` for clients of the old InfluxDB store.
    pub influxdb_connected: bool,
    #[schema(format = DateTime)]
    pub last_check: String,
}

/// One item of `navigator-tool-connections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    pub navigator_instance_id: String,
    /// Latest name of the navigator instance; `null` when no event of the
    /// tenant named it.
    pub navigator_name: Option<String>,
    pub tool_id: String,
    /// Latest name of the tool id; `null` when no event of the tenant named it.
    pub tool_name: Option<String>,
    /// Always `active` (only connections used in the window are listed).
    pub connection_status: &'static str,
    #[schema(format = DateTime)]
    pub last_used: Option<String>,
    pub usage_count: u64,
    #[serde(flatten)]
    pub echo: Echo,
}

/// Fields of the sorted list endpoints besides their items.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEcho {
    /// Items before `limit`.
    pub total_count: u64,
    #[schema(pattern = "^(asc|desc)$")]
    pub sort_order: &'static str,
    pub limit: u32,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// `tools`: distinct tool names.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<String>,
    #[serde(flatten)]
    pub list: ListEcho,
}

/// Calls of one server name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerCalls {
    pub server_name: String,
    pub tool_count: u64,
}

/// `servers`: calls per server name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerList {
    pub servers: Vec<ServerCalls>,
    #[serde(flatten)]
    pub list: ListEcho,
}

/// Tool calls of one user e-mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCalls {
    pub user_email: String,
    pub tool_count: u64,
}

/// `users`: tool calls per user e-mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserCalls>,
    #[serde(flatten)]
    pub list: ListEcho,
}

/// One entry of `top-servers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerCount {
    pub server_id: String,
    /// Latest name of the server; `null` when no event of the tenant named it.
    pub server_name: Option<String>,
    pub count: u64,
}

/// One entry of `top-projects`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectCount {
    pub project_id: String,
    /// Latest `project_name` of the project's events; `null` when none had one.
    pub project_name: Option<String>,
    pub count: u64,
}

/// One entry of `top-navigators`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NavigatorCount {
    pub navigator_id: String,
    /// Latest name of the navigator; `null` when no event of the tenant named it.
    pub navigator_name: Option<String>,
    pub count: u64,
}

/// A top-N list of servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopServerList {
    pub server_count: usize,
    pub servers: Vec<ServerCount>,
}

/// A top-N list of projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopProjectList {
    pub project_count: usize,
    pub projects: Vec<ProjectCount>,
}

/// A top-N list of navigators.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopNavigatorList {
    pub navigator_count: usize,
    pub navigators: Vec<NavigatorCount>,
}

/// A top-N answer: by tool calls and by queries (counted at their
/// `navigator_query` execution per project and navigator; per server, the
/// queries that called the server).
#[derive(Debug, Serialize, ToSchema)]
pub struct Top<L> {
    pub tool_calls: L,
    pub queries_processed: L,
    pub window: String,
    pub filters: FilterEcho,
    pub limit: u32,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// Fields every graph answer shares.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphCommon {
    /// Bucket width, e.g. `1d`.
    pub frequency: String,
    /// Start of the still-open bucket, `null` when every bucket is complete.
    #[schema(format = DateTime)]
    pub open_bucket: Option<String>,
    pub bucket_count: usize,
    #[serde(flatten)]
    pub echo: Echo,
    #[serde(flatten)]
    pub freshness: Freshness,
}

/// A graph point: the bucket start, `partial: true` on the open bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point<V> {
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    #[serde(flatten)]
    pub value: V,
}

/// A graph whose view is named `view`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Graph<V> {
    pub data_points: Vec<Point<V>>,
    #[schema(pattern = "^(timeseries|bar|pie|heatmap)$")]
    pub view: &'static str,
    #[serde(flatten)]
    pub common: GraphCommon,
}

/// Latency per bucket, seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyValue {
    pub average_latency: f64,
    pub total_calls: u64,
    pub latency_p50: f64,
    pub latency_p95: f64,
    pub latency_p99: f64,
}

/// Runtime per bucket, seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeValue {
    pub average_runtime: f64,
    pub total_executions: u64,
}

/// Tool calls per query per bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallsPerQueryValue {
    /// `total_tool_calls / total_queries` of the bucket; 0 when
    /// `total_queries` is 0.
    pub average_tool_calls_per_query: f64,
    pub total_queries: u64,
    pub total_tool_calls: u64,
}

/// A count per bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountValue {
    pub count: u64,
}

/// Error rate per bucket (a fraction 0–1) with its numerator and denominator.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorRateValue {
    pub value: f64,
    pub errors: u64,
    pub calls: u64,
}

/// `error-rate-graph`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorRateGraph {
    pub time_series_data: Vec<Point<ErrorRateValue>>,
    pub total_errors: u64,
    pub total_tool_calls: u64,
    pub average_error_rate: f64,
    #[schema(pattern = "^(timeseries|bar|pie|heatmap)$")]
    pub view_type: &'static str,
    #[serde(flatten)]
    pub common: GraphCommon,
}

/// Labels of an error-type point.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorLabels {
    pub error_type: String,
    pub error_name: String,
}

/// Errors of one type in one bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorTypeValue {
    pub value: u64,
    pub labels: ErrorLabels,
}

/// The series of one error type.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorTypeSeries {
    pub error_type: String,
    pub error_name: String,
    pub time_series_data: Vec<Point<ErrorTypeValue>>,
    pub total_count: u64,
    /// Share of all errors, percent with two decimals.
    pub percentage: f64,
}

/// `error-types-graph`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorTypesGraph {
    pub time_series_data: Vec<ErrorTypeSeries>,
    pub total_errors: u64,
    #[schema(pattern = "^(timeseries|bar|pie|heatmap)$")]
    pub view_type: &'static str,
    #[serde(flatten)]
    pub common: GraphCommon,
}

/// A timeline point `{timestamp, value}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelinePoint<V> {
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub value: V,
}

/// `projects/{project_id}/users/summary`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersSummary {
    pub total_users: u64,
    pub weekly_active_users: u64,
    pub monthly_active_users: u64,
    pub inactive_users: u64,
    /// Distinct users per calendar week (Monday in `tz`), eight weeks.
    pub wau_timeline: Vec<TimelinePoint<u64>>,
    /// Always `8w`.
    pub window: &'static str,
    #[schema(format = DateTime)]
    pub calculated_at: String,
    #[schema(format = DateTime)]
    pub as_of: String,
    pub tz: String,
}

/// A navigator a user used most.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserNavigator {
    pub navigator_instance_id: String,
    pub navigator_name: String,
    pub tool_count: u64,
}

/// A tool a user called most.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserTool {
    pub tool_name: String,
    pub server_name: String,
    pub call_count: u64,
}

/// A server a user called most.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserServer {
    pub server_name: String,
    pub tool_count: u64,
}

/// A user's error rate.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserErrorRate {
    pub average_error_rate: f64,
    pub total_errors: u64,
    pub total_tool_calls: u64,
    pub time_series_data: Vec<TimelinePoint<f64>>,
}

/// A user's errors by type.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserErrorTypes {
    /// Always `timeseries`.
    pub view_type: &'static str,
    pub frequency: String,
    pub total_errors: u64,
    pub time_series_data: Vec<ErrorTypeSeries>,
}

/// `projects/{project_id}/users/{user_id}/analytics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserAnalytics {
    pub user_email: String,
    #[schema(format = Uuid)]
    pub user_token_id: String,
    pub total_queries: u64,
    pub total_tool_calls: u64,
    /// `total_tool_calls / total_queries`; 0 when `total_queries` is 0.
    pub avg_tool_calls_per_query: f64,
    pub top_navigators: Vec<UserNavigator>,
    pub top_tools: Vec<UserTool>,
    pub top_servers: Vec<UserServer>,
    pub queries_timeline: Vec<TimelinePoint<u64>>,
    pub tool_calls_timeline: Vec<TimelinePoint<u64>>,
    pub error_rate_data: UserErrorRate,
    pub error_types_data: UserErrorTypes,
    pub window: String,
    pub frequency: String,
    #[schema(format = DateTime)]
    pub calculated_at: String,
    #[schema(format = DateTime)]
    pub as_of: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    #[schema(format = DateTime)]
    pub open_bucket: Option<String>,
    pub tz: String,
}

/// One series of `query/timeseries`: `points` are `[epoch_ms, value]`
/// pairs, `value` `null` for a ratio or latency in an empty bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamedSeries {
    /// The metric, a group key, or `other` (the groups beyond `top`).
    pub name: String,
    /// The latest name of a group that is an id (`group_by=project`,
    /// `navigator`), when an event of the tenant named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[schema(schema_with = point_pairs)]
    pub points: Vec<(i64, Option<f64>)>,
}

fn point_pairs() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let member =
        OneOfBuilder::new().item(ObjectBuilder::new().schema_type(Type::Number)).item(ObjectBuilder::new().schema_type(Type::Null));
    let pair = ArrayBuilder::new().items(member).min_items(Some(2)).max_items(Some(2));
    ArrayBuilder::new().items(pair).description(Some("[epoch milliseconds, value or null] per bucket")).build()
}

/// `query/timeseries` with `format=series` (the default).
#[derive(Debug, Serialize, ToSchema)]
pub struct TimeseriesAnswer {
    pub metric: String,
    /// Bucket width, e.g. `5m`.
    pub step: String,
    /// First bucket start, epoch milliseconds.
    pub from: i64,
    /// End of the range (exclusive), epoch milliseconds.
    pub to: i64,
    pub tz: String,
    pub group_by: Option<String>,
    #[schema(format = DateTime)]
    pub as_of: String,
    /// Start of the still-open bucket, epoch milliseconds.
    pub open_bucket: Option<i64>,
    pub series: Vec<NamedSeries>,
}

/// A row of `query/timeseries` with `format=table`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimeseriesRow {
    /// Bucket start, epoch milliseconds.
    pub time: i64,
    pub series: String,
    pub value: Option<f64>,
}

/// `query/timeseries`: a series object, or table rows with `format=table`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Timeseries {
    Series(TimeseriesAnswer),
    Table(Vec<TimeseriesRow>),
}
