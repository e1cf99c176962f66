//! The hourly, the tenant-level hourly and the minute rollups give the same
//! answers: the same requests are answered as the API does
//! (`rollup::choose_ungrouped`: the tenant-level rollup when nothing is
//! filtered), through `rollup::choose` (the dimension-keyed hourly rollup)
//! and forced onto the minute rollup, over the fixture plus queries that
//! straddle hour edges and the range start.
//! Counts, sums and distinct queries must be identical; t-digest
//! percentiles close. Totals are also checked against the events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use agentmeter_api::buckets::Buckets;
use agentmeter_api::db::Db;
use agentmeter_api::metrics::Metrics;
use agentmeter_api::queries::analytics::rollup::{self, Source};
use agentmeter_api::queries::analytics::tool_calls::{self, CallStats, Need};
use agentmeter_api::queries::Filters;
use agentmeter_api::queries::{CallKinds, Scope};
use agentmeter_api::window::{Span, TimeRange, Unit};
use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::fixture::{blank, World};
use super::App;

fn assert_same(auto: &CallStats, minute: &CallStats, what: &str) {
    assert_eq!(
        (auto.calls, auto.errors, auto.queries, auto.suggestions, auto.runtime_count),
        (minute.calls, minute.errors, minute.queries, minute.suggestions, minute.runtime_count),
        "{what}"
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
    assert!(close(auto.latency_sum_ms, minute.latency_sum_ms), "{what}: latency sum {} vs {}", auto.latency_sum_ms, minute.latency_sum_ms);
    assert!(close(auto.runtime_sum_ms, minute.runtime_sum_ms), "{what}: runtime sum");
    for i in 0..3 {
        let (a, m) = (auto.latency_pct_ms(i), minute.latency_pct_ms(i));
        assert!((a - m).abs() <= 0.1 * 3000.0, "{what}: percentile {i}: {a} vs {m}");
    }
}

#[tokio::test]
async fn hourly_and_minute_rollups_answer_alike() {
    let app = App::start("an_rollups", &[]).await;
    let now = Utc::now();
    let tenant = app.tenant_a;
    let mut world = World::generate(tenant, 7, 300, now, "gamma");
    // Queries whose calls straddle an hour edge (the same query in two
    // hours of one day bucket) and the edge between the minute head and
    // the whole hours of a range starting at :17.
    let hour = (now - Duration::days(2)).duration_trunc(Duration::hours(1)).unwrap();
    let nav = world.navs[0].clone();
    let mut edge_query = |at: Vec<DateTime<Utc>>| {
        let q = Uuid::new_v4();
        for t in at {
            let mut r = blank(tenant, t);
            r.query_id = q;
            r.project_id = nav.project;
            r.navigator_id = nav.navigator_id;
            r.navigator_instance_id = nav.instance;
            world.rows.push(r);
        }
    };
    for k in 0..5 {
        let edge = hour - Duration::hours(k);
        edge_query(vec![edge - Duration::seconds(30), edge + Duration::seconds(30)]);
    }
    let head_start = hour - Duration::hours(6) + Duration::minutes(17);
    edge_query(vec![head_start + Duration::minutes(20), head_start + Duration::minutes(50)]);
    app.insert_calls(&world.rows).await;

    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), Arc::new(Metrics::new()));
    let end = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let by_project = Filters { project_id: Some(nav.project), ..Filters::default() };
    let cases = [
        (
            "daily UTC 30 days",
            TimeRange { start: end - Duration::days(30), end },
            Span::new(1, Unit::Day),
            Tz::UTC,
            Filters::default(),
            CallKinds::Tool,
        ),
        (
            "hourly Berlin 3 days",
            TimeRange { start: end - Duration::days(3), end },
            Span::new(1, Unit::Hour),
            berlin,
            Filters::default(),
            CallKinds::Tool,
        ),
        (
            "daily UTC by project, all kinds",
            TimeRange { start: end - Duration::days(7), end },
            Span::new(1, Unit::Day),
            Tz::UTC,
            by_project.clone(),
            CallKinds::All,
        ),
        (
            "3-hourly UTC proxy calls",
            TimeRange { start: end - Duration::days(5), end },
            Span::new(3, Unit::Hour),
            Tz::UTC,
            Filters::default(),
            CallKinds::Proxy,
        ),
    ];
    for (what, range, freq, tz, filters, kinds) in cases {
        let buckets = Buckets::plan(range, freq, tz, 2000).unwrap();
        let scope = Scope { tenant, range: TimeRange { start: buckets.first_start(), end }, filters, kinds };
        let chosen = rollup::choose(&scope, Some(&buckets), true);
        assert!(matches!(chosen, Source::Hourly(s) if s.tail.is_some()), "{what}: {chosen:?}");
        let ungrouped = rollup::choose_ungrouped(&scope, Some(&buckets), true);
        let whole_tenant = scope.filters == Filters::default();
        assert_eq!(matches!(ungrouped, Source::TenantHourly(_)), whole_tenant, "{what}: {ungrouped:?}");
        let auto = tool_calls::series(&db, &scope, &buckets, Need::ALL).await.unwrap();
        let hourly = tool_calls::series_via(&db, &scope, &buckets, Need::ALL, &chosen).await.unwrap();
        let minute = tool_calls::series_via(&db, &scope, &buckets, Need::ALL, &Source::Minute).await.unwrap();
        assert_eq!(auto.len(), minute.len());
        assert!(minute.iter().map(|s| s.calls).sum::<u64>() > 0, "{what}: no data");
        for (i, ((a, h), m)) in auto.iter().zip(&hourly).zip(&minute).enumerate() {
            assert_same(a, m, &format!("{what}, bucket {i}, as the API reads it"));
            assert_same(h, m, &format!("{what}, bucket {i}, dimension-keyed hourly"));
        }
    }

    // Totals over a range that starts at :17 (minute head, whole hours,
    // minute tail), against the events.
    let range = TimeRange { start: head_start, end };
    for (kinds, filters) in [(CallKinds::Tool, Filters::default()), (CallKinds::All, by_project.clone())] {
        let scope = Scope { tenant, range, filters: filters.clone(), kinds };
        let chosen = rollup::choose(&scope, None, true);
        assert!(matches!(chosen, Source::Hourly(s) if s.head.is_some() && s.tail.is_some()), "{chosen:?}");
        let auto = tool_calls::totals(&db, &scope, Need::ALL).await.unwrap();
        let hourly = tool_calls::totals_via(&db, &scope, Need::ALL, &chosen).await.unwrap();
        let minute = tool_calls::totals_via(&db, &scope, Need::ALL, &Source::Minute).await.unwrap();
        assert_same(&auto, &minute, "totals");
        assert_same(&hourly, &minute, "totals, dimension-keyed hourly");
        let selected: Vec<_> = world
            .rows
            .iter()
            .filter(|r| r.occurred_at >= range.start && r.occurred_at < range.end)
            .filter(|r| kinds == CallKinds::All || r.call_kind == "tool")
            .filter(|r| filters.project_id.is_none_or(|p| r.project_id == p))
            .collect();
        let queries: BTreeSet<Uuid> = selected.iter().map(|r| r.query_id).filter(|q| !q.is_nil()).collect();
        assert_eq!(auto.calls, selected.len() as u64);
        assert_eq!(auto.errors, selected.iter().filter(|r| !r.success).count() as u64);
        assert_eq!(auto.queries, queries.len() as u64);
    }
    app.drop_db().await;
}
