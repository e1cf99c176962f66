//! The API's time and query-string parsers on arbitrary input: `window`,
//! `frequency`, `tz`, instants, the query-string extractor, range
//! resolution and bucket planning. Never a panic; and what is accepted is
//! sane:
//!
//! * a parsed frequency prints back (`frequency_string`) to itself;
//! * a resolved range is non-empty, minute aligned, at most
//!   `MAX_LOOKBACK_DAYS` long;
//! * planned buckets cover the range with strictly increasing bounds, never
//!   more than the cap, and every instant of the range has a bucket.
//!
//! The input is used twice: as a query string (`/x?<input>`), and split on
//! newlines into `window`, `frequency`, `tz`, `from`, `to` for the parsers
//! directly.
#![no_main]

use agentmeter_api::buckets::Buckets;
use agentmeter_api::calendar::{parse_instant, parse_tz};
use agentmeter_api::params::{Checker, RawParams};
use agentmeter_api::queries::analytics::bucket_index::index_sql;
use agentmeter_api::window::{Span, TimeRange, MAX_LOOKBACK_DAYS};
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;

const MAX_BUCKETS: usize = 2000;

fuzz_target!(|data: &[u8]| {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 34, 56).unwrap();
    let text = String::from_utf8_lossy(data);

    // 1. The whole path an analytics request takes.
    if let Ok(p) = RawParams::from_path_and_query(&format!("/x?{text}")) {
        let mut c = Checker::new();
        let res = c.range(&p, "24h", data.len() % 2 == 0, now);
        let freq = c.frequency(&p.frequency, "1h", data.len() % 3 == 0);
        let _ = c.filters(&p, agentmeter_api::params::Accepts::PNS_TOOL_NAME);
        let _ = c.int("limit", &p.limit, 10, 1, 1000);
        if c.errors.is_empty() {
            check_range(res.range);
            check_buckets(res.range, freq, res.tz);
        }
    }

    // 2. Each parser on its own field.
    let mut fields = text.split('\n');
    let (w, f, z, from, to) = (fields.next(), fields.next(), fields.next(), fields.next(), fields.next());
    let window = w.and_then(|s| {
        let _ = Span::parse_window_strict(s);
        Span::parse_window(s).ok()
    });
    let frequency = f.and_then(|s| {
        let _ = Span::parse_frequency_strict(s);
        Span::parse_frequency(s).ok()
    });
    if let Some(fr) = frequency {
        assert_eq!(Span::parse_frequency(&fr.frequency_string()).unwrap(), fr);
    }
    if let Some(wi) = window {
        assert_eq!(Span::parse_window(&wi.frequency_string()).unwrap(), wi);
    }
    let tz = z.and_then(|s| parse_tz(s).ok()).unwrap_or(Tz::UTC);
    let from = from.and_then(|s| parse_instant(s).ok());
    let to = to.and_then(|s| parse_instant(s).ok());
    if let Some(wi) = window {
        let _ = wi.before(now, tz);
        if let Ok(range) = TimeRange::resolve(wi, from, to, now, tz) {
            check_range(range);
            let _ = range.previous(wi, tz);
            if let Some(fr) = frequency {
                check_buckets(range, fr, tz);
            }
        }
    }
});

fn minute_aligned(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(60) == 0 && t.timestamp_subsec_nanos() == 0
}

fn check_range(r: TimeRange) {
    assert!(r.start < r.end, "empty range {r:?}");
    assert!(minute_aligned(r.start) && minute_aligned(r.end), "{r:?}");
    assert!(r.end - r.start <= Duration::days(MAX_LOOKBACK_DAYS), "{r:?}");
}

fn check_buckets(range: TimeRange, frequency: Span, tz: Tz) {
    let Ok(b) = Buckets::plan(range, frequency, tz, MAX_BUCKETS) else { return };
    assert!(!b.is_empty() && b.len() <= MAX_BUCKETS + 1, "{} buckets", b.len());
    assert!(b.first_start() <= range.start);
    assert!(b.end(b.len() - 1) >= range.end);
    for i in 0..b.len() {
        assert!(b.start(i) < b.end(i), "bucket {i} of {frequency} in {tz} is empty: {range:?}");
    }
    assert!(b.index_of(range.start).is_some() && b.index_of(range.end - Duration::minutes(1)).is_some());
    let _ = index_sql(&b, "minute");
}
