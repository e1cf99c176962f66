//! The one condition builder: tenant, time ranges, call kinds and filters
//! into a `WHERE` clause with bound parameters.
//!
//! The text is built from constant fragments (which conditions are present,
//! chosen by code); every value is bound as a `{name:Type}` parameter, so no
//! request can change the shape of the SQL. `tenant_id` is the first
//! condition whenever there is one (it is also the first key of every
//! table's sort order). The parameter names are fixed per condition
//! (`tenant`, `start_s`, `f_project`, ...), so two branches of one query
//! that filter alike share their parameters.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Filters of a query, already validated (the HTTP layer converts its own
/// parameters into this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub project_id: Option<Uuid>,
    pub navigator_instance_id: Option<Uuid>,
    pub server_instance_id: Option<Uuid>,
    /// The server (`server_id`, as `top-servers` lists it).
    pub server_id: Option<Uuid>,
    pub tool_id: Option<Uuid>,
    pub tool_name: Option<String>,
    /// End user (`user_token_id`); the raw tables and the user rollups
    /// (migration 0013) have it.
    pub user_token_id: Option<Uuid>,
    /// End user by e-mail (the key of `/analytics/users`); the raw tables
    /// and the user rollups have it ([`Table::ToolCallsUser`],
    /// [`Table::ExecutionsUser`], the raw ones for the rest).
    pub user_email: Option<String>,
}

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    /// SQL keyword (a fixed string, never user input).
    pub fn sql(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
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

/// The table a condition is for, which decides the filter columns it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The raw `tool_calls` table: every filter, the user included.
    ToolCallsRaw,
    /// The tool-call rollups keyed by dimension (`tool_calls_1m`, `_1h`):
    /// every filter but the user.
    ToolCallsRollup,
    /// `query_counts_1h` / `query_counts_1m`: project, navigator and
    /// navigator instance; no call kind (queries are counted at their
    /// execution, whatever calls they made).
    QueryCounts,
    /// `agent_executions_1m`: project and navigator instance.
    Executions,
    /// The raw `agent_executions` table, for the queries of an end user:
    /// project, navigator instance and user (`user_token_id`).
    ExecutionsRaw,
    /// `tool_calls_user_1h` (migration 0013): call kind, project,
    /// navigator instance and user (`user_token_id`, `user_email`).
    ToolCallsUser,
    /// `agent_executions_user_1h` (migration 0013): project, navigator
    /// instance and user; no call kind.
    ExecutionsUser,
}

/// How a time column is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// `minute DateTime('UTC')` of the rollups (seconds).
    Minute,
    /// `hour DateTime('UTC')` of the hourly rollups (seconds).
    Hour,
    /// `five_minute DateTime('UTC')` of the 5-minute rollups (seconds).
    FiveMinute,
    /// `occurred_at DateTime64(3, 'UTC')` of the raw tables (milliseconds).
    OccurredAt,
}

impl TimeColumn {
    /// The column's name.
    pub fn name(self) -> &'static str {
        self.column()
    }
    fn column(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::FiveMinute => "five_minute",
            Self::OccurredAt => "occurred_at",
        }
    }
}

/// Conditions joined by `AND`, and the parameters they bind.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    parts: Vec<String>,
    params: Vec<(String, String)>,
}

impl Conditions {
    /// No condition yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `tenant_id = {tenant:UUID}`.
    pub fn tenant(tenant: Uuid) -> Self {
        Self::new().constant("tenant_id = {tenant:UUID}").param("tenant", tenant)
    }

    /// A fixed condition (code, never input).
    pub fn constant(mut self, condition: &'static str) -> Self {
        self.parts.push(condition.to_owned());
        self
    }

    fn param(mut self, name: &str, value: impl ToString) -> Self {
        self.params.push((name.to_owned(), value.to_string()));
        self
    }

    /// `column` in `[start, end)`, bound as `start_s`/`end_s` (seconds) or
    /// `start_ms`/`end_ms` (milliseconds of `occurred_at`).
    pub fn between(mut self, column: TimeColumn, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        let c = column.column();
        if column == TimeColumn::OccurredAt {
            self.parts.push(format!(
                "{c} >= fromUnixTimestamp64Milli({{start_ms:Int64}}, 'UTC') AND {c} < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')"
            ));
            self.param("start_ms", start.timestamp_millis()).param("end_ms", end.timestamp_millis())
        } else {
            self.parts.push(format!("{c} >= toDateTime({{start_s:Int64}}, 'UTC') AND {c} < toDateTime({{end_s:Int64}}, 'UTC')"));
            self.param("start_s", start.timestamp()).param("end_s", end.timestamp())
        }
    }

    /// `column` in any of `ranges`, each bound as `{prefix}{i}_s` /
    /// `{prefix}{i}_e`.
    pub fn any_of(mut self, column: TimeColumn, ranges: &[(DateTime<Utc>, DateTime<Utc>)], prefix: &str) -> Self {
        let c = column.column();
        let to_time = if column == TimeColumn::OccurredAt { "fromUnixTimestamp64Milli" } else { "toDateTime" };
        let mut alternatives = Vec::new();
        for (i, (start, end)) in ranges.iter().enumerate() {
            let (s, e) = (format!("{prefix}{i}_s"), format!("{prefix}{i}_e"));
            alternatives.push(format!("({c} >= {to_time}({{{s}:Int64}}, 'UTC') AND {c} < {to_time}({{{e}:Int64}}, 'UTC'))"));
            let (vs, ve) = if column == TimeColumn::OccurredAt {
                (start.timestamp_millis(), end.timestamp_millis())
            } else {
                (start.timestamp(), end.timestamp())
            };
            self = self.param(&s, vs).param(&e, ve);
        }
        self.parts.push(format!("({})", alternatives.join(" OR ")));
        self
    }

    /// The call kinds counted, on `table`.
    pub fn kinds(self, kinds: CallKinds, table: Table) -> Self {
        match (table, kinds) {
            (_, CallKinds::All) => self,
            (Table::QueryCounts | Table::ExecutionsUser, _) => self,
            (_, CallKinds::Tool) => self.constant("call_kind = 'tool'"),
            (_, CallKinds::Proxy) => self.constant("call_kind IN ('suggest_tools', 'get_tool_schemas', 'invoke_tools')"),
        }
    }

    /// The filters `table` has columns for (the others are not applied:
    /// callers choose a table that has the filters they need).
    pub fn filters(mut self, f: &Filters, table: Table) -> Self {
        let all = matches!(table, Table::ToolCallsRaw | Table::ToolCallsRollup);
        if let Some(v) = f.project_id {
            self = self.constant("project_id = {f_project:UUID}").param("f_project", v);
        }
        if let Some(v) = f.navigator_instance_id {
            self = self.constant("navigator_instance_id = {f_navigator_instance:UUID}").param("f_navigator_instance", v);
        }
        if let (true, Some(v)) = (all, f.server_instance_id) {
            self = self.constant("server_instance_id = {f_server_instance:UUID}").param("f_server_instance", v);
        }
        if let (true, Some(v)) = (all, f.server_id) {
            self = self.constant("server_id = {f_server:UUID}").param("f_server", v);
        }
        if let (true, Some(v)) = (all, f.tool_id) {
            self = self.constant("tool_id = {f_tool:UUID}").param("f_tool", v);
        }
        if let (true, Some(v)) = (all, &f.tool_name) {
            self = self.constant("tool_name = {f_tool_name:String}").param("f_tool_name", v);
        }
        let raw = matches!(table, Table::ToolCallsRaw | Table::ExecutionsRaw | Table::ToolCallsUser | Table::ExecutionsUser);
        if let Some(v) = f.user_token_id {
            debug_assert!(raw, "only the raw tables and the user rollups have user_token_id");
            if raw {
                self = self.constant("user_token_id = {f_user:UUID}").param("f_user", v);
            }
        }
        if let Some(v) = &f.user_email {
            debug_assert!(raw, "only the raw tables and the user rollups have user_email");
            if raw {
                self = self.constant("user_email = {f_user_email:String}").param("f_user_email", v);
            }
        }
        self
    }

    /// These conditions and then `other`'s.
    pub fn and(mut self, other: Conditions) -> Self {
        self.parts.extend(other.parts);
        self.params.extend(other.params);
        self
    }

    /// The conditions joined by `AND` (`1` when there is none).
    pub fn sql(&self) -> String {
        if self.parts.is_empty() {
            "1".to_owned()
        } else {
            self.parts.join(" AND ")
        }
    }

    /// The bound parameters.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The `WHERE` text and the parameters.
    pub fn into_parts(self) -> (String, Vec<(String, String)>) {
        (self.sql(), self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_first_values_bound_filters_per_table() {
        let f = Filters {
            project_id: Some(Uuid::nil()),
            tool_name: Some("x' OR 1=1 --".into()),
            user_token_id: Some(Uuid::nil()),
            ..Filters::default()
        };
        let (sql, params) =
            Conditions::tenant(Uuid::nil()).kinds(CallKinds::Tool, Table::ToolCallsRaw).filters(&f, Table::ToolCallsRaw).into_parts();
        assert_eq!(sql, "tenant_id = {tenant:UUID} AND call_kind = 'tool' AND project_id = {f_project:UUID} AND tool_name = {f_tool_name:String} AND user_token_id = {f_user:UUID}");
        assert!(params.iter().any(|(k, v)| k == "f_tool_name" && v == "x' OR 1=1 --"), "values are bound, never spliced");
        let f = Filters { user_token_id: None, ..f };
        let (sql, _) =
            Conditions::tenant(Uuid::nil()).kinds(CallKinds::Proxy, Table::QueryCounts).filters(&f, Table::QueryCounts).into_parts();
        assert_eq!(sql, "tenant_id = {tenant:UUID} AND project_id = {f_project:UUID}", "query counts have no call kind, server or tool");
        assert_eq!(Conditions::new().sql(), "1");
    }
}
