//! Parsing of the time parameters: `window` (a lookback ending now),
//! `frequency` (bucket size), absolute `from`/`to` and `tz`, and the time
//! range they resolve to.
//!
//! Grammar (DESIGN.md "Query semantics", SEED_SPEC §1.2, §5.1 items 1–3):
//!
//! * `window`: `<n>(m|h|d|w|mon)`, e.g. `15m`, `24h`, `7d`, `1w`, `1mon`
//!   (`mo` is accepted as a synonym of `mon`). Minutes and hours are fixed
//!   durations; days, weeks and months are calendar steps in the request's
//!   time zone (`1d` back from 12:00 is 12:00 local yesterday, 23 or 25 h
//!   across a DST change).
//! * `frequency`: `<n>(m|h|d|w|mo)` where `m` is minutes and `mo` months
//!   (`mon` accepted as a synonym). Echoed in canonical form (`1mo`).
//!
//! Ranges are half-open `[start, end)` at minute resolution, because the
//! rollups are per minute: `end` is `to` (default now) rounded up to the next
//! minute, so the current, still-filling minute is included; `start` is
//! `from` rounded down, or `end` minus the window.
//!
//! Nothing here touches ClickHouse; everything takes "now" as an argument.
//! Local days, DST and month arithmetic come from `calendar`.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use crate::calendar::{ceil_minute, floor_minute, resolve_local, sub_months_clamped};

/// Longest lookback accepted: the raw tables and rollups keep 400 days.
pub const MAX_LOOKBACK_DAYS: i64 = 403;

/// Unit of a window or frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Unit {
    /// The unit letters shared by `window` and `frequency`; `mo` and `mon`
    /// both mean months (the spec uses one in each).
    fn parse(s: &str) -> Option<Self> {
        match s {
            "m" => Some(Unit::Minute),
            "h" => Some(Unit::Hour),
            "d" => Some(Unit::Day),
            "w" => Some(Unit::Week),
            "mo" | "mon" => Some(Unit::Month),
            _ => None,
        }
    }
}

/// `n` units: a window or a frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub n: u32,
    pub unit: Unit,
}

fn split_number(s: &str) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 6 {
        return None;
    }
    let n: u32 = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

impl Span {
    pub const fn new(n: u32, unit: Unit) -> Self {
        Self { n, unit }
    }

    /// Parses a `window`: `<n>(m|h|d|w|mon)`.
    pub fn parse_window(s: &str) -> Result<Self, String> {
        let err = || {
            format!("Invalid window '{}': expected <number><unit> with unit m, h, d, w or mon (e.g. 1h, 24h, 7d, 1w, 1mon)", truncate(s))
        };
        let (n, unit) = split_number(s).and_then(|(n, u)| Some((n, Unit::parse(u)?))).ok_or_else(err)?;
        Self::checked(n, unit, "window")
    }

    /// Parses a `window` with the stricter pattern of the user-analytics
    /// endpoint: `^[0-9]+(h|d|w|mon)$`.
    pub fn parse_window_strict(s: &str) -> Result<Self, String> {
        let span = Self::parse_window(s)?;
        if span.unit == Unit::Minute || s.ends_with("mo") {
            return Err(format!("Invalid window '{}': must match ^[0-9]+(h|d|w|mon)$", truncate(s)));
        }
        Ok(span)
    }

    /// Parses a `frequency`: `<n>(m|h|d|w|mo)`.
    pub fn parse_frequency(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "Invalid frequency '{}': expected <number><unit> with unit m (minutes), h, d, w or mo (months), e.g. 5m, 1h, 1d, 1w, 1mo",
                truncate(s)
            )
        };
        let (n, unit) = split_number(s).and_then(|(n, u)| Some((n, Unit::parse(u)?))).ok_or_else(err)?;
        Self::checked(n, unit, "frequency")
    }

    /// Parses a `frequency` with the pattern of the user-analytics endpoint:
    /// `^[0-9]+(m|h|d|w)$` (no months).
    pub fn parse_frequency_strict(s: &str) -> Result<Self, String> {
        let span = Self::parse_frequency(s)?;
        if span.unit == Unit::Month {
            return Err(format!("Invalid frequency '{}': must match ^[0-9]+(m|h|d|w)$", truncate(s)));
        }
        Ok(span)
    }

    fn checked(n: u32, unit: Unit, what: &str) -> Result<Self, String> {
        if n == 0 {
            return Err(format!("{what} must be at least 1 unit"));
        }
        let span = Self { n, unit };
        if span.approx_seconds() > MAX_LOOKBACK_DAYS * 86_400 {
            return Err(format!("{what} must be at most {MAX_LOOKBACK_DAYS} days (data is kept for 400 days)"));
        }
        Ok(span)
    }

    /// Length in seconds, months counted as 31 days (for limits only).
    pub fn approx_seconds(&self) -> i64 {
        let unit = match self.unit {
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 31 * 86_400,
        };
        i64::from(self.n) * unit
    }

    /// The frequency in the canonical form of the `Frequency` schema.
    pub fn frequency_string(&self) -> String {
        let u = match self.unit {
            Unit::Minute => "m",
            Unit::Hour => "h",
            Unit::Day => "d",
            Unit::Week => "w",
            Unit::Month => "mo",
        };
        format!("{}{}", self.n, u)
    }

    /// `end` minus this span: fixed for minutes and hours, calendar steps in
    /// `tz` for days, weeks and months (month ends are clamped: 31 March
    /// minus one month is 28/29 February).
    pub fn before(&self, end: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self.unit {
            Unit::Minute => end - Duration::minutes(i64::from(self.n)),
            Unit::Hour => end - Duration::hours(i64::from(self.n)),
            Unit::Day | Unit::Week | Unit::Month => {
                let local = end.with_timezone(&tz).naive_local();
                let shifted = match self.unit {
                    Unit::Day => local - Duration::days(i64::from(self.n)),
                    Unit::Week => local - Duration::days(7 * i64::from(self.n)),
                    _ => sub_months_clamped(local, self.n),
                };
                resolve_local(tz, shifted)
            }
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.frequency_string())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A resolved half-open time range `[start, end)`, minute aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TimeRange {
    /// Resolves `window` / `from` / `to` against `now` (see module docs).
    pub fn resolve(
        window: Span,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Result<Self, String> {
        let end = ceil_minute(to.unwrap_or(now));
        let start = match from {
            Some(f) => floor_minute(f),
            None => floor_minute(window.before(end, tz)),
        };
        if start >= end {
            return Err("`from` must be earlier than `to`".into());
        }
        if (end - start).num_seconds() > MAX_LOOKBACK_DAYS * 86_400 {
            return Err(format!("time range must be at most {MAX_LOOKBACK_DAYS} days (data is kept for 400 days)"));
        }
        Ok(Self { start, end })
    }

    /// The same length immediately before this range (for comparisons).
    pub fn previous(&self, window: Span, tz: Tz) -> Self {
        let start = floor_minute(window.before(self.start, tz));
        Self { start, end: self.start }
    }
}

/// Instants and ranges written as RFC 3339 text, for the unit tests of
/// this module and of the ones that plan buckets and choose rollups.
#[cfg(test)]
pub(crate) mod test_time {
    use super::TimeRange;
    use chrono::{DateTime, Utc};

    pub fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub fn range(a: &str, b: &str) -> TimeRange {
        TimeRange { start: t(a), end: t(b) }
    }
}

#[cfg(test)]
mod tests {
    use super::test_time::t;
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(Span::parse_window("24h").unwrap(), Span::new(24, Unit::Hour));
        assert_eq!(Span::parse_window("7d").unwrap(), Span::new(7, Unit::Day));
        assert_eq!(Span::parse_window("1w").unwrap(), Span::new(1, Unit::Week));
        assert_eq!(Span::parse_window("1mon").unwrap(), Span::new(1, Unit::Month));
        assert_eq!(Span::parse_window("15m").unwrap(), Span::new(15, Unit::Minute));
        for bad in
            ["", "h", "0h", "1", "1x", "1 h", " 1h", "1h ", "-1h", "1.5h", "1H", "1hour", "1000000h", "500d", "1h;DROP", "14mon", "'1h'"]
        {
            assert!(Span::parse_window(bad).is_err(), "{bad} should be rejected");
        }
        assert!(Span::parse_window_strict("1mon").is_ok());
        assert!(Span::parse_window_strict("1m").is_err());
    }

    #[test]
    fn frequencies_parse() {
        assert_eq!(Span::parse_frequency("1mo").unwrap(), Span::new(1, Unit::Month));
        assert_eq!(Span::parse_frequency("5m").unwrap(), Span::new(5, Unit::Minute));
        assert_eq!(Span::parse_frequency("1mon").unwrap().frequency_string(), "1mo");
        assert!(Span::parse_frequency_strict("1mo").is_err());
        assert!(Span::parse_frequency_strict("2w").is_ok());
        for bad in ["", "0d", "1y", "d", "1dd", "1s"] {
            assert!(Span::parse_frequency(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn range_includes_current_minute() {
        let now = t("2024-01-15T10:30:20Z");
        let r = TimeRange::resolve(Span::new(1, Unit::Hour), None, None, now, Tz::UTC).unwrap();
        assert_eq!(r.end, t("2024-01-15T10:31:00Z"));
        assert_eq!(r.start, t("2024-01-15T09:31:00Z"));
        assert!(TimeRange::resolve(Span::new(1, Unit::Hour), Some(now), Some(now - Duration::hours(1)), now, Tz::UTC).is_err());
    }

    #[test]
    fn calendar_day_back_across_dst() {
        // Berlin springs forward on 2024-03-31: 1d back from 12:00 CEST is 12:00 CET, 23 h earlier.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let end = t("2024-03-31T10:00:00Z");
        assert_eq!(Span::new(1, Unit::Day).before(end, tz), t("2024-03-30T11:00:00Z"));
        assert_eq!(Span::new(24, Unit::Hour).before(end, tz), t("2024-03-30T10:00:00Z"));
        // Month ends clamp.
        assert_eq!(Span::new(1, Unit::Month).before(t("2024-03-31T00:00:00Z"), Tz::UTC), t("2024-02-29T00:00:00Z"));
    }
}
