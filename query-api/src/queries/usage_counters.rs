//! What the usage counters are made of: the per-minute usage of every
//! subject (for the refresher, on its own client, outside the request
//! limits), the executions a reservation waits for, and the organization
//! usage aggregate of `GET /v1/organizations/{id}/usage`.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

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

const EXEC_SQL: &str = "SELECT toInt64(intDiv(toUnixTimestamp(minute), 60)) AS minute_no, tenant_id, organization_id, user_id,
        toUInt64(sum(executions)) AS executions, toUInt64(sum(input_tokens)) AS input_tokens,
        toUInt64(sum(output_tokens)) AS output_tokens, toUInt64(sum(total_tokens)) AS total_tokens,
        toUInt64(sum(messages)) AS messages, toDecimal128(sum(cost_usd), 6) AS cost_usd
    FROM agent_executions_1m
    WHERE billable AND minute >= toDateTime({from:Int64}, 'UTC') AND minute < toDateTime({to:Int64}, 'UTC')
    GROUP BY minute_no, tenant_id, organization_id, user_id";

const TOOL_SQL: &str = "SELECT toInt64(intDiv(toUnixTimestamp(minute), 60)) AS minute_no, tenant_id, organization_id,
        toUInt64(sum(calls)) AS calls
    FROM tool_calls_1m
    WHERE minute >= toDateTime({from:Int64}, 'UTC') AND minute < toDateTime({to:Int64}, 'UTC')
    GROUP BY minute_no, tenant_id, organization_id";

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
    pub cost_usd: i128,
}

const AGG_ROLLUP_SQL: &str = "SELECT toUInt64(sum(messages)) AS messages, toUInt64(sum(total_tokens)) AS total_tokens,
        toUInt64(sum(input_tokens)) AS input_tokens, toUInt64(sum(output_tokens)) AS output_tokens,
        toDecimal128(sum(cost_usd), 6) AS cost_usd
    FROM agent_executions_1m
    WHERE tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable
      AND minute >= toDateTime64({from_ms:Int64} / 1000, 3, 'UTC') AND minute < toDateTime64({to_ms:Int64} / 1000, 3, 'UTC')";

const AGG_RAW_SQL: &str = "SELECT toUInt64(sum(messages_count)) AS messages, toUInt64(sum(total_tokens)) AS total_tokens,
        toUInt64(sum(input_tokens)) AS input_tokens, toUInt64(sum(output_tokens)) AS output_tokens,
        toDecimal128(sum(cost_usd), 6) AS cost_usd
    FROM agent_executions
    WHERE tenant_id = {t:UUID} AND organization_id = {o:UUID} AND billable
      AND occurred_at >= toDateTime64({from_ms:Int64} / 1000, 3, 'UTC') AND occurred_at < toDateTime64({to_ms:Int64} / 1000, 3, 'UTC')";

/// [`OrgTotals`] of `[start, end)`: from the minute rollup when both ends
/// are whole minutes, else from the raw table.
pub async fn org_totals(
    db: &Db,
    tenant: Uuid,
    org: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    whole_minutes: bool,
) -> Result<OrgTotals, QueryError> {
    let sql = if whole_minutes { AGG_ROLLUP_SQL } else { AGG_RAW_SQL };
    db.run("usage_org_aggregate", |c| async move {
        c.query(sql)
            .param("t", tenant.to_string())
            .param("o", org.to_string())
            .param("from_ms", start.timestamp_millis())
            .param("to_ms", end.timestamp_millis())
            .fetch_one()
            .await
    })
    .await
}
