//! The bucket index of a row, computed inside ClickHouse with the same
//! boundaries `buckets` computes in Rust, so one `GROUP BY bucket` answers
//! a whole series.

use crate::buckets::{Buckets, Key};

/// ClickHouse expression (UInt32) giving the bucket index of `column` (a
/// `DateTime` or `DateTime64` in UTC), and the parameters it binds: names
/// prefixed with `b_`.
pub fn index_sql(buckets: &Buckets, column: &str) -> (String, Vec<(&'static str, String)>) {
    match buckets.key() {
        Key::Fixed { origin, step } => (
            format!("toUInt32(intDiv(toInt64(toUnixTimestamp({column})) - {{b_origin:Int64}}, {{b_step:Int64}}))"),
            vec![("b_origin", origin.to_string()), ("b_step", step.to_string())],
        ),
        Key::Days { first, days } => (
            format!("toUInt32(intDiv(dateDiff('day', {{b_first:Date}}, toDate({column}, {{b_tz:String}})), {{b_days:Int64}}))"),
            vec![("b_first", first.to_string()), ("b_tz", buckets.tz().name().to_owned()), ("b_days", days.to_string())],
        ),
        Key::Months { first, n } => (
            format!(
                "toUInt32(intDiv(toInt64(toYear(toDate({column}, {{b_tz:String}}))) * 12 + toInt64(toMonth(toDate({column}, {{b_tz:String}}))) - 1 - {{b_first:Int64}}, {{b_n:Int64}}))"
            ),
            vec![("b_tz", buckets.tz().name().to_owned()), ("b_first", first.to_string()), ("b_n", n.to_string())],
        ),
    }
}
