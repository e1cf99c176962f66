//! Bucket math: the boundaries of every bucket of a time series, computed
//! in Rust, and the ClickHouse expression that maps a row's minute to the
//! index of its bucket, so that the two always agree.
//!
//! * Minutes and hours are fixed-length buckets aligned to the local wall
//!   clock of the time zone at the start of the range (`1h` buckets in
//!   Asia/Kolkata start at :00 local, i.e. :30 UTC). Across a DST change
//!   they stay fixed-length.
//! * Days, weeks (Monday) and months start at local midnight in the time
//!   zone, so a day bucket is 23 or 25 hours long on a DST change. `n`-day,
//!   `n`-week and `n`-month buckets are aligned to multiples of `n` counted
//!   from 1970-01-01, 1970-01-05 (a Monday) and January 1970.
//!
//! In ClickHouse the index is computed from `toDate(minute, tz)` (local
//! date, DST-aware) or from epoch seconds, with every value bound as a
//! query parameter. Every bucket of the range is returned, zero-filled by
//! the caller; the first bucket is the one containing the range start (so
//! it is complete), the last the one containing the range end.

use chrono::{DateTime, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::calendar::{local_date, local_midnight, month_index, month_start};
use crate::window::{Span, TimeRange, Unit};

/// How rows map to bucket indices (`queries` turns it into SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `intDiv(epoch_seconds - origin, step)`.
    Fixed { origin: i64, step: i64 },
    /// `intDiv(local_date - first, days)`.
    Days { first: NaiveDate, days: i64 },
    /// `intDiv(local_month_index - first, n)`, month index = year*12 + month0.
    Months { first: i64, n: i64 },
}

/// The buckets of one series.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// `len() + 1` boundaries: bucket `i` is `[bounds[i], bounds[i+1])`.
    bounds: Vec<DateTime<Utc>>,
    key: Key,
    tz: Tz,
    pub frequency: Span,
}

const EPOCH_MONDAY: (i32, u32, u32) = (1970, 1, 5);

fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

impl Buckets {
    /// The buckets of `frequency` covering `range` in `tz`; fails when
    /// there would be more than `max_buckets`.
    pub fn plan(range: TimeRange, frequency: Span, tz: Tz, max_buckets: usize) -> Result<Self, String> {
        let span_secs = (range.end - range.start).num_seconds();
        let estimate = span_secs / frequency.approx_seconds().max(1);
        let too_many = |n: i64| {
            format!(
                "Too many buckets: frequency {} over this time range gives about {n} buckets, the maximum is {max_buckets}; use a coarser frequency or a shorter window",
                frequency.frequency_string()
            )
        };
        if estimate > max_buckets as i64 + 2 {
            return Err(too_many(estimate));
        }
        let n = i64::from(frequency.n);
        let local_start = local_date(range.start, tz);
        let (key, first_bound): (Key, DateTime<Utc>) = match frequency.unit {
            Unit::Minute | Unit::Hour => {
                let step = if frequency.unit == Unit::Minute { 60 * n } else { 3_600 * n };
                let offset = i64::from(tz.offset_from_utc_datetime(&range.start.naive_utc()).fix().local_minus_utc());
                let s = range.start.timestamp();
                let origin = (s + offset).div_euclid(step) * step - offset;
                (Key::Fixed { origin, step }, DateTime::from_timestamp(origin, 0).ok_or("time out of range")?)
            }
            Unit::Day => {
                let days = (local_start - epoch_date()).num_days();
                let first = epoch_date() + Duration::days(days.div_euclid(n) * n);
                (Key::Days { first, days: n }, local_midnight(tz, first))
            }
            Unit::Week => {
                let monday = NaiveDate::from_ymd_opt(EPOCH_MONDAY.0, EPOCH_MONDAY.1, EPOCH_MONDAY.2).expect("valid date");
                let days = (local_start - monday).num_days();
                let first = monday + Duration::days(days.div_euclid(7 * n) * 7 * n);
                (Key::Days { first, days: 7 * n }, local_midnight(tz, first))
            }
            Unit::Month => {
                let idx = month_index(local_start);
                let first = idx.div_euclid(n) * n;
                (Key::Months { first, n }, local_midnight(tz, month_start(first)))
            }
        };
        let mut bounds = vec![first_bound];
        let mut i: i64 = 0;
        while *bounds.last().expect("non-empty") < range.end {
            i += 1;
            if bounds.len() > max_buckets {
                return Err(too_many(bounds.len() as i64));
            }
            let next = match key {
                Key::Fixed { origin, step } => DateTime::from_timestamp(origin + i * step, 0).ok_or("time out of range")?,
                Key::Days { first, days } => local_midnight(tz, first + Duration::days(i * days)),
                Key::Months { first, n } => local_midnight(tz, month_start(first + i * n)),
            };
            bounds.push(next);
        }
        Ok(Self { bounds, key, tz, frequency })
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start of bucket `i`.
    pub fn start(&self, i: usize) -> DateTime<Utc> {
        self.bounds[i]
    }

    /// End (exclusive) of bucket `i`.
    pub fn end(&self, i: usize) -> DateTime<Utc> {
        self.bounds[i + 1]
    }

    /// Start of the first bucket (the query range starts here).
    pub fn first_start(&self) -> DateTime<Utc> {
        self.bounds[0]
    }

    /// The bucket that `t` falls in, if any.
    pub fn index_of(&self, t: DateTime<Utc>) -> Option<usize> {
        if t < self.bounds[0] || t >= *self.bounds.last()? {
            return None;
        }
        Some(self.bounds.partition_point(|b| *b <= t) - 1)
    }

    /// The bucket still open at `as_of` (containing it), if in range.
    pub fn open_bucket(&self, as_of: DateTime<Utc>) -> Option<usize> {
        self.index_of(as_of)
    }

    /// How a time maps to its bucket index.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The time zone of calendar buckets.
    pub fn tz(&self) -> Tz {
        self.tz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::window::test_time::{range, t};

    #[test]
    fn hourly_utc() {
        let b = Buckets::plan(range("2024-01-01T00:30:00Z", "2024-01-01T03:00:00Z"), Span::new(1, Unit::Hour), Tz::UTC, 100).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.start(0), t("2024-01-01T00:00:00Z"));
        assert_eq!(b.end(2), t("2024-01-01T03:00:00Z"));
        assert_eq!(b.index_of(t("2024-01-01T01:59:00Z")), Some(1));
        assert_eq!(b.index_of(t("2024-01-01T03:00:00Z")), None);
    }

    #[test]
    fn hourly_half_hour_zone() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let b = Buckets::plan(range("2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z"), Span::new(1, Unit::Hour), tz, 100).unwrap();
        assert_eq!(b.start(0), t("2023-12-31T23:30:00Z"));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn daily_berlin_spring_forward_is_23_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let b = Buckets::plan(range("2024-03-30T12:00:00Z", "2024-04-01T12:00:00Z"), Span::new(1, Unit::Day), tz, 100).unwrap();
        assert_eq!(b.start(0), t("2024-03-29T23:00:00Z")); // 30 March 00:00 CET
        assert_eq!(b.start(1), t("2024-03-30T23:00:00Z")); // 31 March 00:00 CET
        assert_eq!(b.start(2), t("2024-03-31T22:00:00Z")); // 1 April 00:00 CEST
        assert_eq!(b.end(1) - b.start(1), Duration::hours(23));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn daily_new_york_fall_back_is_25_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let b = Buckets::plan(range("2024-11-03T05:00:00Z", "2024-11-04T06:00:00Z"), Span::new(1, Unit::Day), tz, 100).unwrap();
        assert_eq!(b.start(0), t("2024-11-03T04:00:00Z")); // 3 Nov 00:00 EDT
        assert_eq!(b.start(1), t("2024-11-04T05:00:00Z")); // 4 Nov 00:00 EST
        assert_eq!(b.end(0) - b.start(0), Duration::hours(25));
        assert_eq!(b.len(), 2);
        // The repeated 01:30 local falls in the first day.
        assert_eq!(b.index_of(t("2024-11-03T06:30:00Z")), Some(0));
    }

    #[test]
    fn weekly_starts_monday_local() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let b = Buckets::plan(range("2024-03-06T12:00:00Z", "2024-03-13T12:00:00Z"), Span::new(1, Unit::Week), tz, 100).unwrap();
        assert_eq!(b.start(0), t("2024-03-04T05:00:00Z")); // Mon 4 March 00:00 EST
        assert_eq!(b.start(1), t("2024-03-11T04:00:00Z")); // Mon 11 March 00:00 EDT
        assert_eq!(b.end(0) - b.start(0), Duration::hours(7 * 24 - 1));
    }

    #[test]
    fn monthly_and_multi_day() {
        let b = Buckets::plan(range("2024-01-20T00:00:00Z", "2024-03-02T00:00:00Z"), Span::new(1, Unit::Month), Tz::UTC, 100).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.start(1), t("2024-02-01T00:00:00Z"));
        let b = Buckets::plan(range("2024-01-02T00:00:00Z", "2024-01-05T00:00:00Z"), Span::new(2, Unit::Day), Tz::UTC, 100).unwrap();
        // 2024-01-02 is day 19724 since the epoch (even): buckets start on even days.
        assert_eq!(b.start(0), t("2024-01-02T00:00:00Z"));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn too_many_buckets() {
        let r = range("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z");
        assert!(Buckets::plan(r, Span::new(1, Unit::Minute), Tz::UTC, 2000).is_err());
        assert!(Buckets::plan(r, Span::new(1, Unit::Hour), Tz::UTC, 2000).is_ok());
        assert!(Buckets::plan(r, Span::new(1, Unit::Hour), Tz::UTC, 100).is_err());
    }
}
