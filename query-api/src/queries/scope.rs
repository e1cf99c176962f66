//! The shared `WHERE` clause: tenant, time range, filters, call kinds.
//!
//! The text is built from constant fragments (which filters are present);
//! the values are bound as `{name:Type}` parameters, so no request can
//! change the shape of the SQL, and `tenant_id` is always the first
//! condition (it is also the first key of every table's sort order).

use uuid::Uuid;

use crate::params::Filters;
use crate::window::TimeRange;

/// A bound parameter value: text (parsed by ClickHouse as the declared
/// type) or a list of strings (`Array(String)`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Param {
    Text(String),
    List(Vec<String>),
}

/// A SQL text and its bound parameters.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<(String, Param)>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), params: Vec::new() }
    }
    pub fn bind(mut self, name: &str, value: impl ToString) -> Self {
        self.params.push((name.to_owned(), Param::Text(value.to_string())));
        self
    }
    pub fn bind_list(mut self, name: &str, values: Vec<String>) -> Self {
        self.params.push((name.to_owned(), Param::List(values)));
        self
    }
    pub fn bind_all(mut self, params: impl IntoIterator<Item = (impl Into<String>, String)>) -> Self {
        self.params.extend(params.into_iter().map(|(k, v)| (k.into(), Param::Text(v))));
        self
    }
    /// The query on `client` with every parameter bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for (k, v) in &self.params {
            q = q.param(k, v);
        }
        q
    }
}

/// Which tool-call kinds a query counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKinds {
    /// Real tool invocations (`call_kind = 'tool'`): every tool-call metric.
    Tool,
    /// The proxy operations (`suggest_tools`, `get_tool_schemas`, `invoke_tools`).
    Proxy,
    /// Everything.
    All,
}

/// Tenant, time range and filters of one query.
#[derive(Debug, Clone)]
pub struct Scope {
    pub tenant: Uuid,
    pub range: TimeRange,
    pub filters: Filters,
    pub kinds: CallKinds,
}

/// The time column of the table being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// `minute DateTime('UTC')` of the rollups.
    Minute,
    /// `occurred_at DateTime64(3, 'UTC')` of the raw tables.
    OccurredAt,
}

impl Scope {
    /// `WHERE` conditions (without the keyword) and their parameters, for a
    /// tool-call table (raw or rollup: both have the filter columns).
    pub fn tool_calls_where(&self, time: TimeColumn) -> (String, Vec<(String, String)>) {
        let mut cond = vec!["tenant_id = {tenant:UUID}".to_owned()];
        let mut params = vec![("tenant".to_owned(), self.tenant.to_string())];
        match time {
            TimeColumn::Minute => {
                cond.push("minute >= toDateTime({start_s:Int64}, 'UTC') AND minute < toDateTime({end_s:Int64}, 'UTC')".into());
                params.push(("start_s".into(), self.range.start.timestamp().to_string()));
                params.push(("end_s".into(), self.range.end.timestamp().to_string()));
            }
            TimeColumn::OccurredAt => {
                cond.push("occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')".into());
                params.push(("start_ms".into(), self.range.start.timestamp_millis().to_string()));
                params.push(("end_ms".into(), self.range.end.timestamp_millis().to_string()));
            }
        }
        let (filters, fparams) = self.tool_calls_filters(time == TimeColumn::OccurredAt);
        cond.extend(filters);
        params.extend(fparams);
        (cond.join(" AND "), params)
    }

    /// The call-kind and filter conditions of [`Scope::tool_calls_where`]
    /// without tenant and time (for queries that put several time ranges of
    /// different tables together). `raw` allows the user filter, which only
    /// the raw table has.
    pub fn tool_calls_filters(&self, raw: bool) -> (Vec<String>, Vec<(String, String)>) {
        let mut cond: Vec<String> = Vec::new();
        let mut params: Vec<(String, String)> = Vec::new();
        match self.kinds {
            CallKinds::Tool => cond.push("call_kind = 'tool'".into()),
            CallKinds::Proxy => cond.push("call_kind IN ('suggest_tools', 'get_tool_schemas', 'invoke_tools')".into()),
            CallKinds::All => {}
        }
        let f = &self.filters;
        if let Some(v) = f.project_id {
            cond.push("project_id = {f_project:UUID}".into());
            params.push(("f_project".into(), v.to_string()));
        }
        if let Some(v) = f.navigator_instance_id {
            cond.push("navigator_instance_id = {f_navigator_instance:UUID}".into());
            params.push(("f_navigator_instance".into(), v.to_string()));
        }
        if let Some(v) = f.server_instance_id {
            cond.push("server_instance_id = {f_server_instance:UUID}".into());
            params.push(("f_server_instance".into(), v.to_string()));
        }
        if let Some(v) = f.tool_id {
            cond.push("tool_id = {f_tool:UUID}".into());
            params.push(("f_tool".into(), v.to_string()));
        }
        if let Some(v) = &f.tool_name {
            cond.push("tool_name = {f_tool_name:String}".into());
            params.push(("f_tool_name".into(), v.clone()));
        }
        if let Some(v) = f.user_token_id {
            debug_assert!(raw, "only the raw table has user_token_id");
            cond.push("user_token_id = {f_user:UUID}".into());
            params.push(("f_user".into(), v.to_string()));
        }
        (cond, params)
    }
}
