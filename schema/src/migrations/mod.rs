//! Numbered ClickHouse migrations and the runner behind `agentmeter-migrate`.
//!
//! Each migration is a struct implementing [`Migration`], listed once in
//! [`all`]. A migration is a list of idempotent statements (`IF NOT EXISTS`
//! everywhere), so applying it twice, or from two processes at once, leaves
//! the same schema; the runner then records it in `schema_migrations`
//! (a `ReplacingMergeTree` keyed by version, so two concurrent runners leave
//! one row). Migrations that have landed are never edited: a change is a new
//! migration.
//!
//! Statements use unqualified table names; the client is bound to the target
//! database, which the runner creates first.

mod m0001_raw_tables;
mod m0002_rollups;
mod m0003_limits;

use anyhow::Context;
use clickhouse::Client;

/// One schema change.
pub trait Migration: Send + Sync {
    /// Position in the sequence, starting at 1, without gaps.
    fn version(&self) -> u32;
    /// Short snake_case description.
    fn name(&self) -> &'static str;
    /// Idempotent DDL statements, run in order.
    fn statements(&self) -> Vec<String>;
    /// How to undo it by hand (ClickHouse DDL is not transactional).
    fn rollback(&self) -> &'static str;
}

/// Every migration, in order.
pub fn all() -> Vec<Box<dyn Migration>> {
    vec![
        Box::new(m0001_raw_tables::RawTables),
        Box::new(m0002_rollups::Rollups),
        Box::new(m0003_limits::Limits),
    ]
}

/// The version the code expects the database to be at.
pub fn latest_version() -> u32 {
    all().iter().map(|m| m.version()).max().unwrap_or(0)
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version";

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<(u32, &'static str)>,
    pub already_applied: usize,
}

/// Creates `database` if needed and applies every pending migration.
/// `server` must not be bound to a database.
pub async fn migrate(server: &Client, database: &str) -> anyhow::Result<MigrateReport> {
    validate_database_name(database)?;
    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await
        .with_context(|| format!("creating database {database}"))?;
    let db = server.clone().with_database(database);
    db.query(MIGRATIONS_TABLE).execute().await.context("creating schema_migrations")?;
    let done = applied_versions(&db).await?;
    let mut report = MigrateReport { applied: Vec::new(), already_applied: 0 };
    for m in all() {
        if done.contains(&m.version()) {
            report.already_applied += 1;
            continue;
        }
        for (i, sql) in m.statements().iter().enumerate() {
            db.query(sql)
                .execute()
                .await
                .with_context(|| format!("migration {:04} {} statement {}", m.version(), m.name(), i + 1))?;
        }
        db.query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
            .bind(m.version())
            .bind(m.name())
            .execute()
            .await
            .with_context(|| format!("recording migration {:04}", m.version()))?;
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
        report.applied.push((m.version(), m.name()));
    }
    Ok(report)
}

/// Versions recorded in `schema_migrations` of a database-bound client;
/// empty if the table does not exist yet.
pub async fn applied_versions(db: &Client) -> anyhow::Result<Vec<u32>> {
    let exists: u8 = db
        .query("SELECT count() > 0 FROM system.tables WHERE database = currentDatabase() AND name = 'schema_migrations'")
        .fetch_one()
        .await
        .context("looking for schema_migrations")?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    db.query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all::<u32>()
        .await
        .context("reading schema_migrations")
}

/// Database names are spliced into `CREATE DATABASE` (identifiers cannot be
/// bound), so only plain identifiers are accepted.
pub fn validate_database_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    anyhow::ensure!(ok, "database name `{name}` must be 1-64 characters of [A-Za-z0-9_], not starting with a digit");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_ordered() {
        let versions: Vec<u32> = all().iter().map(|m| m.version()).collect();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn every_statement_is_idempotent() {
        for m in all() {
            for sql in m.statements() {
                let s = sql.trim_start().to_ascii_uppercase();
                assert!(s.contains("IF NOT EXISTS"), "migration {} has a statement that is not idempotent: {sql}", m.version());
            }
        }
    }

    #[test]
    fn database_names_are_checked() {
        assert!(validate_database_name("agentmeter_test_1").is_ok());
        assert!(validate_database_name("a`b").is_err());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name("1abc").is_err());
    }
}
