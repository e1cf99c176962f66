//! SQL of the query logs, query details and traces, over `query_events`
//! (one row per event of a query, sorted by tenant, project, time, query;
//! migration 0006) and `query_texts`.
//!
//! A query's `timestamp` is its first event (`min(occurred_at)`), which no
//! single row knows. A page is found without aggregating the whole project
//! ([`page`]): the newest events before the cursor are read in sort-key
//! order, their queries' true first times are looked up, and only queries
//! whose first event is newer than the oldest event read are certain to be
//! in order; if fewer than a page are certain, the scan reads four times
//! more and tries again. Cursor and order: `(timestamp, query_id)`
//! descending, so inserts of new queries never shift a later page.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::sql::Sql;
use crate::db::{Db, QueryError};

/// A point of the page order: a query's first-event time (ms) and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub first_ms: i64,
    pub query_id: Uuid,
}

/// What a query-log page is filtered by (the tenant always).
#[derive(Debug, Clone)]
pub struct LogFilter {
    pub tenant: Uuid,
    pub project: Uuid,
    pub navigator_instance: Option<Uuid>,
    pub server_instance: Option<Uuid>,
    /// Inclusive bounds on the query's timestamp, in ms.
    pub gte_ms: Option<i64>,
    pub lte_ms: Option<i64>,
}

impl LogFilter {
    /// Conditions on event rows of the project (no cursor, no lower time
    /// bound: those apply to the query's first event, see [`page`]).
    fn events_where(&self) -> (String, Vec<(String, String)>) {
        let mut cond = vec!["tenant_id = {tenant:UUID}".to_owned(), "project_id = {project:UUID}".to_owned()];
        let mut params = vec![("tenant".to_owned(), self.tenant.to_string()), ("project".to_owned(), self.project.to_string())];
        if let Some(v) = self.navigator_instance {
            cond.push("navigator_instance_id = {f_navigator_instance:UUID}".into());
            params.push(("f_navigator_instance".into(), v.to_string()));
        }
        if let Some(v) = self.server_instance {
            cond.push("server_instance_id = {f_server_instance:UUID}".into());
            params.push(("f_server_instance".into(), v.to_string()));
        }
        if let Some(ms) = self.lte_ms {
            cond.push("occurred_at <= fromUnixTimestamp64Milli({lte_ms:Int64}, 'UTC')".into());
            params.push(("lte_ms".into(), ms.to_string()));
        }
        (cond.join(" AND "), params)
    }
}

/// One query of a log page or of a detail answer.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct QuerySummary {
    pub id: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub project: String,
    pub navigator_instance: String,
    pub navigator: String,
    /// `call_kind = 'tool'` calls.
    pub tool_calls: u64,
    /// Failed `tool` calls.
    pub errors: u64,
    /// Distinct servers of the tool calls, first called first.
    pub servers: Vec<String>,
}

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

fn summary_select() -> String {
    format!(
        "SELECT toString(query_id) AS id,
            toInt64(toUnixTimestamp64Milli(min(occurred_at))) AS first_ms,
            toInt64(toUnixTimestamp64Milli(max(occurred_at))) AS last_ms,
            toString(anyIf(project_id, project_id != {NIL})) AS project,
            toString(if(countIf(navigator_instance_id != {NIL}) = 0, {NIL}, argMinIf(navigator_instance_id, occurred_at, navigator_instance_id != {NIL}))) AS navigator_instance,
            toString(anyIf(navigator_name, navigator_name != '')) AS navigator,
            toUInt64(countIf(call_kind = 'tool')) AS tool_calls,
            toUInt64(countIf(call_kind = 'tool' AND NOT success)) AS errors,
            arrayDistinct(arrayMap(x -> toString(x.2), arraySort(groupArrayIf((occurred_at, server_id), call_kind = 'tool' AND server_id != {NIL})))) AS servers
         FROM query_events"
    )
}

#[derive(Debug, Row, Deserialize)]
struct ScannedEvent {
    id: String,
    ms: i64,
}

/// Summaries of `ids` (all their events in the project, whatever filter).
async fn summaries(db: &Db, tenant: Uuid, project: Option<Uuid>, ids: Vec<String>) -> Result<Vec<QuerySummary>, QueryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut text = format!("{} WHERE tenant_id = {{tenant:UUID}} AND query_id IN {{ids:Array(UUID)}}", summary_select());
    let mut sql = Sql::new("").bind("tenant", tenant).bind_list("ids", ids);
    if let Some(p) = project {
        text.push_str(" AND project_id = {project:UUID}");
        sql = sql.bind("project", p);
    }
    text.push_str(" GROUP BY query_id");
    sql.text = text;
    db.run("query_log_summaries", |c| async move { sql.query(&c).fetch_all::<QuerySummary>().await }).await
}

/// Events read per try for a page of `size` (then x4 each try).
const FIRST_SCAN_PER_ITEM: usize = 8;

/// The queries of one page, newest first: at most `size + 1` (one more
/// tells whether there is a next page), all strictly before `after`.
pub async fn page(db: &Db, f: &LogFilter, after: Option<Position>, size: usize) -> Result<Vec<QuerySummary>, QueryError> {
    let want = size + 1;
    let mut scan = want * FIRST_SCAN_PER_ITEM;
    loop {
        let (mut cond, mut params) = f.events_where();
        if let Some(p) = after {
            cond.push_str(" AND (occurred_at, query_id) < (fromUnixTimestamp64Milli({c_ms:Int64}, 'UTC'), {c_query:UUID})");
            params.push(("c_ms".into(), p.first_ms.to_string()));
            params.push(("c_query".into(), p.query_id.to_string()));
        }
        if let Some(ms) = f.gte_ms {
            cond.push_str(" AND occurred_at >= fromUnixTimestamp64Milli({gte_ms:Int64}, 'UTC')");
            params.push(("gte_ms".into(), ms.to_string()));
        }
        let sql = Sql::new(format!(
            "SELECT toString(query_id) AS id, toInt64(toUnixTimestamp64Milli(occurred_at)) AS ms
             FROM query_events WHERE {cond}
             ORDER BY occurred_at DESC, query_id DESC LIMIT {{scan:UInt64}}"
        ))
        .bind_all(params)
        .bind("scan", scan);
        let events = db.run("query_log_scan", |c| async move { sql.query(&c).fetch_all::<ScannedEvent>().await }).await?;
        let exhausted = events.len() < scan;
        let oldest_read = events.last().map(|e| e.ms).unwrap_or(i64::MIN);
        let mut ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = summaries(db, f.tenant, Some(f.project), ids).await?;
        // Certain: every query whose first event is newer than the oldest
        // event read has that first event among the events read.
        found.retain(|q| (exhausted || q.first_ms > oldest_read) && f.gte_ms.is_none_or(|gte| q.first_ms >= gte));
        if found.len() >= want || exhausted {
            found.sort_unstable_by(|a, b| (b.first_ms, &b.id).cmp(&(a.first_ms, &a.id)));
            found.truncate(want);
            return Ok(found);
        }
        scan *= 4;
    }
}

/// How many queries the filter matches (queries whose first event is in
/// the time bounds and that have an event matching the id filters).
pub async fn total(db: &Db, f: &LogFilter) -> Result<u64, QueryError> {
    let (cond, params) = f.events_where();
    let sql = match f.gte_ms {
        None => Sql::new(format!("SELECT toUInt64(uniqExact(query_id)) FROM query_events WHERE {cond}")).bind_all(params),
        // The lower bound is on the first event: events before it count.
        Some(gte) => Sql::new(format!(
            "SELECT toUInt64(count()) FROM (
               SELECT query_id FROM query_events WHERE {cond} GROUP BY query_id
               HAVING min(occurred_at) >= fromUnixTimestamp64Milli({{gte_ms:Int64}}, 'UTC'))"
        ))
        .bind_all(params)
        .bind("gte_ms", gte),
    };
    db.run("query_log_total", |c| async move { sql.query(&c).fetch_one::<u64>().await }).await
}

/// One query of the tenant, any project; `None` if it has no event.
pub async fn query(db: &Db, tenant: Uuid, query_id: Uuid) -> Result<Option<QuerySummary>, QueryError> {
    Ok(summaries(db, tenant, None, vec![query_id.to_string()]).await?.into_iter().next())
}

/// The kept texts of `ids` (absent: never sent, not stored, or expired).
pub async fn texts(db: &Db, tenant: Uuid, ids: Vec<String>) -> Result<Vec<(String, String)>, QueryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = Sql::new(
        "SELECT toString(query_id), query_text FROM query_texts
         WHERE tenant_id = {tenant:UUID} AND query_id IN {ids:Array(UUID)} AND expire_at > now()
         LIMIT 1 BY query_id",
    )
    .bind("tenant", tenant)
    .bind_list("ids", ids);
    db.run("query_texts", |c| async move { sql.query(&c).fetch_all::<(String, String)>().await }).await
}

/// One tool-call event of a query, for its trace.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct TraceEvent {
    pub event: String,
    pub ms: i64,
    pub call_kind: String,
    pub server: String,
    pub server_name: String,
    pub server_instance: String,
    pub tool_name: String,
    pub latency_ms: f64,
    pub success: bool,
    pub error_message: String,
    pub suggestions_count: u32,
}

/// The tool-call events of a query in the order they happened.
pub async fn trace_events(db: &Db, tenant: Uuid, query_id: Uuid) -> Result<Vec<TraceEvent>, QueryError> {
    let sql = Sql::new(
        "SELECT toString(event_id) AS event, toInt64(toUnixTimestamp64Milli(occurred_at)) AS ms, call_kind,
                toString(server_id) AS server, server_name, toString(server_instance_id) AS server_instance,
                tool_name, latency_ms, success, error_message, suggestions_count
         FROM query_events
         WHERE tenant_id = {tenant:UUID} AND query_id = {query:UUID} AND source = 'tool_call'
         ORDER BY occurred_at, event_id",
    )
    .bind("tenant", tenant)
    .bind("query", query_id);
    db.run("query_trace", |c| async move { sql.query(&c).fetch_all::<TraceEvent>().await }).await
}

/// Keeps [`DateTime`] in the public surface for callers converting ms.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
