//! 0013: rollups that keep the end user, so that figures filtered by a user
//! (`user_email` on the analytics and Grafana endpoints, `user_token_id` on
//! the per-user analytics and the project users list) are sums over a few
//! rows per user-hour instead of scans of the raw events (issue #12).
//!
//! * `tool_calls_user_1h`: the tool-call aggregates (counts, errors,
//!   latency sum and t-digest, runtime, suggestions) per (tenant, hour,
//!   call kind, project, navigator, navigator instance, user token, user
//!   e-mail): `tool_calls_navigator_1h` with the user. No server, tool or
//!   error type: a user filter combined with those stays on the raw table.
//! * `agent_executions_user_1h`: per (tenant, hour, project, navigator,
//!   navigator instance, user token, user e-mail) the queries (the
//!   `navigator_query` executions with an id, counted as
//!   `query_counts_1h` counts them), and the executions, unpriced
//!   executions, tokens, cost and messages of every kind of execution (the
//!   execution metrics of `/api/v1/query/timeseries`).
//! * `project_users_1mon`: per (tenant, project, user token, month) the
//!   first and last event time (tool calls and executions) and the latest
//!   non-empty e-mail (`argMaxIf` state): the users list orders and pages
//!   a few rows per user instead of every event of the project's history.
//! * `project_servers_1mon`: the server instances a project's tool calls
//!   reached, per month: the list's `total_project_server_instances`.
//!
//! The hourly tables are sorted by (tenant, project, user token, hour):
//! one user's rows are together, so a request for one user reads that
//! user's rows; a `user_email` filter without a project uses the bloom
//! filter index on the e-mail. Monthly partitions and the 400-day TTL of
//! the other rollups; the monthly tables keep a month until its last day
//! is 400 days old (their raw events expire then). Every view is
//! backfilled from the rows already in its source table (see [`Backfill`]).

use super::execution_aggregates::{COLUMNS as EXECUTION_COLUMNS, SELECT as EXECUTION_AGGREGATES};
use super::tool_call_aggregates::{COLUMNS as AGGREGATES_COLUMNS, SELECT as AGGREGATES};
use super::{Backfill, Migration};

pub struct UserRollups;

const NIL: &str = "toUUID('00000000-0000-0000-0000-000000000000')";

const CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

fn tool_calls_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, call_kind, project_id, navigator_id, navigator_instance_id,
    user_token_id, user_email,
    {AGGREGATES}
FROM tool_calls"
    )
}

const TOOL_CALLS_GROUP: &str =
    "GROUP BY tenant_id, hour, call_kind, project_id, navigator_id, navigator_instance_id, user_token_id, user_email";

fn executions_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, project_id, navigator_id, navigator_instance_id,
    user_token_id, user_email,
    toUInt64(countIf(execution_kind = 'navigator_query' AND execution_id != {NIL})) AS queries,
    {EXECUTION_AGGREGATES}
FROM agent_executions"
    )
}

const EXECUTIONS_GROUP: &str = "GROUP BY tenant_id, hour, project_id, navigator_id, navigator_instance_id, user_token_id, user_email";

/// The users of both raw tables, per month.
fn users_select(table: &str) -> String {
    format!(
        "SELECT tenant_id, toStartOfMonth(occurred_at) AS month, project_id, user_token_id,
    min(occurred_at) AS first_at, max(occurred_at) AS last_at,
    argMaxIfState(user_email, occurred_at, toUInt8(user_email != '')) AS email
FROM {table}
WHERE user_token_id != {NIL}"
    )
}

const USERS_GROUP: &str = "GROUP BY tenant_id, month, project_id, user_token_id";

fn servers_select() -> String {
    format!(
        "SELECT tenant_id, toStartOfMonth(occurred_at) AS month, project_id, server_instance_id, toUInt64(count()) AS calls
FROM tool_calls
WHERE server_instance_id != {NIL}"
    )
}

const SERVERS_GROUP: &str = "GROUP BY tenant_id, month, project_id, server_instance_id";

fn backfill(view: &'static str, target: &'static str, select: &str, group: &str, has_where: bool) -> Backfill {
    let and = if has_where { "AND" } else { "WHERE" };
    Backfill {
        view,
        target,
        create_view: format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {target} AS {select} {group}"),
        select_before_cutoff: format!("{select} {and} {CUTOFF} {group}"),
    }
}

impl Migration for UserRollups {
    fn version(&self) -> u32 {
        13
    }
    fn name(&self) -> &'static str {
        "user_rollups"
    }
    fn statements(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS tool_calls_user_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                call_kind LowCardinality(String),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                user_token_id UUID,
                user_email String,
                {AGGREGATES_COLUMNS},
                INDEX user_email_bloom user_email TYPE bloom_filter(0.01) GRANULARITY 1
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, project_id, user_token_id, hour, call_kind, navigator_instance_id, navigator_id, user_email)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS agent_executions_user_1h (
                tenant_id UUID,
                hour DateTime('UTC'),
                project_id UUID,
                navigator_id UUID,
                navigator_instance_id UUID,
                user_token_id UUID,
                user_email String,
                queries SimpleAggregateFunction(sum, UInt64),
                {EXECUTION_COLUMNS},
                INDEX user_email_bloom user_email TYPE bloom_filter(0.01) GRANULARITY 1
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(hour)
            ORDER BY (tenant_id, project_id, user_token_id, hour, navigator_instance_id, navigator_id, user_email)
            TTL hour + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
            ),
            "CREATE TABLE IF NOT EXISTS project_users_1mon (
                tenant_id UUID,
                month Date,
                project_id UUID,
                user_token_id UUID,
                first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
                last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
                email AggregateFunction(argMaxIf, String, DateTime64(3, 'UTC'), UInt8)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(month)
            ORDER BY (tenant_id, project_id, user_token_id, month)
            TTL month + INTERVAL 1 MONTH + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
            "CREATE TABLE IF NOT EXISTS project_servers_1mon (
                tenant_id UUID,
                month Date,
                project_id UUID,
                server_instance_id UUID,
                calls SimpleAggregateFunction(sum, UInt64)
            ) ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(month)
            ORDER BY (tenant_id, project_id, server_instance_id, month)
            TTL month + INTERVAL 1 MONTH + INTERVAL 400 DAY
            SETTINGS non_replicated_deduplication_window = 10000"
                .into(),
        ]
    }
    fn backfills(&self) -> Vec<Backfill> {
        vec![
            backfill("tool_calls_user_1h_mv", "tool_calls_user_1h", &tool_calls_select(), TOOL_CALLS_GROUP, false),
            backfill("agent_executions_user_1h_mv", "agent_executions_user_1h", &executions_select(), EXECUTIONS_GROUP, false),
            backfill("project_users_1mon_calls_mv", "project_users_1mon", &users_select("tool_calls"), USERS_GROUP, true),
            backfill("project_users_1mon_executions_mv", "project_users_1mon", &users_select("agent_executions"), USERS_GROUP, true),
            backfill("project_servers_1mon_mv", "project_servers_1mon", &servers_select(), SERVERS_GROUP, true),
        ]
    }
    fn rollback(&self) -> &'static str {
        "DROP VIEW tool_calls_user_1h_mv; DROP VIEW agent_executions_user_1h_mv; DROP VIEW project_users_1mon_calls_mv; \
         DROP VIEW project_users_1mon_executions_mv; DROP VIEW project_servers_1mon_mv; DROP TABLE tool_calls_user_1h; \
         DROP TABLE agent_executions_user_1h; DROP TABLE project_users_1mon; DROP TABLE project_servers_1mon; \
         ALTER TABLE rollup_backfills DELETE WHERE view IN ('tool_calls_user_1h_mv', 'agent_executions_user_1h_mv', \
         'project_users_1mon_calls_mv', 'project_users_1mon_executions_mv', 'project_servers_1mon_mv')"
    }
}
