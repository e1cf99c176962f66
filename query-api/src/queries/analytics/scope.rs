//! [`Scope`]: tenant, time range, filters and call kinds of one analytics
//! query, and its `WHERE` clause on the tool-call tables (built by
//! [`Conditions`]).

use uuid::Uuid;

use crate::queries::conditions::{CallKinds, Conditions, Filters, Table, TimeColumn};
use crate::window::TimeRange;

/// Tenant, time range and filters of one query.
#[derive(Debug, Clone)]
pub struct Scope {
    pub tenant: Uuid,
    pub range: TimeRange,
    pub filters: Filters,
    pub kinds: CallKinds,
}

impl Scope {
    /// `WHERE` conditions (without the keyword) and their parameters, for a
    /// tool-call table: the minute rollup (`Minute`) or the raw table
    /// (`OccurredAt`).
    pub fn tool_calls_where(&self, time: TimeColumn) -> (String, Vec<(String, String)>) {
        let table = if time == TimeColumn::OccurredAt { Table::ToolCallsRaw } else { Table::ToolCallsRollup };
        Conditions::tenant(self.tenant).between(time, self.range.start, self.range.end).and(self.tool_calls_filters(table)).into_parts()
    }

    /// The call-kind and filter conditions of [`Scope::tool_calls_where`]
    /// without tenant and time (for queries that put several time ranges of
    /// different tables together).
    pub fn tool_calls_filters(&self, table: Table) -> Conditions {
        Conditions::new().kinds(self.kinds, table).filters(&self.filters, table)
    }
}
