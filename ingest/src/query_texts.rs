//! Writes the text of navigator queries to `query_texts`, apart from the
//! metering rows (migration 0006). A text is content and may be personal
//! data: it has its own retention (`expire_at`, from
//! `--query-text-retention-days`; 0 = never stored) and never enters
//! `agent_executions` or a rollup.
//!
//! The table is a `ReplacingMergeTree` keyed by `(tenant_id, query_id)`, so
//! a text written again (a redelivered batch, a retry whose first attempt
//! landed) replaces itself: no deduplication token is needed.

use std::time::Duration;

use agentmeter_schema::rows::QueryTextRow;
use clickhouse::Client;

/// The table of query texts.
pub const TABLE: &str = "query_texts";

/// One INSERT of `rows`.
pub async fn insert(client: &Client, rows: &[QueryTextRow], timeout: Duration) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<QueryTextRow>(TABLE).await?.with_timeouts(Some(timeout), Some(timeout));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
