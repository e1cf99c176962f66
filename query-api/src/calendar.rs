//! Calendar arithmetic of the whole API, in one place: where a local day,
//! week or month begins in an IANA time zone, what happens in DST gaps and
//! folds, floors and ceilings to the minute, 5 minutes and the hour, month arithmetic,
//! and the parsing of instants and zone names.
//!
//! Windows (`window`), series buckets (`buckets`), limit periods
//! (`usage::period`) and the rollup choice (`queries::analytics::rollup`)
//! all compute their boundaries here, so a local midnight is the same
//! instant whichever of them asks.
//!
//! Rules:
//!
//! * A local wall-clock time that occurs twice (a fold, when clocks go
//!   back) is its earlier instant.
//! * A local wall-clock time that does not exist (a gap, when clocks go
//!   forward) is the first existing local minute after it: a local day whose
//!   midnight falls in a gap (as in São Paulo until 2019) begins when the
//!   clocks jump, so it is shorter, exactly as people there live it.
//! * A day runs from its midnight to the next; an instant belongs to the day
//!   whose span holds it ([`local_date`]), which is its wall-clock date
//!   except in a fold spanning midnight (St. John's until 2011).
//! * Instants are RFC 3339 with an offset (`2024-01-15T10:30:00Z`,
//!   `2024-01-15T10:30:00+01:00`) or epoch milliseconds written as 1 to 16
//!   ASCII digits (Grafana's `${__from}`), from 1970 up to (not including)
//!   9999 (so that every instant derived from it keeps a four-digit year);
//!   nothing else, no surrounding spaces.
//!
//! Everything here is pure and takes "now" as an argument.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant of a local wall-clock time: the earlier one when it occurs
/// twice, the first existing local minute after it when it falls in a gap.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a day (Samoa skipped 2011-12-30); walk
            // forward a minute at a time.
            let mut probe = local;
            for _ in 0..(2 * 24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&local)
        }
    }
}

/// The instant local day `d` begins in `tz` (see the module rules for gaps
/// and folds).
pub fn local_midnight(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    resolve_local(tz, d.and_hms_opt(0, 0, 0).expect("midnight is a valid time"))
}

/// The local day `t` lies in, in `tz`: the day `d` with `local_midnight(tz,
/// d) <= t < local_midnight(tz, d + 1)`, so that every day, week and month
/// computed from it holds `t`. That is the wall-clock date, except in a
/// fold that spans midnight (clocks going back from just after 00:00 to
/// the evening before, as St. John's did at 00:01 until 2011): the new day
/// began at the first 00:00, and the wall clock shows the old date again
/// for the rest of the fold.
pub fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let wall = t.with_timezone(&tz).date_naive();
    if t >= local_midnight(tz, wall + Duration::days(1)) {
        wall + Duration::days(1)
    } else {
        wall
    }
}

/// Rounds down to the minute.
pub fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, 60)
}

/// Rounds up to the minute (an exact minute stays).
pub fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    ceil_to(t, 60)
}

/// Rounds down to the UTC hour.
pub fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, 3_600)
}

/// Rounds up to the UTC hour (an exact hour stays).
pub fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    ceil_to(t, 3_600)
}

/// On a whole UTC hour (no seconds or fraction).
pub fn is_whole_hour(t: DateTime<Utc>) -> bool {
    floor_hour(t) == t
}

/// Rounds down to a multiple of 5 minutes (UTC, and in every zone whose
/// offset is a whole number of 5 minutes).
pub fn floor_five_minutes(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, 300)
}

/// Rounds up to a multiple of 5 minutes (an exact one stays).
pub fn ceil_five_minutes(t: DateTime<Utc>) -> DateTime<Utc> {
    ceil_to(t, 300)
}

/// On a multiple of 5 minutes (no seconds or fraction).
pub fn is_whole_five_minutes(t: DateTime<Utc>) -> bool {
    floor_five_minutes(t) == t
}

/// Minute number (minutes since the Unix epoch) of an instant.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

fn floor_to(t: DateTime<Utc>, step_s: i64) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(step_s), 0).unwrap_or(t)
}

fn ceil_to(t: DateTime<Utc>, step_s: i64) -> DateTime<Utc> {
    let f = floor_to(t, step_s);
    if f == t {
        t
    } else {
        f + Duration::seconds(step_s)
    }
}

/// Index of the month of `d`: `year * 12 + month0`.
pub fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

/// The first day of the month of [`month_index`] `index`.
pub fn month_start(index: i64) -> NaiveDate {
    let year = index.div_euclid(12) as i32;
    let month = index.rem_euclid(12) as u32 + 1;
    NaiveDate::from_ymd_opt(year, month, 1).expect("valid month")
}

/// Day `day` (1..=28, which every month has) of the month `months` after
/// (or, negative, before) the month of `d`.
pub fn day_of_month_shifted(d: NaiveDate, months: i64, day: u32) -> NaiveDate {
    month_start(month_index(d) + months).with_day(day).expect("day 1..=28 exists in every month")
}

/// `local` minus `n` calendar months, the day clamped to the end of a
/// shorter month (31 March minus one month is 28/29 February).
pub fn sub_months_clamped(local: NaiveDateTime, n: u32) -> NaiveDateTime {
    local.checked_sub_months(Months::new(n)).unwrap_or(local)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_tz(s: &str) -> Result<Tz, String> {
    Tz::from_str(s).map_err(|_| format!("Unknown time zone '{}': expected an IANA name such as UTC or Europe/Berlin", truncate(s)))
}

/// Latest instant a request may name (exclusive): 9999-01-01T00:00:00Z,
/// so that every instant an answer derives from it (a window before it, a
/// bucket after it) still has a four-digit year, as RFC 3339 requires.
pub const LATEST_INSTANT_MS: i64 = 253_370_764_800_000;

/// Parses an instant (see the module rules), from 1970-01-01 up to (not
/// including) 9999-01-01.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    let t = if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().map_err(|_| format!("Invalid epoch milliseconds '{s}'"))?;
        DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("Epoch milliseconds out of range: {s}"))?
    } else {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("Invalid time '{}': expected RFC 3339 (2024-01-15T10:30:00Z) or epoch milliseconds", truncate(s)))?
    };
    if t.timestamp_millis() < 0 || t.timestamp_millis() >= LATEST_INSTANT_MS {
        return Err(format!("Time out of range: '{}' (1970-01-01 to 9998-12-31)", truncate(s)));
    }
    Ok(t)
}

#[cfg(test)]
pub(crate) mod tests;
