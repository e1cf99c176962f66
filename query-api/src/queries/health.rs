//! The store's liveness probe (`GET /api/v1/analytics/health`).

use crate::db::{Db, QueryError};

/// `SELECT 1` through the usual limits: Ok when ClickHouse answers.
pub async fn ping(db: &Db) -> Result<(), QueryError> {
    db.run("health", |c| async move { c.query("SELECT 1").fetch_one::<u8>().await }).await.map(|_| ())
}
