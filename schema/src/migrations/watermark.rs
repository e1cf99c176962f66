//! The statements that give a rollup the newest `occurred_at` of each of
//! its rows, `latest_occurred_at` (migrations 0014 and 0015): a
//! `SimpleAggregateFunction(max, ...)` column whose default, for rows
//! written before, is a time after any range's end, and the view's query
//! set again with `max(occurred_at)` added. Written once so that every
//! rollup's watermark has the same type, default and meaning, which the
//! API's whole-tail reads rely on (`rollup::WholeTail`).

/// The watermark's value in rows written before it existed.
const UNKNOWN_WATERMARK: &str = "2199-12-31 00:00:00";

/// The `SELECT` item a view adds for the watermark.
pub(super) const SELECT_ITEM: &str = "max(occurred_at) AS latest_occurred_at";

/// Adds the column to `table`, then sets `view`'s query to `query` (which
/// selects [`SELECT_ITEM`]). Both statements are idempotent.
pub(super) fn add(table: &str, view: &str, query: &str) -> [String; 2] {
    [
        format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS latest_occurred_at \
             SimpleAggregateFunction(max, DateTime64(3, 'UTC')) DEFAULT toDateTime64('{UNKNOWN_WATERMARK}', 3, 'UTC')"
        ),
        format!("ALTER TABLE {view} MODIFY QUERY {query}"),
    ]
}

/// Undoes [`add`]: `view`'s query back to `query` (without the watermark),
/// then the column dropped.
pub(super) fn remove(table: &str, view: &str, query: &str) -> [String; 2] {
    [format!("ALTER TABLE {view} MODIFY QUERY {query}"), format!("ALTER TABLE {table} DROP COLUMN IF EXISTS latest_occurred_at")]
}
