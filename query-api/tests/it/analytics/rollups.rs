//! Every rollup path gives the raw answer: the same requests are answered
//! as the API does (`rollup::choose_ungrouped` / `choose_grouped`: the
//! tenant-level, per-navigator or per-server rollups of 0005 and 0011, the
//! tenant 5-minute rollups of 0012 for buckets that cut hours),
//! through `rollup::choose` (the dimension-keyed hourly rollup) and forced
//! onto the minute rollup, over the fixture plus queries that straddle
//! hour edges and the range start. Counts, sums and distinct queries must
//! be identical, bucket by bucket, to each other and to the figures
//! computed here from the events (queries counted at their execution; for
//! the proxy kinds, the queries that made proxy calls);
//! t-digest percentiles close.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use agentmeter_api::buckets::Buckets;
use agentmeter_api::db::Db;
use agentmeter_api::metrics::Metrics;
use agentmeter_api::queries::analytics::rollup::{self, Source};
use agentmeter_api::queries::analytics::tool_calls::{self, Dim, Need};
use agentmeter_api::queries::Filters;
use agentmeter_api::queries::{CallKinds, Scope};
use agentmeter_api::window::{Span, TimeRange, Unit};
use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::fixture::{assert_same_stats, blank, query_execution, World};
use super::App;

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
        for (i, t) in at.into_iter().enumerate() {
            let mut r = blank(tenant, t);
            r.query_id = q;
            r.project_id = nav.project;
            r.navigator_id = nav.navigator_id;
            r.navigator_instance_id = nav.instance;
            if i == 0 {
                // The query's execution, at its first call.
                world.executions.push(query_execution(q, t, &r));
            }
            world.rows.push(r);
        }
    };
    for k in 0..5 {
        let edge = hour - Duration::hours(k);
        edge_query(vec![edge - Duration::seconds(30), edge + Duration::seconds(30)]);
    }
    let head_start = hour - Duration::hours(6) + Duration::minutes(17);
    edge_query(vec![head_start + Duration::minutes(20), head_start + Duration::minutes(50)]);
    // Calls in the partial 5-minute block at the end of the sub-hour series
    // below (they end 3 minutes into a block), and one just after it.
    let five = Duration::minutes(5);
    let cut = now.duration_trunc(five).unwrap() - Duration::minutes(2);
    edge_query(vec![cut - Duration::minutes(3) + Duration::seconds(10), cut - Duration::seconds(20), cut + Duration::seconds(10)]);
    edge_query(vec![cut - Duration::minutes(3) - Duration::seconds(20), cut - Duration::minutes(8) + Duration::seconds(5)]);
    // A query in the head, the whole blocks and the tail of a 57-minute
    // range from :02 to :59, and one call outside it.
    let short_start = hour - Duration::hours(3) + Duration::minutes(2);
    edge_query(vec![
        short_start + Duration::seconds(10),
        short_start + Duration::minutes(28),
        short_start + Duration::minutes(55),
        short_start + Duration::minutes(57) + Duration::seconds(30),
    ]);
    // A call of the first tool, in the first project, 15 s after that end:
    // in the last hour of the filtered series that end there too.
    let tool0 = world.tools[0].clone();
    let mut late_call = blank(tenant, cut + Duration::seconds(15));
    (late_call.project_id, late_call.navigator_id, late_call.navigator_instance_id) = (nav.project, nav.navigator_id, nav.instance);
    (late_call.tool_id, late_call.tool_name) = (tool0.id, tool0.name.clone());
    (late_call.server_id, late_call.server_instance_id, late_call.server_name) =
        (tool0.server_id, tool0.server_instance, tool0.server_name.clone());
    world.rows.push(late_call.clone());
    // Calls of the same tool, project and server instance in the last day
    // of the filtered series below at any hour of the day the test runs
    // (just after midnight the late call is in the day before): one in the
    // minute before `cut`, one in the current minute (after `cut`, like
    // the late call; before the other series' end).
    for at in [cut - Duration::minutes(1), now.duration_trunc(Duration::minutes(1)).unwrap()] {
        world.rows.push(agentmeter_schema::rows::ToolCallRow { event_id: Uuid::new_v4(), occurred_at: at, ..late_call.clone() });
    }
    // A query without calls 20 s after the end of the sub-hour series, in
    // their last block: read whole, that block would count it.
    let late = blank(tenant, cut + Duration::seconds(20));
    world.executions.push(query_execution(Uuid::new_v4(), late.occurred_at, &late));
    app.insert_calls(&world.rows).await;
    app.insert_executions(&world.executions).await;
    // Queries counted at their execution, per project, navigator and time.
    let executions: Vec<(DateTime<Utc>, Uuid, Uuid)> =
        world.executions.iter().map(|e| (e.occurred_at, e.project_id, e.navigator_id)).collect();
    let queries_in = |from: DateTime<Utc>, to: DateTime<Utc>, project: Option<Uuid>| {
        executions.iter().filter(|(t, p, _)| *t >= from && *t < to && project.is_none_or(|v| *p == v)).count() as u64
    };

    let metrics = Arc::new(Metrics::new());
    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), metrics.clone());
    // How many series queries ran: (the last block read whole, the split),
    // for the calls and for the queries.
    let count = |name: &str| metrics.clickhouse_query_duration_seconds.with_label_values(&[name]).get_sample_count();
    let series_queries = || (count("tool_calls_series_whole_tail"), count("tool_calls_series"));
    let query_counts = || (count("tool_calls_queries_whole_tail"), count("tool_calls_queries"));
    let end = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    // Run in the last minute of an hour, the ranges end on the hour: they
    // have no minute tail, whole hours reach their end.
    let on_the_hour = end.timestamp() % 3600 == 0;
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
    // The queries that made proxy calls (what proxy kinds count).
    let proxy_calls: Vec<(DateTime<Utc>, Uuid)> =
        world.rows.iter().filter(|r| r.call_kind != "tool" && !r.query_id.is_nil()).map(|r| (r.occurred_at, r.query_id)).collect();
    let proxy_queries_in = |from: DateTime<Utc>, to: DateTime<Utc>| {
        proxy_calls.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, q)| *q).collect::<BTreeSet<_>>().len() as u64
    };
    for (what, range, freq, tz, filters, kinds) in cases {
        let buckets = Buckets::plan(range, freq, tz, 2000).unwrap();
        let scope = Scope { tenant, range: TimeRange { start: buckets.first_start(), end }, filters, kinds };
        // Proxy kinds count the queries that made proxy calls: the minute
        // rollup's exact sets, so the hourly paths are compared without
        // queries.
        let need = if kinds == CallKinds::Proxy { Need::LATENCY } else { Need::ALL };
        if kinds == CallKinds::Proxy {
            assert_eq!(rollup::choose(&scope, Some(&buckets), true), Source::Minute, "{what}");
            assert_eq!(rollup::choose_ungrouped(&scope, Some(&buckets), true), Source::Minute, "{what}");
        }
        let chosen = rollup::choose(&scope, Some(&buckets), need.queries);
        assert!(matches!(&chosen, Source::Hourly(s) if s.tail.is_some() != on_the_hour), "{what}: {chosen:?}");
        let ungrouped = rollup::choose_ungrouped(&scope, Some(&buckets), need.queries);
        let whole_tenant = scope.filters == Filters::default();
        if whole_tenant {
            assert!(matches!(ungrouped, Source::TenantHourly(_)), "{what}: {ungrouped:?}");
        } else {
            assert!(matches!(ungrouped, Source::NavigatorHourly(_)), "{what}: {ungrouped:?}");
        }
        let auto = tool_calls::series(&db, &scope, &buckets, need).await.unwrap();
        let hourly = tool_calls::series_via(&db, &scope, &buckets, need, &chosen).await.unwrap();
        let minute = tool_calls::series_via(&db, &scope, &buckets, need, &Source::Minute).await.unwrap();
        let before = query_counts();
        let with_queries = tool_calls::series(&db, &scope, &buckets, Need::QUERIES).await.unwrap();
        // The queries' last hour too, filtered by project or not (not the
        // queries that made proxy calls: those are the calls' sets).
        let after = query_counts();
        let queries_tail = rollup::query_counts_whole_tail(&scope, &buckets);
        assert_eq!(queries_tail.is_some(), kinds != CallKinds::Proxy && !on_the_hour, "{what}");
        if queries_tail.is_some() {
            assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "{what}: the queries' last hour read whole, once");
        }
        // Calls and errors alone (hourly buckets: the hourly rows summed by the API itself).
        let before = series_queries();
        let calls_only = tool_calls::series(&db, &scope, &buckets, Need::CALLS).await.unwrap();
        // A range that ends inside the current hour (not at :00), which
        // holds no event after the end: that hour is read whole from the
        // hour table.
        let whole_tail = rollup::whole_tail(&scope, &ungrouped, &buckets, rollup::Columns::All);
        assert_eq!(whole_tail.is_some(), !on_the_hour, "{what}: {ungrouped:?}");
        if whole_tail.is_some() {
            let after = series_queries();
            assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "{what}: the last hour read whole, once");
        }
        assert_eq!(auto.len(), minute.len());
        assert_eq!(calls_only.len(), minute.len());
        assert!(minute.iter().map(|s| s.calls).sum::<u64>() > 0, "{what}: no data");
        for (i, ((a, h), m)) in auto.iter().zip(&hourly).zip(&minute).enumerate() {
            assert_same_stats(a, m, &format!("{what}, bucket {i}, as the API reads it"));
            assert_same_stats(h, m, &format!("{what}, bucket {i}, dimension-keyed hourly"));
            assert_eq!((calls_only[i].calls, calls_only[i].errors), (m.calls, m.errors), "{what}, bucket {i}, calls only");
            let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
            let want = if kinds == CallKinds::Proxy {
                proxy_queries_in(buckets.start(i), bucket_end)
            } else {
                queries_in(buckets.start(i), bucket_end, scope.filters.project_id)
            };
            assert_eq!(with_queries[i].queries, want, "{what}, bucket {i}: queries");
        }
        assert!(with_queries.iter().map(|s| s.queries).sum::<u64>() > 0, "{what}: no queries");
    }

    // Buckets that cut hours, over a whole tenant: the tenant 5-minute
    // rollups for the whole 5-minute blocks (hourly and daily buckets at
    // +05:45 begin at :15 UTC) and the tenant minute rollup for the 3
    // minutes after the last whole block, against the minute rollup and
    // the events, bucket by bucket (queries counted at their execution).
    let calls_in = |from: DateTime<Utc>, to: DateTime<Utc>| {
        world.rows.iter().filter(|r| r.call_kind == "tool" && r.occurred_at >= from && r.occurred_at < to).count() as u64
    };
    let kathmandu: Tz = "Asia/Kathmandu".parse().unwrap();
    let sub_hour = [
        ("5-minute UTC, 1 day", Duration::days(1), Span::new(5, Unit::Minute), Tz::UTC),
        ("15-minute Kathmandu, 2 days", Duration::days(2), Span::new(15, Unit::Minute), kathmandu),
        ("hourly Kathmandu, 3 days", Duration::days(3), Span::new(1, Unit::Hour), kathmandu),
        ("daily Kathmandu, 30 days", Duration::days(30), Span::new(1, Unit::Day), kathmandu),
    ];
    for (what, len, freq, tz) in sub_hour {
        let buckets = Buckets::plan(TimeRange { start: cut - len, end: cut }, freq, tz, 2000).unwrap();
        let scope = Scope {
            tenant,
            range: TimeRange { start: buckets.first_start(), end: cut },
            filters: Filters::default(),
            kinds: CallKinds::Tool,
        };
        let chosen = rollup::choose_ungrouped(&scope, Some(&buckets), true);
        assert!(
            matches!(chosen, Source::TenantFiveMinutes(s) if s.tail == Some(TimeRange { start: cut - Duration::minutes(3), end: cut })),
            "{what}: {chosen:?}"
        );
        if tz == kathmandu && freq.unit != Unit::Minute {
            assert_eq!(rollup::split(scope.range, Some(&buckets)), None, "{what}: local hours begin at :15 UTC");
        }
        let before = query_counts();
        let auto = tool_calls::series(&db, &scope, &buckets, Need::ALL).await.unwrap();
        let after = query_counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "{what}: the queries' last block read whole, then split");
        let minute = tool_calls::series_via(&db, &scope, &buckets, Need::ALL, &Source::Minute).await.unwrap();
        // Calls and errors alone (5-minute buckets: the 5-minute rows summed by the API itself).
        let before = series_queries();
        let calls_only = tool_calls::series(&db, &scope, &buckets, Need::CALLS).await.unwrap();
        // The last block holds a call 10 s after the range's end: read
        // whole, it would count that call; so it is read again as split.
        let after = series_queries();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "{what}: the last block read whole, then split");
        assert_eq!((auto.len(), calls_only.len()), (buckets.len(), buckets.len()));
        for (i, (a, m)) in auto.iter().zip(&minute).enumerate() {
            assert_same_stats(a, m, &format!("{what}, bucket {i}"));
            let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { cut };
            let want = (calls_in(buckets.start(i), bucket_end), queries_in(buckets.start(i), bucket_end, None));
            assert_eq!((a.calls, a.queries), want, "{what}, bucket {i}");
            assert_eq!((calls_only[i].calls, calls_only[i].errors), (m.calls, m.errors), "{what}, bucket {i}, calls only");
        }
        let last = auto.last().unwrap();
        assert!(last.calls > 0 && last.queries > 0, "{what}: the last bucket, with the partial block, has calls and queries");
    }

    // 5-minute buckets up to now: the last block has no call after the
    // range's end, so it is read whole from the 5-minute table, once.
    let buckets = Buckets::plan(TimeRange { start: end - Duration::days(1), end }, Span::new(5, Unit::Minute), Tz::UTC, 2000).unwrap();
    let scope =
        Scope { tenant, range: TimeRange { start: buckets.first_start(), end }, filters: Filters::default(), kinds: CallKinds::Tool };
    let chosen = rollup::choose_ungrouped(&scope, Some(&buckets), true);
    let whole_tail = rollup::whole_tail(&scope, &chosen, &buckets, rollup::Columns::All);
    if end.timestamp() % 300 != 0 {
        assert!(whole_tail.as_ref().is_some_and(|w| w.end == end && w.last_block == end.duration_trunc(five).unwrap()), "{chosen:?}");
    }
    for need in [Need::ALL, Need::CALLS, Need::LATENCY] {
        let before = series_queries();
        let auto = tool_calls::series(&db, &scope, &buckets, need).await.unwrap();
        let after = series_queries();
        if whole_tail.is_some() {
            assert_eq!((after.0 - before.0, after.1 - before.1), (1, 0), "5-minute buckets up to now, {need:?}");
        }
        let minute = tool_calls::series_via(&db, &scope, &buckets, need, &Source::Minute).await.unwrap();
        assert_eq!(auto.len(), buckets.len());
        for (i, (a, m)) in auto.iter().zip(&minute).enumerate() {
            let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
            assert_eq!((a.calls, a.errors), (m.calls, m.errors), "5-minute buckets up to now, {need:?}, bucket {i}");
            assert_eq!(a.calls, calls_in(buckets.start(i), bucket_end), "5-minute buckets up to now, {need:?}, bucket {i}");
            if need == Need::ALL {
                assert_same_stats(a, m, &format!("5-minute buckets up to now, bucket {i}"));
            }
        }
    }

    // A row written before migration 0014 has no watermark (it reads
    // 2199): the block that holds one is read as split.
    if let Some(w) = whole_tail {
        app.db
            .query("INSERT INTO tool_calls_tenant_5m (tenant_id, five_minute, call_kind, calls) VALUES (?, ?, 'tool', 0)")
            .bind(tenant)
            .bind(w.last_block.timestamp())
            .execute()
            .await
            .unwrap();
        let before = series_queries();
        let auto = tool_calls::series(&db, &scope, &buckets, Need::CALLS).await.unwrap();
        let after = series_queries();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "a block with a row from before 0014");
        assert_eq!(auto.last().unwrap().calls, calls_in(w.last_block, end));
    }

    // Totals over 57 minutes from :02: 3 minutes of head, whole 5-minute
    // blocks, 4 minutes of tail.
    let range = TimeRange { start: short_start, end: short_start + Duration::minutes(57) };
    let scope = Scope { tenant, range, filters: Filters::default(), kinds: CallKinds::Tool };
    let chosen = rollup::choose_ungrouped(&scope, None, true);
    assert!(matches!(chosen, Source::TenantFiveMinutes(s) if s.head.is_some() && s.tail.is_some()), "{chosen:?}");
    let auto = tool_calls::totals(&db, &scope, Need::ALL).await.unwrap();
    let minute = tool_calls::totals_via(&db, &scope, Need::ALL, &Source::Minute).await.unwrap();
    assert_same_stats(&auto, &minute, "57-minute totals");
    assert_eq!((auto.calls, auto.queries), (calls_in(range.start, range.end), queries_in(range.start, range.end, None)));
    assert!(auto.calls >= 3);

    // Filtered by tool: the per-tool rollup with the exact sets of the
    // queries that used the tool, daily over 30 days, bucket by bucket.
    let tool = world.tools[0].name.clone();
    let buckets = Buckets::plan(TimeRange { start: end - Duration::days(30), end }, Span::new(1, Unit::Day), Tz::UTC, 2000).unwrap();
    let by_tool = Filters { tool_name: Some(tool.clone()), ..Filters::default() };
    let scope = Scope { tenant, range: TimeRange { start: buckets.first_start(), end }, filters: by_tool, kinds: CallKinds::Tool };
    assert!(matches!(rollup::choose_ungrouped(&scope, Some(&buckets), true), Source::ToolHourly(_)));
    let auto = tool_calls::series(&db, &scope, &buckets, Need::ALL).await.unwrap();
    let minute = tool_calls::series_via(&db, &scope, &buckets, Need::ALL, &Source::Minute).await.unwrap();
    for (i, (a, m)) in auto.iter().zip(&minute).enumerate() {
        assert_same_stats(a, m, &format!("by tool, day {i}"));
        let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
        let calls: Vec<_> = world
            .rows
            .iter()
            .filter(|r| r.call_kind == "tool" && r.tool_name == tool && r.occurred_at >= buckets.start(i) && r.occurred_at < bucket_end)
            .collect();
        let queries: BTreeSet<Uuid> = calls.iter().map(|r| r.query_id).filter(|q| !q.is_nil()).collect();
        assert_eq!((a.calls, a.queries), (calls.len() as u64, queries.len() as u64), "by tool, day {i}");
    }
    assert!(auto.iter().map(|s| s.queries).sum::<u64>() > 0);

    // Series filtered by project, tool or server instance read their hourly
    // rollup's last hour whole too (0015's watermarks; `last_used` of
    // `tool_calls_1h`): once when the range ends at the next minute, and
    // again as split when it ends at `cut`, before the late call.
    let matches = |r: &agentmeter_schema::rows::ToolCallRow, f: &Filters| {
        f.project_id.is_none_or(|p| r.project_id == p)
            && f.tool_name.as_ref().is_none_or(|t| r.tool_name == *t)
            && f.server_instance_id.is_none_or(|s| r.server_instance_id == s)
    };
    let filtered = [
        Filters { project_id: Some(nav.project), ..Filters::default() },
        Filters { tool_name: Some(tool0.name.clone()), ..Filters::default() },
        Filters { server_instance_id: Some(tool0.server_instance), ..Filters::default() },
    ];
    for filters in filtered {
        for (range_end, reads) in [(end, (1, 0)), (cut, (1, 1))] {
            let what = format!("{filters:?} up to {range_end}");
            let buckets =
                Buckets::plan(TimeRange { start: range_end - Duration::days(7), end: range_end }, Span::new(1, Unit::Day), Tz::UTC, 2000)
                    .unwrap();
            let scope = Scope {
                tenant,
                range: TimeRange { start: buckets.first_start(), end: range_end },
                filters: filters.clone(),
                kinds: CallKinds::Tool,
            };
            let chosen = rollup::choose_ungrouped(&scope, Some(&buckets), false);
            assert!(matches!(chosen, Source::NavigatorHourly(_) | Source::ToolHourly(_) | Source::Hourly(_)), "{what}: {chosen:?}");
            if range_end.timestamp() % 3600 == 0 {
                continue;
            }
            assert!(rollup::whole_tail(&scope, &chosen, &buckets, rollup::Columns::All).is_some(), "{what}");
            let before = series_queries();
            let auto = tool_calls::series(&db, &scope, &buckets, Need::LATENCY).await.unwrap();
            let after = series_queries();
            assert_eq!((after.0 - before.0, after.1 - before.1), reads, "{what}: reads (whole, split)");
            let minute = tool_calls::series_via(&db, &scope, &buckets, Need::LATENCY, &Source::Minute).await.unwrap();
            for (i, (a, m)) in auto.iter().zip(&minute).enumerate() {
                assert_same_stats(a, m, &format!("{what}, day {i}"));
                let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { range_end };
                let calls = world
                    .rows
                    .iter()
                    .filter(|r| {
                        r.call_kind == "tool" && matches(r, &filters) && r.occurred_at >= buckets.start(i) && r.occurred_at < bucket_end
                    })
                    .count();
                assert_eq!(a.calls, calls as u64, "{what}, day {i}");
            }
            assert!(auto.last().unwrap().calls > 0, "{what}: calls in the last day");
        }
    }

    // Lists by server, tool, project and navigator over a range starting at :17
    // (minute head, whole hours, minute tail): the per-server and
    // per-navigator rollups against the minute rollup and the events.
    let range = TimeRange { start: head_start - Duration::days(5), end };
    let scope = Scope { tenant, range, filters: Filters::default(), kinds: CallKinds::Tool };
    let calls_in: Vec<_> =
        world.rows.iter().filter(|r| r.call_kind == "tool" && r.occurred_at >= range.start && r.occurred_at < range.end).collect();
    for dim in [Dim::ServerId, Dim::ServerName, Dim::ProjectId, Dim::NavigatorId] {
        let chosen = rollup::choose_grouped(&scope, dim.grouping(), dim == Dim::ServerId);
        assert!(
            matches!(chosen, Source::ServerHourly(s) | Source::NavigatorHourly(s) if s.head.is_some() && s.tail.is_some() != on_the_hour),
            "{dim:?}: {chosen:?}"
        );
        let auto = tool_calls::group_counts(&db, &scope, dim, true).await.unwrap();
        let minute = tool_calls::group_counts_via(&db, &scope, dim, true, &Source::Minute).await.unwrap();
        assert_eq!(auto, minute, "{dim:?}: per-question rollup vs minute rollup");
        let key = |r: &agentmeter_schema::rows::ToolCallRow| match dim {
            Dim::ServerId => (!r.server_id.is_nil()).then(|| r.server_id.to_string()),
            Dim::ServerName => (!r.server_name.is_empty()).then(|| r.server_name.clone()),
            Dim::ToolName => (!r.tool_name.is_empty()).then(|| r.tool_name.clone()),
            Dim::ProjectId => (!r.project_id.is_nil()).then(|| r.project_id.to_string()),
            _ => (!r.navigator_id.is_nil()).then(|| r.navigator_id.to_string()),
        };
        let mut want: BTreeMap<String, (u64, BTreeSet<Uuid>)> = BTreeMap::new();
        for r in &calls_in {
            if let Some(k) = key(r) {
                let e = want.entry(k).or_default();
                e.0 += 1;
                if !r.query_id.is_nil() {
                    e.1.insert(r.query_id);
                }
            }
        }
        let want: Vec<(String, u64, u64)> = match dim {
            // Per server or tool: the queries that called it.
            Dim::ServerId | Dim::ServerName | Dim::ToolName => want.into_iter().map(|(k, (c, q))| (k, c, q.len() as u64)).collect(),
            // Per project or navigator: queries counted at their execution.
            _ => {
                let mut by_key: BTreeMap<String, (u64, u64)> = want.into_iter().map(|(k, (c, _))| (k, (c, 0))).collect();
                for (t, p, n) in &executions {
                    let k = if dim == Dim::ProjectId { p } else { n };
                    if *t >= range.start && *t < range.end && !k.is_nil() {
                        by_key.entry(k.to_string()).or_default().1 += 1;
                    }
                }
                by_key.into_iter().map(|(k, (c, q))| (k, c, q)).collect()
            }
        };
        let got: Vec<(String, u64, u64)> = auto.into_iter().map(|g| (g.key, g.calls, g.queries)).collect();
        assert_eq!(got, want, "{dim:?}: against the events");
    }

    // Totals over a range that starts at :17 (minute head, whole hours,
    // minute tail), against the events.
    let range = TimeRange { start: head_start, end };
    for (kinds, filters) in [(CallKinds::Tool, Filters::default()), (CallKinds::All, by_project.clone())] {
        let scope = Scope { tenant, range, filters: filters.clone(), kinds };
        let chosen = rollup::choose(&scope, None, true);
        assert!(matches!(chosen, Source::Hourly(s) if s.head.is_some() && s.tail.is_some() != on_the_hour), "{chosen:?}");
        let auto = tool_calls::totals(&db, &scope, Need::ALL).await.unwrap();
        let hourly = tool_calls::totals_via(&db, &scope, Need::ALL, &chosen).await.unwrap();
        let minute = tool_calls::totals_via(&db, &scope, Need::ALL, &Source::Minute).await.unwrap();
        assert_same_stats(&auto, &minute, "totals");
        assert_same_stats(&hourly, &minute, "totals, dimension-keyed hourly");
        let selected: Vec<_> = world
            .rows
            .iter()
            .filter(|r| r.occurred_at >= range.start && r.occurred_at < range.end)
            .filter(|r| kinds == CallKinds::All || r.call_kind == "tool")
            .filter(|r| filters.project_id.is_none_or(|p| r.project_id == p))
            .collect();
        assert_eq!(auto.calls, selected.len() as u64);
        assert_eq!(auto.errors, selected.iter().filter(|r| !r.success).count() as u64);
        assert_eq!(auto.queries, queries_in(range.start, range.end, filters.project_id));
    }
    app.drop_db().await;
}
