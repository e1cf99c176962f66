//! What the usage counters are made of: the per-minute usage of every
//! subject (for the refresher, on its own client, outside the request
//! limits), the executions a reservation waits for, and the organization
//! usage aggregate of `GET /v1/organizations/{id}/usage`, and the past
//! periods of `GET /v1/api/usage/history`.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::calendar::{ceil_hour, floor_hour};
use crate::db::{Db, QueryError};

#[derive(Debug, Row, Deserialize)]
pub struct ExecMinuteRow {
    pub minute_no: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub user_id: Uuid,
    pub executions: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub messages: u64,
    /// `Decimal(38, 6)`: micro-dollars.
    pub cost_usd: i128,
}

#[derive(Debug, Row, Deserialize)]
pub struct ToolMinuteRow {
    pub minute_no: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    pub calls: u64,
}

// The minute reads and the per-hour sums a reconcile compares with them
// must read the same rows with the same sums (an hour whose sums match is
// taken as holding the same rows): one definition of each serves both.

/// The sums of billable executions, as [`ExecMinuteRow`] and [`ExecHourRow`] name them.
macro_rules! exec_sums {
    () => {
        "toUInt64(sum(executions)) AS executions, toUInt64(sum(input_tokens)) AS input_tokens,
        toUInt64(sum(output_tokens)) AS output_tokens, toUInt64(sum(total_tokens)) AS total_tokens,
        toUInt64(sum(messages)) AS messages, toDecimal128(sum(cost_usd), 6) AS cost_usd"
    };
}

/// The billable execution rows of minutes `[from, to)` (epoch seconds).
macro_rules! exec_rows {
    () => {
        "FROM agent_executions_1m
    WHERE billable AND minute >= toDateTime({from:Int64}, 'UTC') AND minute < toDateTime({to:Int64}, 'UTC')"
    };
}

/// The tool-call rows of minutes `[from, to)` (epoch seconds).
macro_rules! tool_rows {
    () => {
        "FROM tool_calls_1m
    WHERE minute >= toDateTime({from:Int64}, 'UTC') AND minute < toDateTime({to:Int64}, 'UTC')"
    };
}

const EXEC_SQL: &str = concat!(
    "SELECT toInt64(intDiv(toUnixTimestamp(minute), 60)) AS minute_no, tenant_id, organization_id, user_id, ",
    exec_sums!(),
    "\n    ",
    exec_rows!(),
    "\n    GROUP BY minute_no, tenant_id, organization_id, user_id"
);

const TOOL_SQL: &str = concat!(
    "SELECT toInt64(intDiv(toUnixTimestamp(minute), 60)) AS minute_no, tenant_id, organization_id, toUInt64(sum(calls)) AS calls\n    ",
    tool_rows!(),
    "\n    GROUP BY minute_no, tenant_id, organization_id"
);

#[derive(Debug, Row, Deserialize)]
pub struct ExecHourRow {
    pub hour_no: i64,
    pub executions: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub messages: u64,
    /// `Decimal(38, 6)`: micro-dollars.
    pub cost_usd: i128,
}

#[derive(Debug, Row, Deserialize)]
pub struct ToolHourRow {
    pub hour_no: i64,
    pub calls: u64,
}

/// [`EXEC_SQL`] summed per hour over every key.
const EXEC_HOURS_SQL: &str = concat!(
    "SELECT toInt64(intDiv(toUnixTimestamp(minute), 3600)) AS hour_no, ",
    exec_sums!(),
    "\n    ",
    exec_rows!(),
    "\n    GROUP BY hour_no"
);

/// [`TOOL_SQL`] summed per hour over every key.
const TOOL_HOURS_SQL: &str = concat!(
    "SELECT toInt64(intDiv(toUnixTimestamp(minute), 3600)) AS hour_no, toUInt64(sum(calls)) AS calls\n    ",
    tool_rows!(),
    "\n    GROUP BY hour_no"
);

const SEEN_SQL: &str = "SELECT DISTINCT execution_id FROM agent_executions
    WHERE tenant_id = {t:UUID} AND occurred_at >= toDateTime64({since_ms:Int64} / 1000, 3, 'UTC')
      AND execution_id IN {ids:Array(UUID)}";

#[derive(Debug, Row, Deserialize)]
struct SeenRow {
    #[serde(with = "clickhouse::serde::uuid")]
    execution_id: Uuid,
}

/// Minutes `[from, to)` (minute numbers since the epoch) of both rollups,
/// billable executions only.
pub async fn minutes(db: &clickhouse::Client, from: i64, to: i64) -> clickhouse::error::Result<(Vec<ExecMinuteRow>, Vec<ToolMinuteRow>)> {
    let exec = db.query(EXEC_SQL).param("from", from * 60).param("to", to * 60).fetch_all().await?;
    let tools = db.query(TOOL_SQL).param("from", from * 60).param("to", to * 60).fetch_all().await?;
    Ok((exec, tools))
}

/// The sums of [`minutes`] `[from, to)` per hour, over every tenant,
/// organization and user: two aggregates that send a row per hour.
pub async fn hour_sums(db: &clickhouse::Client, from: i64, to: i64) -> clickhouse::error::Result<(Vec<ExecHourRow>, Vec<ToolHourRow>)> {
    let exec = db.query(EXEC_HOURS_SQL).param("from", from * 60).param("to", to * 60).fetch_all().await?;
    let tools = db.query(TOOL_HOURS_SQL).param("from", from * 60).param("to", to * 60).fetch_all().await?;
    Ok((exec, tools))
}

/// Execution ids among `ids` that ClickHouse holds with `occurred_at >= since`.
pub async fn seen_executions(
    db: &clickhouse::Client,
    tenant: Uuid,
    ids: &[Uuid],
    since: DateTime<Utc>,
) -> clickhouse::error::Result<Vec<Uuid>> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows: Vec<SeenRow> =
        db.query(SEEN_SQL).param("t", tenant.to_string()).param("since_ms", since.timestamp_millis()).param("ids", ids).fetch_all().await?;
    Ok(rows.into_iter().map(|r| r.execution_id).collect())
}

/// Billable usage of one organization in `[start, end)`.
#[derive(Debug, Row, Deserialize)]
pub struct OrgTotals {
    pub messages: u64,
    pub total_tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Micro-dollars of the executions whose cost is known.
    pub cost_usd: i128,
    /// Executions whose cost is not known (`cost_known = false`).
    pub unpriced_executions: u64,
    pub executions: u64,
}

// The three sources of [`OrgTotals`] must sum alike (a period is answered
// from whichever applies): one list of sums over rows named like the
// rollups, and one shape of the raw executions as such rows.

/// The sums of [`OrgTotals`], over rows with the execution rollups' names.
macro_rules! org_sums {
    () => {
        "SELECT toUInt64(sum(messages)) AS messages, toUInt64(sum(total_tokens)) AS total_tokens,
        toUInt64(sum(input_tokens)) AS input_tokens, toUInt64(sum(output_tokens)) AS output_tokens,
        toDecimal128(sum(cost_usd), 6) AS cost_usd, toUInt64(sum(unpriced_executions)) AS unpriced_executions,
        toUInt64(sum(executions)) AS executions"
    };
}

/// The organization's billable raw executions, one row each with the
/// rollups' column names; the caller adds the time condition.
macro_rules! org_raw_rows {
    () => {
        "SELECT messages_count AS messages, total_tokens, input_tokens, output_tokens, cost_usd,
               toUInt64(NOT cost_known) AS unpriced_executions, toUInt64(1) AS executions
        FROM agent_executions
        WHERE tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable"
    };
}

/// Whole minutes from `agent_executions_1m`.
const AGG_ROLLUP_SQL: &str = concat!(
    org_sums!(),
    "
    FROM agent_executions_1m
    WHERE tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable
      AND minute >= toDateTime64({from_ms:Int64} / 1000, 3, 'UTC') AND minute < toDateTime64({to_ms:Int64} / 1000, 3, 'UTC')"
);

/// The raw executions of the period, to the millisecond.
const AGG_RAW_SQL: &str = concat!(
    org_sums!(),
    "
    FROM (",
    org_raw_rows!(),
    "
          AND occurred_at >= toDateTime64({from_ms:Int64} / 1000, 3, 'UTC') AND occurred_at < toDateTime64({to_ms:Int64} / 1000, 3, 'UTC'))"
);

/// The whole hours `[hs, he)` from `agent_executions_1h` (migration 0016:
/// organization and `billable` are among its keys) and the rest of the
/// period, to the millisecond, from the raw executions: a week is ~170 hour
/// rows per key and at most two hours of raw rows, where the minute rollup
/// holds about a row per execution.
const AGG_HOURS_SQL: &str = concat!(
    org_sums!(),
    "
    FROM (
        SELECT messages, total_tokens, input_tokens, output_tokens, cost_usd, unpriced_executions, executions
        FROM agent_executions_1h
        WHERE tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable
          AND hour >= toDateTime({hs:Int64}, 'UTC') AND hour < toDateTime({he:Int64}, 'UTC')
        UNION ALL
        ",
    org_raw_rows!(),
    "
          AND (occurred_at >= toDateTime64({from_ms:Int64} / 1000, 3, 'UTC') AND occurred_at < toDateTime({hs:Int64}, 'UTC')
               OR occurred_at >= toDateTime({he:Int64}, 'UTC') AND occurred_at < toDateTime64({to_ms:Int64} / 1000, 3, 'UTC')))"
);

/// [`OrgTotals`] of `[start, end)`: the whole hours from the hourly rollup
/// and the rest from the raw table when the period holds a whole hour;
/// else from the minute rollup when both ends are whole minutes, or from
/// the raw table.
pub async fn org_totals(
    db: &Db,
    tenant: Uuid,
    org: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    whole_minutes: bool,
) -> Result<OrgTotals, QueryError> {
    let (hs, he) = (ceil_hour(start), floor_hour(end));
    let sql = if hs < he {
        AGG_HOURS_SQL
    } else if whole_minutes {
        AGG_ROLLUP_SQL
    } else {
        AGG_RAW_SQL
    };
    db.run("usage_org_aggregate", |c| async move {
        let q = c
            .query(sql)
            .param("t", tenant.to_string())
            .param("o", org.to_string())
            .param("from_ms", start.timestamp_millis())
            .param("to_ms", end.timestamp_millis());
        let q = if hs < he { q.param("hs", hs.timestamp()).param("he", he.timestamp()) } else { q };
        q.fetch_one().await
    })
    .await
}

/// Billable usage of one period of a usage history.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
pub struct PeriodTotals {
    pub executions: u64,
    pub messages: u64,
    pub total_tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Micro-dollars.
    pub cost_usd: i128,
}

#[derive(Debug, Row, Deserialize)]
struct PeriodRow {
    idx: u32,
    executions: u64,
    messages: u64,
    total_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: i128,
}

/// The subject of a usage history: an organization, or one user of it.
const SUBJECT: &str = "tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable
      AND ({all_users:UInt8} = 1 OR user_id = {u:UUID})";

/// Usage of contiguous periods from the minute rollup: `starts` are the
/// periods' starts (epoch seconds, ascending, whole minutes), `end` the
/// last period's end; one entry per period, zero-filled.
pub async fn period_totals(
    db: &Db,
    tenant: Uuid,
    org: Uuid,
    user: Option<Uuid>,
    starts: Vec<i64>,
    end: i64,
) -> Result<Vec<PeriodTotals>, QueryError> {
    let n = starts.len();
    let Some(&first) = starts.first() else { return Ok(Vec::new()) };
    let sql = format!(
        "SELECT toUInt32(arrayCount(s -> s <= toInt64(toUnixTimestamp(minute)), {{starts:Array(Int64)}})) AS idx,
            toUInt64(sum(executions)) AS executions, toUInt64(sum(messages)) AS messages,
            toUInt64(sum(total_tokens)) AS total_tokens, toUInt64(sum(input_tokens)) AS input_tokens,
            toUInt64(sum(output_tokens)) AS output_tokens, toDecimal128(sum(cost_usd), 6) AS cost_usd
        FROM agent_executions_1m
        WHERE {SUBJECT} AND minute >= toDateTime({{from:Int64}}, 'UTC') AND minute < toDateTime({{to:Int64}}, 'UTC')
        GROUP BY idx"
    );
    let rows: Vec<PeriodRow> = db
        .run("usage_history", |c| async move {
            c.query(&sql)
                .param("t", tenant.to_string())
                .param("o", org.to_string())
                .param("all_users", u8::from(user.is_none()))
                .param("u", user.unwrap_or_default().to_string())
                .param("starts", starts)
                .param("from", first)
                .param("to", end)
                .fetch_all()
                .await
        })
        .await?;
    let mut out = vec![PeriodTotals::default(); n];
    for r in rows {
        if let Some(slot) = (r.idx as usize).checked_sub(1).and_then(|i| out.get_mut(i)) {
            *slot = PeriodTotals {
                executions: r.executions,
                messages: r.messages,
                total_tokens: r.total_tokens,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: r.cost_usd,
            };
        }
    }
    Ok(out)
}

/// The minute of the subject's earliest retained billable usage, if any.
pub async fn first_usage(db: &Db, tenant: Uuid, org: Uuid, user: Option<Uuid>) -> Result<Option<DateTime<Utc>>, QueryError> {
    let sql =
        format!("SELECT toInt64(toUnixTimestamp(min(minute))) AS first, toUInt64(count()) AS n FROM agent_executions_1m WHERE {SUBJECT}");
    let (first, n): (i64, u64) = db
        .run("usage_first", |c| async move {
            c.query(&sql)
                .param("t", tenant.to_string())
                .param("o", org.to_string())
                .param("all_users", u8::from(user.is_none()))
                .param("u", user.unwrap_or_default().to_string())
                .fetch_one()
                .await
        })
        .await?;
    Ok((n > 0).then(|| DateTime::from_timestamp(first, 0)).flatten())
}
