//! SQL of a project's end users (`GET /api/v1/projects/{project_id}/users`
//! and `.../users/{user_id}`), from the user rollups of migration 0013:
//! who the users are, their first and last event and e-mail from
//! `project_users_1mon` (a row per user and month), their weekly figures
//! from `tool_calls_user_1h` and `agent_executions_user_1h` for the page's
//! users only (the raw events for the minutes at either end of the week),
//! and the project's server instances from `project_servers_1mon`. A page
//! then reads a few rows per user whatever the length of the project's
//! history. Filtered by server instance (which the user rollups leave
//! out) the list reads the raw `tool_calls` and `agent_executions`
//! tables, as does the detail's list of used servers.
//!
//! * A project user is a `user_token_id` with at least one event (a tool
//!   call, or an agent execution such as a `navigator_query`) in the
//!   project within the data's retention. Events without a user token are
//!   nobody's.
//! * E-mail: the latest non-empty `user_email` of the user's events.
//! * Weekly figures over `[week_start, end)`: `tool` calls (proxy calls are
//!   not tool calls, as everywhere in the API) and queries, counted as
//!   everywhere (docs/api.md, "How queries are counted"): once, at the
//!   user's `navigator_query` execution, zero-call queries included; tool
//!   calls whose query sent no execution are tool calls, not queries.
//! * Order and cursor: first event time, then user id, both descending
//!   (newest users first). A user's first event does not move when events
//!   are added (except an event older than it arriving late), so pages
//!   are stable under concurrent inserts: new users appear before the
//!   first page, never between pages.
//!
//! * Events dated after the request's time (ingest accepts up to an hour
//!   of clock skew) count in the first and last event times of the
//!   rollup path (its months are whole); the weekly figures end at the
//!   request's time exactly.
//!
//! Every read names the tenant and the project (the tables' sort key
//! starts with the tenant, so other tenants' rows are never read).

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::analytics::rollup::split;
use super::sql::Sql;
use crate::db::{Db, QueryError};
use crate::window::TimeRange;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

/// A point of the page order: a user's first event (ms) and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserPosition {
    pub first_ms: i64,
    pub user_id: Uuid,
}

/// What a users page is filtered by (tenant and project always).
#[derive(Debug, Clone)]
pub struct UserFilter {
    pub tenant: Uuid,
    pub project: Uuid,
    /// Case-insensitive substring of the e-mail, or the exact user id.
    pub search: Option<String>,
    /// Users with a tool call to any of these server instances.
    pub server_instances: Vec<Uuid>,
    /// Start of the weekly figures (inclusive) and the end of everything (exclusive).
    pub week_start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One project user with the figures the list and the detail show.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct ProjectUser {
    pub id: String,
    pub email: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub weekly_queries: u64,
    pub weekly_tool_calls: u64,
    /// Users matching the filter over all pages (a window over the groups,
    /// so a page and its total are one scan).
    pub total: u64,
}

/// The events of the project's users, both kinds, as one relation
/// (`uid, at, mail, is_query, is_tool[, server]`), of one user when
/// `one_user`: `is_query` marks a `navigator_query` execution (a query).
fn events_sql(with_servers: bool, one_user: bool) -> String {
    let server = if with_servers { ", server_instance_id AS server" } else { "" };
    let exec_server = if with_servers { format!(", {NIL} AS server") } else { String::new() };
    let user = if one_user { "user_token_id = {user:UUID}" } else { "user_token_id != toUUID('00000000-0000-0000-0000-000000000000')" };
    format!(
        "SELECT user_token_id AS uid, occurred_at AS at, user_email AS mail, false AS is_query, call_kind = 'tool' AS is_tool{server}
         FROM tool_calls
         WHERE tenant_id = {{tenant:UUID}} AND project_id = {{project:UUID}} AND {user}
           AND occurred_at < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')
         UNION ALL
         SELECT user_token_id AS uid, occurred_at AS at, user_email AS mail,
                execution_kind = 'navigator_query' AND execution_id != {NIL} AS is_query, false AS is_tool{exec_server}
         FROM agent_executions
         WHERE tenant_id = {{tenant:UUID}} AND project_id = {{project:UUID}} AND {user}
           AND occurred_at < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')"
    )
}

const USER_SELECT: &str = "SELECT toString(uid) AS id,
        toString(argMaxIf(mail, at, mail != '')) AS email,
        toInt64(toUnixTimestamp64Milli(min(at))) AS first_ms,
        toInt64(toUnixTimestamp64Milli(max(at))) AS last_ms,
        toUInt64(countIf(is_query AND at >= fromUnixTimestamp64Milli({week_ms:Int64}, 'UTC'))) AS weekly_queries,
        toUInt64(countIf(is_tool AND at >= fromUnixTimestamp64Milli({week_ms:Int64}, 'UTC'))) AS weekly_tool_calls,
        toUInt64(count() OVER ()) AS total";

impl UserFilter {
    /// The grouped users matching the filter (no cursor), as a statement
    /// ending in its `HAVING` clause, and its parameters; `one` restricts
    /// it to one user.
    fn grouped(&self, one: Option<Uuid>) -> Sql {
        let with_servers = !self.server_instances.is_empty();
        let mut having = vec!["1".to_owned()];
        let mut sql = Sql::new("")
            .bind("tenant", self.tenant)
            .bind("project", self.project)
            .bind("end_ms", self.end.timestamp_millis())
            .bind("week_ms", self.week_start.timestamp_millis());
        if let Some(u) = one {
            sql = sql.bind("user", u);
        }
        if let Some(s) = &self.search {
            having.push("(positionCaseInsensitiveUTF8(email, {search:String}) > 0 OR id = lower({search:String}))".to_owned());
            sql = sql.bind("search", s);
        }
        if with_servers {
            having.push("countIf(server IN {servers:Array(UUID)}) > 0".to_owned());
            sql = sql.bind_list("servers", self.server_instances.iter().map(Uuid::to_string).collect());
        }
        sql.text = format!("{USER_SELECT} FROM ({}) GROUP BY uid HAVING {}", events_sql(with_servers, one.is_some()), having.join(" AND "));
        sql
    }
}

/// The project's users (without weekly figures) from `project_users_1mon`,
/// as [`UserFilter::grouped`] has them: one row per user.
const SUMMARY_SELECT: &str = "SELECT toString(user_token_id) AS id,
        toString(argMaxIfMerge(email)) AS mail,
        toInt64(toUnixTimestamp64Milli(min(first_at))) AS first_ms,
        toInt64(toUnixTimestamp64Milli(max(last_at))) AS last_ms,
        toUInt64(count() OVER ()) AS total
    FROM project_users_1mon";

impl UserFilter {
    /// Whether the user rollups answer: every filter but the server
    /// instances.
    fn rollups_answer(&self) -> bool {
        self.server_instances.is_empty()
    }

    /// [`UserFilter::grouped`] from `project_users_1mon`, with zero weekly
    /// figures (see [`weekly`]).
    fn summaries(&self, one: Option<Uuid>) -> Sql {
        let mut conditions = vec![
            "tenant_id = {tenant:UUID}",
            "project_id = {project:UUID}",
            "month <= toStartOfMonth(fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC'))",
        ];
        let mut sql = Sql::new("").bind("tenant", self.tenant).bind("project", self.project).bind("end_ms", self.end.timestamp_millis());
        if let Some(u) = one {
            conditions.push("user_token_id = {user:UUID}");
            sql = sql.bind("user", u);
        }
        let mut having = "1";
        if let Some(s) = &self.search {
            having = "(positionCaseInsensitiveUTF8(mail, {search:String}) > 0 OR id = lower({search:String}))";
            sql = sql.bind("search", s);
        }
        sql.text = format!(
            "SELECT id, mail AS email, first_ms, last_ms, toUInt64(0) AS weekly_queries, toUInt64(0) AS weekly_tool_calls, total
             FROM ({SUMMARY_SELECT} WHERE {} GROUP BY user_token_id HAVING {having})",
            conditions.join(" AND ")
        );
        sql
    }
}

/// Weekly figures of some users.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct Weekly {
    id: String,
    weekly_queries: u64,
    weekly_tool_calls: u64,
}

/// Fills in the weekly figures of `users` (over `[week_start, end)`):
/// `agent_executions_user_1h` and `tool_calls_user_1h` for the whole
/// hours, the raw events for the minutes at either end, all restricted to
/// these users.
async fn weekly(db: &Db, f: &UserFilter, users: &mut [ProjectUser]) -> Result<(), QueryError> {
    if users.is_empty() {
        return Ok(());
    }
    let week = TimeRange { start: f.week_start, end: f.end };
    let (hours, edges): (Option<TimeRange>, Vec<TimeRange>) = match split(week, None) {
        Some(s) => (Some(s.whole), s.edges().collect()),
        None => (None, vec![week]),
    };
    let keys = "tenant_id = {tenant:UUID} AND project_id = {project:UUID} AND user_token_id IN {users:Array(UUID)}";
    let mut sql =
        Sql::new("").bind("tenant", f.tenant).bind("project", f.project).bind_list("users", users.iter().map(|u| u.id.clone()).collect());
    let mut branches = Vec::new();
    if let Some(h) = hours {
        let hour = "hour >= toDateTime({h_s:Int64}, 'UTC') AND hour < toDateTime({h_e:Int64}, 'UTC')";
        branches
            .push(format!("SELECT user_token_id, queries AS q, toUInt64(0) AS c FROM agent_executions_user_1h WHERE {keys} AND {hour}"));
        branches.push(format!(
            "SELECT user_token_id, toUInt64(0) AS q, calls AS c FROM tool_calls_user_1h WHERE {keys} AND {hour} AND call_kind = 'tool'"
        ));
        sql = sql.bind("h_s", h.start.timestamp()).bind("h_e", h.end.timestamp());
    }
    for (i, e) in edges.iter().enumerate() {
        let at = format!(
            "occurred_at >= fromUnixTimestamp64Milli({{e{i}_s:Int64}}, 'UTC') AND occurred_at < fromUnixTimestamp64Milli({{e{i}_e:Int64}}, 'UTC')"
        );
        branches.push(format!(
            "SELECT user_token_id, toUInt64(1) AS q, toUInt64(0) AS c FROM agent_executions
             WHERE {keys} AND {at} AND execution_kind = 'navigator_query' AND execution_id != {NIL}"
        ));
        branches.push(format!(
            "SELECT user_token_id, toUInt64(0) AS q, toUInt64(1) AS c FROM tool_calls WHERE {keys} AND {at} AND call_kind = 'tool'"
        ));
        sql = sql.bind(&format!("e{i}_s"), e.start.timestamp_millis()).bind(&format!("e{i}_e"), e.end.timestamp_millis());
    }
    sql.text = format!(
        "SELECT toString(user_token_id) AS id, toUInt64(sum(q)) AS weekly_queries, toUInt64(sum(c)) AS weekly_tool_calls
         FROM ({}) GROUP BY user_token_id",
        branches.join(" UNION ALL ")
    );
    let rows = db.run("project_users_weekly", |c| async move { sql.query(&c).fetch_all::<Weekly>().await }).await?;
    let by_id: std::collections::HashMap<String, Weekly> = rows.into_iter().map(|w| (w.id.clone(), w)).collect();
    for u in users.iter_mut() {
        if let Some(w) = by_id.get(&u.id) {
            u.weekly_queries = w.weekly_queries;
            u.weekly_tool_calls = w.weekly_tool_calls;
        }
    }
    Ok(())
}

/// The users of one page, newest first: at most `size + 1` (one more tells
/// whether there is a next page), all strictly after `after` in page order.
/// Each row carries the filter's `total` over all pages, computed before
/// the cursor applies.
pub async fn page(db: &Db, f: &UserFilter, after: Option<UserPosition>, size: usize) -> Result<Vec<ProjectUser>, QueryError> {
    let rollups = f.rollups_answer();
    let mut sql = if rollups { f.summaries(None) } else { f.grouped(None) };
    let mut outer = "1".to_owned();
    if let Some(p) = after {
        outer = "(first_ms, toUUID(id)) < ({c_ms:Int64}, {c_user:UUID})".to_owned();
        sql = sql.bind("c_ms", p.first_ms).bind("c_user", p.user_id);
    }
    sql.text = format!(
        "SELECT id, email, first_ms, last_ms, weekly_queries, weekly_tool_calls, total FROM ({})
         WHERE {outer} ORDER BY first_ms DESC, toUUID(id) DESC LIMIT {{want:UInt64}}",
        sql.text
    );
    let sql = sql.bind("want", size + 1);
    let mut users = db.run("project_users_page", |c| async move { sql.query(&c).fetch_all::<ProjectUser>().await }).await?;
    if rollups {
        weekly(db, f, &mut users).await?;
    }
    Ok(users)
}

/// How many users match the filter (all pages): for a page that came back
/// empty after a cursor, whose rows carry no total.
pub async fn total(db: &Db, f: &UserFilter) -> Result<u64, QueryError> {
    let mut sql = if f.rollups_answer() { f.summaries(None) } else { f.grouped(None) };
    sql.text = format!("SELECT toUInt64(count()) FROM ({})", sql.text);
    db.run("project_users_total", |c| async move { sql.query(&c).fetch_one::<u64>().await }).await
}

/// One user of the project, `None` when the user has no event there.
pub async fn user(db: &Db, f: &UserFilter, user: Uuid) -> Result<Option<ProjectUser>, QueryError> {
    let rollups = f.rollups_answer();
    let sql = if rollups { f.summaries(Some(user)) } else { f.grouped(Some(user)) };
    let mut users = db.run("project_user", |c| async move { sql.query(&c).fetch_all::<ProjectUser>().await }).await?;
    users.truncate(1);
    if rollups {
        weekly(db, f, &mut users).await?;
    }
    Ok(users.into_iter().next())
}

/// Distinct server instances the project's tool calls reached (within
/// retention): the events' view of the project's server instances, from
/// `project_servers_1mon` (months up to `end`'s).
pub async fn server_instances(db: &Db, tenant: Uuid, project: Uuid, end: DateTime<Utc>) -> Result<u64, QueryError> {
    let sql = Sql::new(
        "SELECT toUInt64(uniqExact(server_instance_id)) FROM project_servers_1mon
         WHERE tenant_id = {tenant:UUID} AND project_id = {project:UUID}
           AND month <= toStartOfMonth(fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC'))",
    )
    .bind("tenant", tenant)
    .bind("project", project)
    .bind("end_ms", end.timestamp_millis());
    db.run("project_server_instances", |c| async move { sql.query(&c).fetch_one::<u64>().await }).await
}

/// A server instance one user's tool calls reached.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct UsedServer {
    pub server_instance: String,
    pub server: String,
    pub server_name: String,
    pub tool_calls: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The server instances a user called tools on in the project, most
/// recently used first.
pub async fn used_servers(db: &Db, tenant: Uuid, project: Uuid, user: Uuid, end: DateTime<Utc>) -> Result<Vec<UsedServer>, QueryError> {
    let sql = Sql::new(format!(
        "SELECT toString(server_instance_id) AS server_instance,
                toString(argMax(server_id, occurred_at)) AS server,
                toString(argMax(server_name, occurred_at)) AS server_name,
                toUInt64(countIf(call_kind = 'tool')) AS tool_calls,
                toInt64(toUnixTimestamp64Milli(min(occurred_at))) AS first_ms,
                toInt64(toUnixTimestamp64Milli(max(occurred_at))) AS last_ms
         FROM tool_calls
         WHERE tenant_id = {{tenant:UUID}} AND project_id = {{project:UUID}} AND user_token_id = {{user:UUID}}
           AND server_instance_id != {NIL} AND occurred_at < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')
         GROUP BY server_instance_id ORDER BY last_ms DESC, server_instance LIMIT 1000"
    ))
    .bind("tenant", tenant)
    .bind("project", project)
    .bind("user", user)
    .bind("end_ms", end.timestamp_millis());
    db.run("project_user_servers", |c| async move { sql.query(&c).fetch_all::<UsedServer>().await }).await
}
