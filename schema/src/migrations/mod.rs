//! Numbered ClickHouse migrations and the runner behind `agentmeter-migrate`.
//!
//! Each migration is a struct implementing [`Migration`], listed once in
//! [`all`]. A migration is a list of idempotent statements (`IF NOT EXISTS`
//! everywhere), so applying it twice, or from two processes at once, leaves
//! the same schema; the runner then records it in `schema_migrations`
//! (a `ReplacingMergeTree` keyed by version, so two concurrent runners leave
//! one row). Migrations that have landed are never edited: a change is a new
//! migration. `schema/migrations.sha256` records a checksum of each landed
//! migration's SQL, and a test (`tests/it/checksums.rs`) fails if it changes.
//!
//! Statements use unqualified table names; the client is bound to the target
//! database, which the runner creates first.
//!
//! A migration that adds a materialized view over existing data also lists
//! [`Backfill`]s: the view alone only sees rows inserted after it exists.

mod execution_aggregates;
mod m0001_raw_tables;
mod m0002_rollups;
mod m0003_limits;
mod m0004_hourly_rollups;
mod m0005_tenant_rollups;
mod m0006_query_logs;
mod m0007_query_minutes;
mod m0008_names;
mod m0009_plans;
mod m0010_unpriced_executions;
mod m0011_question_rollups;
mod m0012_five_minute_rollups;
mod m0013_user_rollups;
mod m0014_block_watermarks;
mod m0015_hourly_watermarks;
mod m0016_executions_hourly;
mod m0017_tenant_hours_by_kind;
mod m0018_error_type_hours;
mod m0019_executor_hours;
mod tool_call_aggregates;
mod watermark;

use anyhow::Context;
use clickhouse::Client;

/// One schema change.
pub trait Migration: Send + Sync {
    /// Position in the sequence, starting at 1, increasing. Numbers are
    /// handed out before changes land, so a number may be missing until the
    /// change that holds it lands; [`all`] lists what this code applies.
    fn version(&self) -> u32;
    /// Short snake_case description.
    fn name(&self) -> &'static str;
    /// Idempotent DDL statements, run in order.
    fn statements(&self) -> Vec<String>;
    /// How to undo it by hand (ClickHouse DDL is not transactional).
    fn rollback(&self) -> &'static str;
    /// Materialized views to create after [`Migration::statements`], each
    /// with a copy of the rows that were already in its source table.
    fn backfills(&self) -> Vec<Backfill> {
        Vec::new()
    }
}

/// A materialized view and the one-time copy of the rows its source table
/// held before the view existed.
///
/// Exactly once, by construction:
/// 1. if the view does not exist yet, a cutoff (`now64(3)` of ClickHouse)
///    is recorded in `rollup_backfills`, then the view is created. Inserts
///    that start after the view exists reach it, and their rows get an
///    `ingested_at` after the cutoff, so they are not copied. The cutoff
///    is inserted with a deduplication token naming the view and its
///    target table's UUID, so of runners that record at the same time only
///    the first insert to commit is kept (without it, a runner whose insert
///    took an earlier `now64` but committed after another runner read the
///    cutoff would copy again under a different cutoff: the rows twice);
///    after a rollback the target is a new table, with a new UUID;
/// 2. the copy takes the rows with `ingested_at` before the earliest
///    recorded cutoff of the view (a rerun after a crash, or a second
///    runner, finds the same cutoff);
/// 3. the copy is inserted with `insert_deduplication_token` derived from
///    view and cutoff, and the target has `non_replicated_deduplication_window`,
///    so a second identical copy (a rerun, a concurrent runner) is dropped.
///
/// Caveat: an insert into the source table that is in flight during the
/// milliseconds between recording the cutoff and creating the view (or
/// that started before and stamps `ingested_at` after the cutoff) reaches
/// neither the view nor the copy. Run migrations before starting ingest, as
/// `./dev/run` and deployments do; if in doubt, compare the rollup with the
/// raw table for the migration's hour and rebuild that hour.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// Name of the materialized view.
    pub view: &'static str,
    /// Target table of the view (and of the copy).
    pub target: &'static str,
    /// `CREATE MATERIALIZED VIEW IF NOT EXISTS <view> TO <target> AS ...`.
    pub create_view: String,
    /// The view's `SELECT`, restricted to
    /// `ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')`.
    pub select_before_cutoff: String,
}

/// The condition of [`Backfill::select_before_cutoff`] (the runner binds
/// `cutoff_ms`). Migrations before 0017 spell it out themselves: landed
/// migrations are not edited.
pub(super) const BEFORE_CUTOFF: &str = "ingested_at < fromUnixTimestamp64Milli({cutoff_ms:Int64}, 'UTC')";

const BACKFILLS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rollup_backfills (
    view String,
    cutoff DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY view";

/// `rollup_backfills`, with the deduplication window the cutoff records
/// need (tables created before the window was used have none). Once per
/// [`migrate`] that runs a backfill.
async fn prepare_backfills_table(db: &Client) -> anyhow::Result<()> {
    db.query(BACKFILLS_TABLE).execute().await.context("creating rollup_backfills")?;
    db.query("ALTER TABLE rollup_backfills MODIFY SETTING non_replicated_deduplication_window = 1000")
        .execute()
        .await
        .context("setting the deduplication window of rollup_backfills")
}

/// The UUID of the table or view `name` of the current database, if it exists.
async fn table_uuid(db: &Client, name: &str) -> anyhow::Result<Option<String>> {
    db.query("SELECT toString(uuid) FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(name)
        .fetch_optional()
        .await
        .with_context(|| format!("looking for {name}"))
}

/// Creates the view of `b` (recording a cutoff first) and copies the rows
/// before the cutoff into its target; see [`Backfill`].
async fn run_backfill(db: &Client, b: &Backfill) -> anyhow::Result<()> {
    if table_uuid(db, b.view).await?.is_none() {
        record_cutoff(db, b).await?;
        db.query(&b.create_view).execute().await.with_context(|| format!("creating view {}", b.view))?;
    }
    let (n, cutoff_ms): (u64, i64) = db
        .query("SELECT count(), toInt64(toUnixTimestamp64Milli(min(cutoff))) FROM rollup_backfills WHERE view = ?")
        .bind(b.view)
        .fetch_one()
        .await
        .with_context(|| format!("reading the backfill cutoff of {}", b.view))?;
    anyhow::ensure!(n > 0, "view {} exists but no backfill cutoff is recorded; it was not created by this migration runner", b.view);
    let columns = copied_columns(db, b, cutoff_ms).await?;
    db.clone()
        .with_option("insert_deduplication_token", format!("backfill:{}:{cutoff_ms}", b.view))
        .with_option("insert_deduplicate", "1")
        .with_option("max_threads", "1")
        .with_option("max_insert_threads", "1")
        .query(&format!("INSERT INTO {} ({}) {}", b.target, columns.join(", "), b.select_before_cutoff))
        .param("cutoff_ms", cutoff_ms)
        .execute()
        .await
        .with_context(|| format!("backfilling {} before {cutoff_ms}", b.target))?;
    tracing::info!(view = b.view, target = b.target, cutoff_ms, "backfilled rollup");
    Ok(())
}

/// The columns `b`'s copy writes, by name: a later migration may have
/// added one to the target (0014's watermarks), which the copy then leaves
/// to its default, where `INSERT INTO t SELECT` would refuse the copy.
async fn copied_columns(db: &Client, b: &Backfill, cutoff_ms: i64) -> anyhow::Result<Vec<String>> {
    let context = || format!("reading the columns of the backfill of {}", b.target);
    let described = db
        .query(&format!("DESCRIBE TABLE ({})", b.select_before_cutoff))
        .param("cutoff_ms", cutoff_ms)
        .fetch_bytes("TSVRaw")
        .with_context(context)?
        .collect()
        .await
        .with_context(context)?;
    let text = std::str::from_utf8(&described).with_context(context)?;
    Ok(text.lines().filter_map(|line| line.split('\t').next()).filter(|name| !name.is_empty()).map(str::to_owned).collect())
}

/// Records a backfill cutoff for `b`'s view unless one was already
/// recorded for the same view and target table (see [`Backfill`], 1.).
///
/// A record removed by hand with `ALTER TABLE rollup_backfills DELETE`
/// while the target table stayed (truncated instead of dropped) leaves its
/// token in the deduplication log, so the insert is dropped and nothing
/// is recorded: then the cutoff is recorded without a token (two runners
/// doing that at the same moment are back to the race the token closes,
/// in that repair only).
async fn record_cutoff(db: &Client, b: &Backfill) -> anyhow::Result<()> {
    let target = table_uuid(db, b.target).await?.with_context(|| format!("table {} does not exist", b.target))?;
    let insert = "INSERT INTO rollup_backfills (view, cutoff) VALUES (?, now64(3))";
    let context = || format!("recording the backfill cutoff of {}", b.view);
    db.clone()
        .with_option("insert_deduplicate", "1")
        .with_option("insert_deduplication_token", format!("cutoff:{}:{target}", b.view))
        .query(insert)
        .bind(b.view)
        .execute()
        .await
        .with_context(context)?;
    let recorded: u64 =
        db.query("SELECT count() FROM rollup_backfills WHERE view = ?").bind(b.view).fetch_one().await.with_context(context)?;
    if recorded == 0 {
        db.query(insert).bind(b.view).execute().await.with_context(context)?;
    }
    Ok(())
}

/// Every migration, in order.
pub fn all() -> Vec<Box<dyn Migration>> {
    vec![
        Box::new(m0001_raw_tables::RawTables),
        Box::new(m0002_rollups::Rollups),
        Box::new(m0003_limits::Limits),
        Box::new(m0004_hourly_rollups::HourlyRollups),
        Box::new(m0005_tenant_rollups::TenantRollups),
        Box::new(m0006_query_logs::QueryLogs),
        Box::new(m0007_query_minutes::QueryMinutes),
        Box::new(m0008_names::Names),
        Box::new(m0009_plans::Plans),
        Box::new(m0010_unpriced_executions::UnpricedExecutions),
        Box::new(m0011_question_rollups::QuestionRollups),
        Box::new(m0012_five_minute_rollups::FiveMinuteRollups),
        Box::new(m0013_user_rollups::UserRollups),
        Box::new(m0014_block_watermarks::BlockWatermarks),
        Box::new(m0015_hourly_watermarks::HourlyWatermarks),
        Box::new(m0016_executions_hourly::ExecutionsHourly),
        Box::new(m0017_tenant_hours_by_kind::TenantHoursByKind),
        Box::new(m0018_error_type_hours::ErrorTypeHours),
        Box::new(m0019_executor_hours::ExecutorHours),
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
    if all().iter().any(|m| !done.contains(&m.version()) && !m.backfills().is_empty()) {
        prepare_backfills_table(&db).await?;
    }
    let mut report = MigrateReport { applied: Vec::new(), already_applied: 0 };
    for m in all() {
        if done.contains(&m.version()) {
            report.already_applied += 1;
            continue;
        }
        for (i, sql) in m.statements().iter().enumerate() {
            db.query(sql).execute().await.with_context(|| format!("migration {:04} {} statement {}", m.version(), m.name(), i + 1))?;
        }
        for b in m.backfills() {
            run_backfill(&db, &b).await.with_context(|| format!("migration {:04} {}", m.version(), m.name()))?;
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
    fn versions_start_at_one_and_increase() {
        let versions: Vec<u32> = all().iter().map(|m| m.version()).collect();
        assert_eq!(versions.first(), Some(&1));
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }

    #[test]
    fn every_statement_is_idempotent() {
        for m in all() {
            for sql in m.statements() {
                let s = sql.trim_start().to_ascii_uppercase();
                // Setting a view's query again leaves it as it was.
                let idempotent = s.contains("IF NOT EXISTS") || (s.starts_with("ALTER TABLE ") && s.contains(" MODIFY QUERY "));
                assert!(idempotent, "migration {} has a statement that is not idempotent: {sql}", m.version());
            }
            for b in m.backfills() {
                assert!(b.create_view.to_ascii_uppercase().contains("IF NOT EXISTS"), "view {} is not created idempotently", b.view);
                assert!(b.select_before_cutoff.contains("{cutoff_ms:Int64}"), "backfill of {} ignores the cutoff", b.view);
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
