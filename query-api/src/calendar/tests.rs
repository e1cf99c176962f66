//! Unit and property tests of the calendar, the properties checked against
//! chrono-tz in every zone that has a DST rule or an offset that is not a
//! whole hour.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::{Tz, TZ_VARIANTS};
use proptest::prelude::*;

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Zones whose offset changes between 1970 and 2037 (a DST rule, or a
/// change of standard offset) or is not a whole number of hours at some
/// point (India, Nepal, Chatham, Lord Howe, ...).
pub(crate) fn interesting_zones() -> &'static [Tz] {
    static ZONES: OnceLock<Vec<Tz>> = OnceLock::new();
    ZONES.get_or_init(|| {
        TZ_VARIANTS
            .iter()
            .copied()
            .filter(|tz| {
                let mut offsets = std::collections::BTreeSet::new();
                for year in 1970..2038 {
                    for month in 1..=12 {
                        for day in [1, 15] {
                            let at = Utc.with_ymd_and_hms(year, month, day, 12, 0, 0).unwrap();
                            offsets.insert(tz.offset_from_utc_datetime(&at.naive_utc()).fix().local_minus_utc());
                        }
                    }
                }
                offsets.len() > 1 || offsets.iter().any(|o| o % 3600 != 0)
            })
            .collect()
    })
}

fn local(t: DateTime<Utc>, tz: Tz) -> chrono::NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// Dates from 1971 to 2037.
fn date() -> impl Strategy<Value = NaiveDate> {
    (0i64..(67 * 365)).prop_map(|d| NaiveDate::from_ymd_opt(1971, 1, 1).unwrap() + Duration::days(d))
}

/// Instants from 1971 to 2037, millisecond precision.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (31_536_000_000i64..2_145_916_800_000).prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
}

#[test]
fn the_selection_has_the_zones_that_matter() {
    let zones = interesting_zones();
    for name in [
        "Europe/Berlin",
        "America/New_York",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "Pacific/Apia",
    ] {
        assert!(zones.iter().any(|z| z.name() == name), "{name} missing");
    }
    assert!(!zones.contains(&Tz::UTC));
    assert!(zones.len() > 200, "{} zones", zones.len());
}

#[test]
fn every_zone_name_parses_to_itself() {
    for tz in TZ_VARIANTS {
        assert_eq!(parse_tz(tz.name()), Ok(tz));
    }
    assert!(parse_tz("Mars/Olympus").is_err());
    assert!(parse_tz("").is_err());
}

#[test]
fn instants_parse() {
    assert_eq!(parse_instant("1700000000000").unwrap(), t("2023-11-14T22:13:20Z"));
    assert_eq!(parse_instant("2024-01-15T10:30:00+01:00").unwrap(), t("2024-01-15T09:30:00Z"));
    assert_eq!(parse_instant("2024-01-15T10:30:00.250Z").unwrap(), t("2024-01-15T10:30:00.250Z"));
    assert!(parse_instant("9999-01-01T00:00:00Z").is_err(), "five-digit years would follow");
    assert!(parse_instant("0281868441411084").is_err());
    assert!(parse_instant("1969-12-31T23:59:59Z").is_err());
    assert_eq!(parse_instant("9998-12-31T23:59:59Z").unwrap(), t("9998-12-31T23:59:59Z"));
    for bad in [
        "2024-01-15",
        "2024-01-15T10:30:00",
        "yesterday",
        "",
        " 1700000000000",
        "2024-01-15T10:30:00Z ",
        "-1",
        "+1",
        "1.5",
        "12345678901234567",
    ] {
        assert!(parse_instant(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn known_days() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    // Spring forward: the day is 23 h; fall back: 25 h.
    assert_eq!(local_midnight(berlin, d("2025-03-31")) - local_midnight(berlin, d("2025-03-30")), Duration::hours(23));
    assert_eq!(local_midnight(berlin, d("2025-10-27")) - local_midnight(berlin, d("2025-10-26")), Duration::hours(25));
    // São Paulo's midnight fell in the gap: the day began at 01:00 local.
    let sp: Tz = "America/Sao_Paulo".parse().unwrap();
    assert_eq!(local_midnight(sp, d("2018-11-04")), t("2018-11-04T03:00:00Z"));
    // Samoa skipped 30 December 2011: that day "begins" when 31 December does.
    let apia: Tz = "Pacific/Apia".parse().unwrap();
    assert_eq!(local_midnight(apia, d("2011-12-30")), local_midnight(apia, d("2011-12-31")));
    // A fold across midnight (St. John's fell back from 00:01 NDT to 23:01
    // NST until 2011): 1996-10-27 began at its first 00:00 (02:30 UTC), and
    // an instant a minute later, which the wall clock shows as 23:01 on the
    // 26th, belongs to the 27th.
    let st_johns: Tz = "America/St_Johns".parse().unwrap();
    let t = Utc.with_ymd_and_hms(1996, 10, 27, 2, 31, 0).unwrap();
    assert_eq!(t.with_timezone(&st_johns).date_naive(), d("1996-10-26"));
    assert_eq!(local_midnight(st_johns, d("1996-10-27")), Utc.with_ymd_and_hms(1996, 10, 27, 2, 30, 0).unwrap());
    assert_eq!(local_date(t, st_johns), d("1996-10-27"));
    // Month arithmetic clamps.
    assert_eq!(sub_months_clamped(d("2024-03-31").and_hms_opt(0, 0, 0).unwrap(), 1).date(), d("2024-02-29"));
    assert_eq!(day_of_month_shifted(d("2024-01-20"), -1, 28), d("2023-12-28"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Local midnight is the instant chrono-tz gives for 00:00 (the earlier
    /// one in a fold), or, when 00:00 falls in a gap, the instant the clocks
    /// jump over it.
    #[test]
    fn local_midnight_in_every_zone(d in date()) {
        let midnight = d.and_hms_opt(0, 0, 0).unwrap();
        for &tz in interesting_zones() {
            let r = local_midnight(tz, d);
            match tz.from_local_datetime(&midnight).earliest() {
                Some(e) => {
                    prop_assert_eq!(r, e.with_timezone(&Utc), "{} {}", tz, d);
                    prop_assert_eq!(local(r, tz), midnight);
                }
                None => {
                    prop_assert!(local(r, tz) > midnight, "{} {}: {:?}", tz, d, local(r, tz));
                    prop_assert!(local(r - Duration::minutes(1), tz) < midnight, "{} {}: the jump is not within the minute before", tz, d);
                }
            }
            // Days follow each other: the next midnight is later.
            prop_assert!(local_midnight(tz, d + Duration::days(1)) >= r);
        }
    }

    /// Any wall-clock time: its instant if it exists (the earlier of two),
    /// else the first existing minute after the gap.
    #[test]
    fn resolve_local_in_every_zone(d in date(), minute in 0u32..(24 * 60)) {
        let wall = d.and_hms_opt(minute / 60, minute % 60, 0).unwrap();
        for &tz in interesting_zones() {
            let r = resolve_local(tz, wall);
            match tz.from_local_datetime(&wall).earliest() {
                Some(e) => prop_assert_eq!(r, e.with_timezone(&Utc), "{} {}", tz, wall),
                None => {
                    prop_assert!(local(r, tz) > wall, "{} {}", tz, wall);
                    prop_assert!(local(r - Duration::minutes(1), tz) < wall, "{} {}", tz, wall);
                    prop_assert_eq!(r.second(), 0);
                }
            }
        }
    }

    /// The local date of an instant begins at or before it, and the next one
    /// after it, in every zone.
    #[test]
    fn an_instant_lies_in_its_local_day(now in instant()) {
        for &tz in interesting_zones() {
            let d = local_date(now, tz);
            prop_assert!(local_midnight(tz, d) <= now, "{} {}", tz, now);
            prop_assert!(now < local_midnight(tz, d + Duration::days(1)), "{} {}", tz, now);
        }
    }

    #[test]
    fn floors_and_ceilings(now in instant()) {
        let (fm, cm, fh, ch) = (floor_minute(now), ceil_minute(now), floor_hour(now), ceil_hour(now));
        prop_assert!(fm <= now && now - fm < Duration::minutes(1) && fm.timestamp() % 60 == 0 && fm.nanosecond() == 0);
        prop_assert!(cm >= now && cm - now < Duration::minutes(1) && cm.timestamp() % 60 == 0 && cm.nanosecond() == 0);
        prop_assert!(fh <= now && now - fh < Duration::hours(1) && is_whole_hour(fh));
        prop_assert!(ch >= now && ch - now < Duration::hours(1) && is_whole_hour(ch));
        prop_assert_eq!(is_whole_hour(now), fh == now);
        prop_assert_eq!(minute_of(now) * 60, fm.timestamp());
    }

    #[test]
    fn month_arithmetic(d in date(), k in -30i64..30, day in 1u32..=28, n in 0u32..30) {
        let first = month_start(month_index(d));
        prop_assert_eq!((first.year(), first.month(), first.day()), (d.year(), d.month(), 1));
        prop_assert_eq!(month_index(month_start(month_index(d) + k)), month_index(d) + k);
        let shifted = day_of_month_shifted(d, k, day);
        prop_assert_eq!((month_index(shifted), shifted.day()), (month_index(d) + k, day));
        let back = sub_months_clamped(d.and_hms_opt(12, 0, 0).unwrap(), n).date();
        prop_assert_eq!(month_index(back), month_index(d) - i64::from(n));
        prop_assert!(back.day() == d.day() || (back.day() < d.day() && back.succ_opt().unwrap().day() == 1));
    }

    /// RFC 3339 in any offset and epoch milliseconds name the same instant.
    #[test]
    fn instants_round_trip(now in instant(), offset_min in -(14 * 60)..=(14 * 60)) {
        let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
        prop_assert_eq!(parse_instant(&now.with_timezone(&offset).to_rfc3339()), Ok(now));
        prop_assert_eq!(parse_instant(&now.timestamp_millis().to_string()), Ok(now));
        let spaced = format!(" {}", now.to_rfc3339());
        prop_assert!(parse_instant(&spaced).is_err());
    }
}
