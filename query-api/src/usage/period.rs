//! Limit periods: where the current period of a limit starts and when it
//! resets, for calendar periods in an IANA time zone and for rolling windows.
//!
//! Calendar periods (`day`, `week`, `month`) start at local midnight of their
//! first day in the limit's time zone and end at local midnight of the first
//! day of the next period, converted to UTC. A local day is therefore 23 or
//! 25 hours long on a DST change, exactly as people in that zone experience
//! it. When local midnight does not exist (a DST gap at 00:00, as in
//! São Paulo until 2019) the period starts at the first local instant of the
//! day; when it occurs twice (a fall-back at midnight) it starts at the
//! earlier one.
//!
//! Rolling periods cover whole minutes: the current minute and the
//! `hours * 60 - 1` minutes before it, matching the per-minute usage buckets,
//! so a rolling figure is exact at minute granularity.
//!
//! Everything here is pure and takes "now" as an argument so that tests can
//! pin the clock.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// Longest rolling window accepted, in hours (31 days): usage buckets are
/// kept in memory for the longest period (see `counters`).
pub const MAX_ROLLING_HOURS: u32 = 31 * 24;

/// How a limit's period is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSpec {
    /// Calendar day in `tz`.
    Day { tz: Tz },
    /// Calendar week in `tz` starting on `anchor`.
    Week { tz: Tz, anchor: Weekday },
    /// Calendar month in `tz` starting on day `anchor_day` (1..=28).
    Month { tz: Tz, anchor_day: u32 },
    /// The last `hours` hours, at minute granularity.
    Rolling { hours: u32 },
}

/// The period containing an instant: `[start, end)`. For calendar periods
/// `end` is when the limit resets; for rolling windows it is the end of the
/// current minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// Length of the period in seconds (the `w` of the RateLimit headers).
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).num_seconds()
    }
}

impl PeriodSpec {
    /// The period containing `now`.
    pub fn window_at(&self, now: DateTime<Utc>) -> Window {
        match *self {
            PeriodSpec::Day { tz } => {
                let d = now.with_timezone(&tz).date_naive();
                Window { start: local_midnight(tz, d), end: local_midnight(tz, d + Duration::days(1)) }
            }
            PeriodSpec::Week { tz, anchor } => {
                let d = now.with_timezone(&tz).date_naive();
                let back = (7 + d.weekday().num_days_from_monday() - anchor.num_days_from_monday()) % 7;
                let first = d - Duration::days(i64::from(back));
                Window { start: local_midnight(tz, first), end: local_midnight(tz, first + Duration::days(7)) }
            }
            PeriodSpec::Month { tz, anchor_day } => {
                let d = now.with_timezone(&tz).date_naive();
                let (mut y, mut m) = (d.year(), d.month());
                if d.day() < anchor_day {
                    (y, m) = prev_month(y, m);
                }
                let first = NaiveDate::from_ymd_opt(y, m, anchor_day).expect("anchor_day <= 28 exists in every month");
                let (ny, nm) = next_month(y, m);
                let next = NaiveDate::from_ymd_opt(ny, nm, anchor_day).expect("anchor_day <= 28 exists in every month");
                Window { start: local_midnight(tz, first), end: local_midnight(tz, next) }
            }
            PeriodSpec::Rolling { hours } => {
                let end = floor_minute(now) + Duration::minutes(1);
                Window { start: end - Duration::hours(i64::from(hours)), end }
            }
        }
    }

    /// The time zone of a calendar period (`None` for rolling windows).
    pub fn tz(&self) -> Option<Tz> {
        match *self {
            PeriodSpec::Day { tz } | PeriodSpec::Week { tz, .. } | PeriodSpec::Month { tz, .. } => Some(tz),
            PeriodSpec::Rolling { .. } => None,
        }
    }
}

/// The calendar month containing `now` in UTC: the default period of the
/// usage endpoints when no limit says otherwise.
pub fn utc_month(now: DateTime<Utc>) -> Window {
    PeriodSpec::Month { tz: Tz::UTC, anchor_day: 1 }.window_at(now)
}

/// The instant a minute bucket starts at.
pub fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// Minute number (minutes since the Unix epoch) of an instant.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// The UTC instant at which local day `d` begins in `tz`.
pub fn local_midnight(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    let midnight = d.and_hms_opt(0, 0, 0).expect("valid time");
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Midnight falls into a DST gap: the day begins at the first
            // local minute that exists (gaps are at most a few hours).
            let mut local = midnight;
            for _ in 0..(24 * 60) {
                local += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&local).earliest() {
                    debug_assert_eq!(t.second(), 0);
                    return t.with_timezone(&Utc);
                }
            }
            unreachable!("a local day has at least one existing minute")
        }
    }
}

fn prev_month(y: i32, m: u32) -> (i32, u32) {
    if m == 1 {
        (y - 1, 12)
    } else {
        (y, m - 1)
    }
}

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 {
        (y + 1, 1)
    } else {
        (y, m + 1)
    }
}

/// Weekday from the API's anchor number, 1 = Monday .. 7 = Sunday (ISO 8601).
pub fn weekday_from_iso(n: u32) -> Option<Weekday> {
    match n {
        1 => Some(Weekday::Mon),
        2 => Some(Weekday::Tue),
        3 => Some(Weekday::Wed),
        4 => Some(Weekday::Thu),
        5 => Some(Weekday::Fri),
        6 => Some(Weekday::Sat),
        7 => Some(Weekday::Sun),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn berlin_spring_forward_day_is_23_hours() {
        let w = PeriodSpec::Day { tz: BERLIN }.window_at(utc("2025-03-30T12:00:00Z"));
        assert_eq!(w.start, utc("2025-03-29T23:00:00Z"));
        assert_eq!(w.end, utc("2025-03-30T22:00:00Z"));
        assert_eq!(w.seconds(), 23 * 3600);
    }

    #[test]
    fn berlin_fall_back_day_is_25_hours() {
        let w = PeriodSpec::Day { tz: BERLIN }.window_at(utc("2025-10-26T01:30:00Z"));
        assert_eq!(w.start, utc("2025-10-25T22:00:00Z"));
        assert_eq!(w.end, utc("2025-10-26T23:00:00Z"));
        assert_eq!(w.seconds(), 25 * 3600);
    }

    #[test]
    fn day_boundaries_are_exact() {
        let p = PeriodSpec::Day { tz: BERLIN };
        // The last millisecond of the 23-hour day and the first of the next.
        let before = p.window_at(utc("2025-03-30T21:59:59.999Z"));
        let after = p.window_at(utc("2025-03-30T22:00:00Z"));
        assert_eq!(before.end, after.start);
        assert_eq!(after.start, utc("2025-03-30T22:00:00Z"));
        assert_eq!(after.seconds(), 24 * 3600);
    }

    #[test]
    fn month_in_berlin_spans_the_dst_change() {
        let w = PeriodSpec::Month { tz: BERLIN, anchor_day: 1 }.window_at(utc("2025-03-15T00:00:00Z"));
        assert_eq!(w.start, utc("2025-02-28T23:00:00Z"));
        assert_eq!(w.end, utc("2025-03-31T22:00:00Z"));
        assert_eq!(w.seconds(), 31 * 86400 - 3600);
    }

    #[test]
    fn month_anchor_day() {
        let p = PeriodSpec::Month { tz: Tz::UTC, anchor_day: 15 };
        let w = p.window_at(utc("2025-01-10T00:00:00Z"));
        assert_eq!((w.start, w.end), (utc("2024-12-15T00:00:00Z"), utc("2025-01-15T00:00:00Z")));
        let w = p.window_at(utc("2025-01-15T00:00:00Z"));
        assert_eq!((w.start, w.end), (utc("2025-01-15T00:00:00Z"), utc("2025-02-15T00:00:00Z")));
        let w = p.window_at(utc("2025-12-20T00:00:00Z"));
        assert_eq!((w.start, w.end), (utc("2025-12-15T00:00:00Z"), utc("2026-01-15T00:00:00Z")));
    }

    #[test]
    fn week_anchor_weekday_across_dst() {
        // Week starting Monday in Berlin containing the spring change
        // (Sunday 2025-03-30): 7 days minus one hour.
        let w = PeriodSpec::Week { tz: BERLIN, anchor: Weekday::Mon }.window_at(utc("2025-03-30T10:00:00Z"));
        assert_eq!(w.start, utc("2025-03-23T23:00:00Z"));
        assert_eq!(w.end, utc("2025-03-30T22:00:00Z"));
        assert_eq!(w.seconds(), 7 * 86400 - 3600);
        // Week starting Sunday: the change day is its first day.
        let w = PeriodSpec::Week { tz: BERLIN, anchor: Weekday::Sun }.window_at(utc("2025-03-30T10:00:00Z"));
        assert_eq!(w.start, utc("2025-03-29T23:00:00Z"));
        assert_eq!(w.end, utc("2025-04-05T22:00:00Z"));
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_the_day_at_the_first_existing_minute() {
        // São Paulo, 2018-11-04: clocks went from 00:00 (-03) to 01:00 (-02).
        let tz = chrono_tz::America::Sao_Paulo;
        let w = PeriodSpec::Day { tz }.window_at(utc("2018-11-04T12:00:00Z"));
        assert_eq!(w.start, utc("2018-11-04T03:00:00Z"));
        assert_eq!(w.end, utc("2018-11-05T02:00:00Z"));
        assert_eq!(w.seconds(), 23 * 3600);
    }

    #[test]
    fn quarter_hour_offsets() {
        let tz = chrono_tz::Asia::Kathmandu; // +05:45
        let w = PeriodSpec::Day { tz }.window_at(utc("2025-06-01T12:00:00Z"));
        assert_eq!(w.start, utc("2025-05-31T18:15:00Z"));
    }

    #[test]
    fn rolling_window_covers_whole_minutes() {
        let w = PeriodSpec::Rolling { hours: 5 }.window_at(utc("2025-06-01T12:00:30Z"));
        assert_eq!(w.end, utc("2025-06-01T12:01:00Z"));
        assert_eq!(w.start, utc("2025-06-01T07:01:00Z"));
        assert_eq!(w.seconds(), 5 * 3600);
    }
}
