//! Limit periods: where the current period of a limit starts and when it
//! resets, for calendar periods in an IANA time zone and for rolling windows.
//!
//! Calendar periods (`day`, `week`, `month`) start at local midnight (as
//! `calendar` resolves it) of their first day in the limit's time zone and end at local midnight of the first
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

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use chrono_tz::Tz;

use crate::calendar::{day_of_month_shifted, floor_minute, local_date, local_midnight};

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
                let d = local_date(now, tz);
                Window { start: local_midnight(tz, d), end: local_midnight(tz, d + Duration::days(1)) }
            }
            PeriodSpec::Week { tz, anchor } => {
                let d = local_date(now, tz);
                let back = (7 + d.weekday().num_days_from_monday() - anchor.num_days_from_monday()) % 7;
                let first = d - Duration::days(i64::from(back));
                Window { start: local_midnight(tz, first), end: local_midnight(tz, first + Duration::days(7)) }
            }
            PeriodSpec::Month { tz, anchor_day } => {
                let d = local_date(now, tz);
                let back = if d.day() < anchor_day { -1 } else { 0 };
                let first = day_of_month_shifted(d, back, anchor_day);
                let next = day_of_month_shifted(d, back + 1, anchor_day);
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Limit periods and series buckets take their boundaries from the
        /// same calendar: in every zone with DST or a non-hour offset, the
        /// day, week and month containing an instant contain it, begin at a
        /// local midnight, and a daily bucket is the limit's day.
        #[test]
        fn periods_and_buckets_share_boundaries_in_every_zone(ms in 31_536_000_000i64..2_145_916_800_000, anchor in 1u32..=28) {
            use crate::buckets::Buckets;
            use crate::calendar::{floor_minute, local_date};
            use crate::window::{Span, TimeRange, Unit};
            let now = DateTime::from_timestamp_millis(ms).unwrap();
            for &tz in crate::calendar::tests::interesting_zones() {
                let day = PeriodSpec::Day { tz }.window_at(now);
                proptest::prop_assert!(day.start <= now && now < day.end, "{} {}", tz, now);
                proptest::prop_assert_eq!(day.start, local_midnight(tz, local_date(now, tz)));
                for p in [PeriodSpec::Week { tz, anchor: Weekday::Mon }, PeriodSpec::Month { tz, anchor_day: anchor }] {
                    let w = p.window_at(now);
                    proptest::prop_assert!(w.start <= now && now < w.end, "{:?} {}", p, now);
                    proptest::prop_assert_eq!(w.start, local_midnight(tz, local_date(w.start, tz)));
                }
                let minute = floor_minute(now);
                let range = TimeRange { start: minute, end: minute + Duration::minutes(1) };
                let b = Buckets::plan(range, Span::new(1, Unit::Day), tz, 10).unwrap();
                proptest::prop_assert_eq!((b.start(0), b.end(0)), (day.start, day.end), "{} {}", tz, now);
            }
        }
    }
}
