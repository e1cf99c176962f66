//! The Grafana endpoint and time-zone-aligned buckets across DST changes.

use std::collections::{BTreeMap, BTreeSet};

use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use uuid::Uuid;

use super::fixture::{blank, count_by, select, Figures, Filt, Kinds, World};
use super::schema::assert_valid;
use super::{time_of, App, KEY_A};

fn series_points(s: &Value) -> Vec<(i64, Value)> {
    s["points"].as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), p[1].clone())).collect()
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

#[tokio::test]
async fn timeseries_metrics_group_by_and_formats() {
    let app = App::start("an_grafana", &[]).await;
    let now = Utc::now();
    let a = World::generate(app.tenant_a, 31, 150, now, "alpha");
    app.insert_calls(&a.rows).await;
    let rows = &a.rows;
    let from = (now - Duration::days(6)).timestamp_millis();
    let to = now.timestamp_millis();

    let body = app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tool_calls&from={from}&to={to}&step=6h")).await;
    assert_eq!(body["step"], "6h");
    let (start, end) = (at_ms(body["from"].as_i64().unwrap()), at_ms(body["to"].as_i64().unwrap()));
    let s = &body["series"].as_array().unwrap()[0];
    assert_eq!(s["name"], "tool_calls");
    let pts = series_points(s);
    assert_eq!(pts[0].0, start.timestamp_millis());
    let mut total = 0;
    for (i, (t, v)) in pts.iter().enumerate() {
        assert_eq!(*t % (6 * 3_600_000), 0, "6h buckets aligned to UTC midnight");
        let e = pts.get(i + 1).map(|p| at_ms(p.0)).unwrap_or(end);
        let n = select(rows, at_ms(*t), e, Kinds::Tool, &Filt::default()).len() as u64;
        total += n;
        assert_eq!(v.as_f64().unwrap() as u64, n);
    }
    assert!(total > 0);
    assert_eq!(body["open_bucket"], pts.last().unwrap().0);

    // max_points picks a step; group_by keeps the top N and sums the rest.
    let body =
        app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tool_calls&from={from}&to={to}&max_points=10&group_by=tool&top=2")).await;
    assert_eq!(body["step"], "1d");
    let (start, end) = (at_ms(body["from"].as_i64().unwrap()), at_ms(body["to"].as_i64().unwrap()));
    let sel = select(rows, start, end, Kinds::Tool, &Filt::default());
    let by_tool = count_by(&sel, |r| Some(r.tool_name.clone()));
    let mut ranked: Vec<(String, u64)> = by_tool.clone().into_iter().collect();
    ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let series = body["series"].as_array().unwrap();
    let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![ranked[0].0.as_str(), ranked[1].0.as_str(), "other"]);
    for s in series {
        let sum: f64 = series_points(s).iter().map(|p| p.1.as_f64().unwrap()).sum();
        let want: u64 = match s["name"].as_str().unwrap() {
            "other" => ranked[2..].iter().map(|x| x.1).sum(),
            n => by_tool[n],
        };
        assert_eq!(sum as u64, want, "{}", s["name"]);
    }

    // Table format: one row per series and bucket.
    let body = app
        .ok(KEY_A, &format!("/api/v1/query/timeseries?metric=errors&from={from}&to={to}&step=1d&group_by=error_type&format=table"))
        .await;
    let table = body.as_array().unwrap();
    let failed: Vec<_> = sel.iter().filter(|r| !r.success).collect();
    let sum: f64 = table.iter().map(|r| r["value"].as_f64().unwrap()).sum();
    assert_eq!(sum as usize, failed.len());
    assert!(table.iter().all(|r| r["time"].is_i64() && r["series"].is_string()));

    // Grouped by error type (the dashboard's errors panel, from the
    // per-error-type rollup under no filter or a project filter): every
    // series' every hourly bucket, the last one open, as from the raw rows;
    // ending now (its last hour read whole) and at a failed call inside an
    // earlier hour (which, dated at the end, makes it read that hour's
    // minutes instead).
    let project = a.projects[0];
    let earlier = rows
        .iter()
        .filter(|r| !r.success && r.occurred_at < now - Duration::hours(2) && r.occurred_at.timestamp() % 3600 != 0)
        .map(|r| r.occurred_at.timestamp_millis())
        .max()
        .unwrap();
    let cases = [(Filt::default(), to), (Filt { project: Some(project), ..Filt::default() }, to), (Filt::default(), earlier)];
    for (filt, to) in cases {
        let q = filt.project.map(|p| format!("&project_id={p}")).unwrap_or_default();
        let body = app
            .ok(KEY_A, &format!("/api/v1/query/timeseries?metric=errors&from={from}&to={to}&step=1h&group_by=error_type&top=20{q}"))
            .await;
        let end = at_ms(body["to"].as_i64().unwrap());
        let series = body["series"].as_array().unwrap();
        let mut names = BTreeSet::new();
        let mut total = 0;
        for s in series {
            let name = s["name"].as_str().unwrap();
            names.insert(name.to_owned());
            let pts = series_points(s);
            for (i, (t, v)) in pts.iter().enumerate() {
                let e = pts.get(i + 1).map(|p| at_ms(p.0)).unwrap_or(end);
                let want =
                    select(rows, at_ms(*t), e, Kinds::Tool, &filt).iter().filter(|r| !r.success && r.error_type == name).count() as u64;
                assert_eq!(v.as_f64().unwrap_or(0.0) as u64, want, "{name} at {t} ({q}, to {to})");
                total += want;
            }
        }
        let failed: Vec<_> =
            select(rows, at_ms(body["from"].as_i64().unwrap()), end, Kinds::Tool, &filt).into_iter().filter(|r| !r.success).collect();
        assert!(total > 0, "{q}");
        assert_eq!(total, failed.len() as u64, "{q}: every failed call in one series");
        assert!(names.contains("timeout") && !names.contains("other"), "{names:?}");
    }

    // Ratios are null where there is no data; latency in ms.
    let body =
        app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=latency_avg&from={from}&to={to}&step=1h&project_id={project}")).await;
    let pts = series_points(&body["series"][0]);
    let end = at_ms(body["to"].as_i64().unwrap());
    let mut nulls = 0;
    for (i, (t, v)) in pts.iter().enumerate() {
        let e = pts.get(i + 1).map(|p| at_ms(p.0)).unwrap_or(end);
        let f = Figures::of(&select(rows, at_ms(*t), e, Kinds::Tool, &Filt { project: Some(project), ..Filt::default() }));
        if f.calls == 0 {
            assert!(v.is_null());
            nulls += 1;
        } else {
            super::fixture::close(v, f.latency_sum_ms / f.calls as f64, 1e-6, "latency_avg");
        }
    }
    assert!(nulls > 0);

    // Groups by server and by project, from their hourly rollups: each
    // series adds up to the group's calls (top=100: every group, no "other").
    let calls_of = |body: &Value| {
        let (start, end) = (at_ms(body["from"].as_i64().unwrap()), at_ms(body["to"].as_i64().unwrap()));
        select(rows, start, end, Kinds::Tool, &Filt::default())
    };
    let series_sums = |body: &Value| -> BTreeMap<String, u64> {
        body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), series_points(s).iter().map(|p| p.1.as_f64().unwrap() as u64).sum()))
            .collect()
    };
    for (group, key) in
        [("server", (|r: &ToolCallRow| r.server_name.clone()) as fn(&ToolCallRow) -> String), ("project", |r| r.project_id.to_string())]
    {
        let body = app
            .ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tool_calls&from={from}&to={to}&step=1h&group_by={group}&top=100"))
            .await;
        assert_eq!(series_sums(&body), count_by(&calls_of(&body), |r| Some(key(r))), "tool calls by {group}");
        assert!(series_sums(&body).len() > 1, "by {group}: several groups");
    }
    // Latency per server: `tool_calls_server_1h` has no latency, so the
    // dimension-keyed rollup answers, with a series for every server.
    let body =
        app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=latency_avg&from={from}&to={to}&step=1d&group_by=server&top=100")).await;
    let names: BTreeSet<String> = body["series"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, count_by(&calls_of(&body), |r| Some(r.server_name.clone())).into_keys().collect());
    // 5-minute steps over a day, from the tenant 5-minute rollup.
    let day_from = (now - Duration::days(1)).timestamp_millis();
    let body = app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tool_calls&from={day_from}&to={to}&step=5m")).await;
    let pts = series_points(&body["series"][0]);
    let end = at_ms(body["to"].as_i64().unwrap());
    let mut total = 0;
    for (i, (t, v)) in pts.iter().enumerate() {
        let e = pts.get(i + 1).map(|p| at_ms(p.0)).unwrap_or(end);
        let n = select(rows, at_ms(*t), e, Kinds::Tool, &Filt::default()).len() as u64;
        total += n;
        assert_eq!(v.as_f64().unwrap() as u64, n, "5-minute bucket {i}");
    }
    assert!(total > 0);

    // Execution metrics from the other rollup.
    let exec = |model: &str, tokens: u64, micros: i64, minutes_ago: i64| AgentExecutionRow {
        event_id: Uuid::new_v4(),
        occurred_at: DateTime::from_timestamp_millis((now - Duration::minutes(minutes_ago)).timestamp_millis()).unwrap(),
        tenant_id: app.tenant_a,
        execution_id: Uuid::new_v4(),
        execution_kind: "agent_chat".into(),
        billable: true,
        organization_id: Uuid::nil(),
        user_id: Uuid::new_v4(),
        agent_id: Uuid::nil(),
        conversation_id: Uuid::nil(),
        plan_id: Uuid::nil(),
        project_id: project,
        project_name: String::new(),
        navigator_id: Uuid::nil(),
        navigator_instance_id: Uuid::nil(),
        user_token_id: Uuid::nil(),
        user_email: String::new(),
        model: model.into(),
        input_tokens: tokens / 2,
        output_tokens: tokens - tokens / 2,
        total_tokens: tokens,
        cost_usd: micros,
        cost_known: true,
        messages_count: 1,
        duration_ms: Some(100.0),
        status: "success".into(),
        error_type: String::new(),
        error_message: String::new(),
        query_text: None,
    };
    app.insert_executions(&[exec("m-large", 1000, 1_500_000, 30), exec("m-large", 500, 250_000, 90), exec("m-small", 10, 1, 30)]).await;
    let body = app.ok(KEY_A, "/api/v1/query/timeseries?metric=tokens&window=6h&step=1h&group_by=model").await;
    let totals: Vec<(String, f64)> = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), series_points(s).iter().map(|p| p.1.as_f64().unwrap()).sum()))
        .collect();
    assert_eq!(totals, vec![("m-large".to_owned(), 1500.0), ("m-small".to_owned(), 10.0)]);
    let body = app.ok(KEY_A, "/api/v1/query/timeseries?metric=cost_usd&window=6h&step=6h").await;
    let sum: f64 = series_points(&body["series"][0]).iter().map(|p| p.1.as_f64().unwrap()).sum();
    assert!((sum - 1.750001).abs() < 1e-9, "{sum}");

    // Tokens and cost per organization (the rows above have none: nil id).
    let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
    let for_org = |org: Uuid, tokens: u64, micros: i64| AgentExecutionRow { organization_id: org, ..exec("m-org", tokens, micros, 20) };
    let rows = [for_org(org_a, 300, 2_000_000), for_org(org_a, 200, 500_000), for_org(org_b, 7, 3)];
    app.insert_executions(&rows).await;
    let per_org = |body: &Value| -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), series_points(s).iter().map(|p| p.1.as_f64().unwrap()).sum()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut want = vec![(org_a.to_string(), 500.0), (org_b.to_string(), 7.0), (Uuid::nil().to_string(), 1510.0)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let body = app.ok(KEY_A, "/api/v1/query/timeseries?metric=tokens&window=6h&step=1h&group_by=organization").await;
    assert_eq!(per_org(&body), want);
    // Tool calls per organization add up to the ungrouped series (top=100: no "other").
    let grouped = app.ok(KEY_A, "/api/v1/query/timeseries?metric=tool_calls&window=6h&step=1h&group_by=organization&top=100").await;
    let whole = app.ok(KEY_A, "/api/v1/query/timeseries?metric=tool_calls&window=6h&step=1h").await;
    let total: f64 = per_org(&grouped).iter().map(|(_, v)| v).sum();
    let expected: f64 = series_points(&whole["series"][0]).iter().map(|p| p.1.as_f64().unwrap_or(0.0)).sum();
    assert!(expected > 0.0 && total == expected, "{total} vs {expected}");
    let body = app.ok(KEY_A, "/api/v1/query/timeseries?metric=cost_usd&window=6h&step=6h&group_by=organization").await;
    let cost: Vec<(String, f64)> = per_org(&body);
    let of = |org: Uuid| cost.iter().find(|(k, _)| *k == org.to_string()).map(|(_, v)| *v).unwrap();
    assert!((of(org_a) - 2.5).abs() < 1e-9 && (of(org_b) - 0.000003).abs() < 1e-12, "{cost:?}");

    // Messages per executing user (`group_by=user`, the dashboard's
    // messages panel): whole hours from the per-executor rollup. One
    // execution is dated a minute from now, inside the current hour: the
    // answer must leave it out, so that hour is read minute by minute.
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    let by_user = |user: Uuid, messages: u32, minutes_ago: i64| AgentExecutionRow {
        user_id: user,
        messages_count: messages,
        ..exec("m-user", 0, 0, minutes_ago)
    };
    app.insert_executions(&[by_user(u1, 5, 200), by_user(u1, 7, 20), by_user(u2, 3, 130), by_user(u2, 4, -1)]).await;
    let body = app.ok(KEY_A, "/api/v1/query/timeseries?metric=messages&window=6h&step=1h&group_by=user&top=2").await;
    let got: Vec<(String, f64)> = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), series_points(s).iter().map(|p| p.1.as_f64().unwrap_or(0.0)).sum()))
        .collect();
    // The six executions above, one message each, by six other users.
    assert_eq!(got, vec![(u1.to_string(), 12.0), (u2.to_string(), 3.0), ("other".to_owned(), 6.0)]);
    let u1_points = series_points(&body["series"][0]);
    let at = (now - Duration::minutes(200)).timestamp_millis();
    let bucket = u1_points.iter().rev().find(|p| p.0 <= at).unwrap();
    assert_eq!(bucket.1.as_f64(), Some(5.0), "the hour of the execution 200 minutes ago");

    app.drop_db().await;
}

/// The most recent day (local date) within the last 300 days on which
/// `tz` changed its UTC offset.
fn last_dst_day(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    (1..300)
        .map(|i| today - Duration::days(i))
        .find(|d| {
            let noon = |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).earliest().unwrap().offset().fix();
            noon(*d) != noon(*d - Duration::days(1))
        })
        .expect("a DST change in the last 300 days")
}

#[tokio::test]
async fn daily_buckets_follow_local_midnight_across_dst() {
    let app = App::start("an_dst", &[]).await;
    let now = Utc::now();
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    for (zone, project) in [("Europe/Berlin", Uuid::new_v4()), ("America/New_York", Uuid::new_v4())] {
        let tz: Tz = zone.parse().unwrap();
        let day = last_dst_day(tz, now);
        let midnight = |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap()).earliest().unwrap().with_timezone(&Utc);
        let (start, end) = (midnight(day - Duration::days(1)), midnight(day + Duration::days(2)));
        // One call at every half past the hour (UTC), local days of 24, 23 or 25 hours.
        let mut t = start + Duration::minutes(30);
        while t < end {
            let mut r = blank(app.tenant_a, t);
            r.project_id = project;
            rows.push(r);
            t += Duration::hours(1);
        }
        let lengths: Vec<i64> = (0..3)
            .map(|i| {
                (midnight(day - Duration::days(1) + Duration::days(i + 1)) - midnight(day - Duration::days(1) + Duration::days(i)))
                    .num_hours()
            })
            .collect();
        assert!(lengths[1] == 23 || lengths[1] == 25, "{zone} {day}: {lengths:?}");
        plans.push((
            zone,
            project,
            start,
            end,
            lengths,
            (0..3).map(|i| midnight(day - Duration::days(1) + Duration::days(i))).collect::<Vec<_>>(),
        ));
    }
    app.insert_calls(&rows).await;

    for (zone, project, start, end, lengths, midnights) in plans {
        let q = format!("from={}&to={}&tz={zone}&project_id={project}", start.to_rfc3339(), end.to_rfc3339()).replace('+', "%2B");
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/tool-calls-processed-graph?frequency=1d&{q}")).await;
        assert_valid("ToolCallsGraphResponse", &body);
        let pts = body["data"]["data_points"].as_array().unwrap();
        let got: Vec<(DateTime<Utc>, i64)> = pts.iter().map(|p| (time_of(p, "timestamp"), p["count"].as_i64().unwrap())).collect();
        let want: Vec<(DateTime<Utc>, i64)> = midnights.iter().copied().zip(lengths.iter().copied()).collect();
        assert_eq!(got, want, "{zone}");
        assert!(body["data"]["open_bucket"].is_null(), "a past range has no open bucket");

        let body = app.ok(KEY_A, &format!("/api/v1/query/timeseries?metric=tool_calls&step=1d&{}", q)).await;
        let got: Vec<(i64, i64)> = series_points(&body["series"][0]).iter().map(|p| (p.0, p.1.as_f64().unwrap() as i64)).collect();
        let want: Vec<(i64, i64)> = midnights.iter().map(|m| m.timestamp_millis()).zip(lengths.iter().copied()).collect();
        assert_eq!(got, want, "{zone} grafana");

        // Hourly buckets stay one hour long through the change.
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/tool-calls-processed-graph?frequency=1h&{q}")).await;
        let pts = body["data"]["data_points"].as_array().unwrap();
        assert_eq!(pts.len() as i64, lengths.iter().sum::<i64>());
        assert!(pts.iter().all(|p| p["count"] == 1));
    }
    app.drop_db().await;
}

/// A Grafana series whose range ends inside an hour reads that hour whole
/// from its hourly rollup when nothing in it is dated at or after the
/// range's end, and again minute by minute when something is; either way
/// the values are the events', ungrouped and grouped.
#[tokio::test]
async fn grafana_series_read_their_last_hour_whole_only_when_exact() {
    use std::sync::Arc;
    use std::time::Duration as StdDuration;

    use agentmeter_api::buckets::Buckets;
    use agentmeter_api::db::Db;
    use agentmeter_api::metrics::Metrics;
    use agentmeter_api::queries::analytics::timeseries::{self, GroupBy, Metric};
    use agentmeter_api::queries::{CallKinds, Filters, Scope};
    use agentmeter_api::window::{Span, TimeRange, Unit};
    use chrono::DurationRound;

    let app = App::start("an_grafana_tail", &[]).await;
    let now = Utc::now();
    let mut world = World::generate(app.tenant_a, 4, 150, now, "delta");
    // A range ending at :30 of an hour two hours ago, and a call 10 s after
    // that end, in the same hour, of a tool with no other call: last in a
    // ranking by calls, so the ranking's guard must see the late calls of
    // every group, not only of those it keeps.
    let cut = (now - Duration::hours(2)).duration_trunc(Duration::hours(1)).unwrap() + Duration::minutes(30);
    let tool = world.tools[0].clone();
    let mut late = blank(app.tenant_a, cut + Duration::seconds(10));
    (late.tool_id, late.tool_name) = (Uuid::new_v4(), "late-tool".to_owned());
    world.rows.push(late);
    app.insert_calls(&world.rows).await;
    // Executions with tokens, every 7 minutes over the last two days, one
    // of them 20 s after `cut`: read from `agent_executions_1h` (0016).
    let models = ["m-a", "m-b", "m-c"];
    let executions: Vec<AgentExecutionRow> = (0..2 * 24 * 60 / 7)
        .map(|i| cut + Duration::minutes(90) - Duration::minutes(7 * i))
        .chain([cut + Duration::seconds(20)])
        .enumerate()
        .map(|(i, at)| AgentExecutionRow {
            model: models[i % 3].into(),
            total_tokens: 10 + i as u64,
            ..super::fixture::query_execution(Uuid::new_v4(), at, &blank(app.tenant_a, at))
        })
        .filter(|e| e.occurred_at < now)
        .collect();
    app.insert_executions(&executions).await;

    let metrics = Arc::new(Metrics::new());
    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), metrics.clone());
    let count = |name: &str| metrics.clickhouse_query_duration_seconds.with_label_values(&[name]).get_sample_count();
    let reads = || (count("timeseries_points_whole_tail"), count("timeseries_points"));
    let top_reads = || (count("timeseries_top_whole_tail"), count("timeseries_top"));
    let end_now = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    let keys = vec![tool.name.clone()];
    for (end, want_reads) in [(end_now, (1, 0)), (cut, (1, 1))] {
        if end.timestamp() % 3600 == 0 {
            continue;
        }
        let buckets = Buckets::plan(TimeRange { start: end - Duration::days(2), end }, Span::new(1, Unit::Hour), Tz::UTC, 2000).unwrap();
        let range = TimeRange { start: buckets.first_start(), end };
        let scope = Scope { tenant: app.tenant_a, range, filters: Filters::default(), kinds: CallKinds::Tool };
        // The top two tools over the range, ranked the same way (calls,
        // then name), from the events.
        let before = top_reads();
        let (top, more) = timeseries::top_groups(&db, &scope, Metric::ToolCalls, GroupBy::Tool, 2).await.unwrap();
        let after = top_reads();
        assert_eq!((after.0 - before.0, after.1 - before.1), want_reads, "up to {end}: ranking reads (whole, split)");
        let per_tool = count_by(&select(&world.rows, range.start, end, Kinds::Tool, &Filt::default()), |r| Some(r.tool_name.clone()));
        let mut ranked: Vec<(String, u64)> = per_tool.into_iter().collect();
        ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        assert_eq!(top, ranked.iter().take(2).map(|r| r.0.clone()).collect::<Vec<_>>(), "up to {end}: top tools");
        assert_eq!(more, ranked.len() > 2);
        for group in [None, Some((GroupBy::Tool, keys.as_slice())), Some((GroupBy::Project, &[][..]))] {
            let what = format!("up to {end}, grouped by {:?}", group.map(|g| g.0));
            let before = reads();
            let points = timeseries::points(&db, &scope, Metric::ToolCalls, &buckets, group, "tool_calls").await.unwrap();
            let after = reads();
            assert_eq!((after.0 - before.0, after.1 - before.1), want_reads, "{what}: reads (whole, split)");
            let mut got: BTreeMap<(String, u32), u64> = BTreeMap::new();
            for p in points {
                got.insert((p.series, p.bucket), p.value as u64);
            }
            let mut want: BTreeMap<(String, u32), u64> = BTreeMap::new();
            for i in 0..buckets.len() {
                let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
                for r in select(&world.rows, buckets.start(i), bucket_end, Kinds::Tool, &Filt::default()) {
                    let series = match group {
                        None => "tool_calls".to_owned(),
                        Some((_, keys)) if keys.contains(&r.tool_name) => r.tool_name.clone(),
                        Some(_) => timeseries::OTHER.to_owned(),
                    };
                    *want.entry((series, i as u32)).or_default() += 1;
                }
            }
            assert_eq!(got, want, "{what}");
        }
        // Tokens per model: the executions' hourly rollup, read the same way.
        let before = (reads(), top_reads());
        let (models_top, _) = timeseries::top_groups(&db, &scope, Metric::Tokens, GroupBy::Model, 10).await.unwrap();
        let points =
            timeseries::points(&db, &scope, Metric::Tokens, &buckets, Some((GroupBy::Model, &models_top)), "tokens").await.unwrap();
        let after = (reads(), top_reads());
        assert_eq!((after.0 .0 - before.0 .0, after.0 .1 - before.0 .1), want_reads, "up to {end}: tokens per model, reads");
        assert_eq!((after.1 .0 - before.1 .0, after.1 .1 - before.1 .1), want_reads, "up to {end}: models ranking, reads");
        let got: BTreeMap<(String, u32), u64> = points.into_iter().map(|p| ((p.series, p.bucket), p.value as u64)).collect();
        let mut want: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for e in executions.iter().filter(|e| e.occurred_at >= range.start && e.occurred_at < end) {
            let i = (0..buckets.len()).rev().find(|&i| buckets.start(i) <= e.occurred_at).unwrap();
            *want.entry((e.model.clone(), i as u32)).or_default() += e.total_tokens;
        }
        assert_eq!(got, want, "up to {end}: tokens per model");
        assert_eq!(models_top.len(), 3);
    }
    app.drop_db().await;
}

#[tokio::test]
async fn grouped_counts_read_in_one_statement_rank_like_the_ranking() {
    use std::sync::Arc;
    use std::time::Duration as StdDuration;

    use agentmeter_api::buckets::Buckets;
    use agentmeter_api::db::Db;
    use agentmeter_api::metrics::Metrics;
    use agentmeter_api::queries::analytics::timeseries::{self, GroupBy, Metric, Point};
    use agentmeter_api::queries::{CallKinds, Filters, Scope};
    use agentmeter_api::window::{Span, TimeRange, Unit};
    use chrono::DurationRound;

    let app = App::start("an_grafana_grouped", &[]).await;
    let now = Utc::now();
    let mut world = World::generate(app.tenant_a, 7, 150, now, "gamma");
    // Below the generated tools: one with 7 calls, then three tied at 5,
    // one of them named like the rest (`other`), so that a cut through the
    // tie is decided by name and the kept `other` shares the rest's series.
    for (name, n) in [("tie-b", 5), ("seven", 7), ("other", 5), ("tie-a", 5)] {
        for i in 0..n {
            let mut r = blank(app.tenant_a, now - Duration::hours(3) - Duration::minutes(7 * i));
            (r.tool_id, r.tool_name, r.success) = (Uuid::new_v4(), name.to_owned(), i % 2 == 0);
            world.rows.push(r);
        }
    }
    app.insert_calls(&world.rows).await;
    // Tokens per model, three models tied at 30.
    let executions: Vec<AgentExecutionRow> = [("m-b", 30), ("other", 10), ("m-a", 12), ("m-c", 9), ("other", 20), ("m-a", 18), ("m-c", 9)]
        .into_iter()
        .enumerate()
        .map(|(i, (model, tokens))| {
            let at = now - Duration::hours(5) - Duration::minutes(50 * i as i64);
            AgentExecutionRow {
                model: model.into(),
                total_tokens: tokens,
                ..super::fixture::query_execution(Uuid::new_v4(), at, &blank(app.tenant_a, at))
            }
        })
        .collect();
    app.insert_executions(&executions).await;

    let metrics = Arc::new(Metrics::new());
    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), metrics.clone());
    let count = |name: &str| metrics.clickhouse_query_duration_seconds.with_label_values(&[name]).get_sample_count();
    // (one-statement reads, ranking reads)
    let reads = || {
        (count("timeseries_grouped_whole_tail") + count("timeseries_grouped"), count("timeseries_top_whole_tail") + count("timeseries_top"))
    };
    let end = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    let buckets = Buckets::plan(TimeRange { start: end - Duration::days(7), end }, Span::new(1, Unit::Hour), Tz::UTC, 2000).unwrap();
    let range = TimeRange { start: buckets.first_start(), end };
    let scope = Scope { tenant: app.tenant_a, range, filters: Filters::default(), kinds: CallKinds::Tool };
    type Answer = (Vec<String>, BTreeMap<(String, u32), u64>);
    // (group key, time, weight) of each event.
    type Events = Vec<(String, DateTime<Utc>, u64)>;
    let answer = |(names, points): (Vec<String>, Vec<Point>)| -> Answer {
        let mut values = BTreeMap::new();
        for p in points {
            assert!(values.insert((p.series, p.bucket), p.value as u64).is_none(), "one point per series and bucket");
        }
        (names, values)
    };
    let bucket_of = |at: DateTime<Utc>| (0..buckets.len()).rev().find(|&i| buckets.start(i) <= at).unwrap() as u32;
    // What the events say: (key, weight) per event in the range, ranked by
    // sum then key, the rest summed into `other`.
    let expect = |events: Events, top: usize| -> Answer {
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (k, _, w) in &events {
            *totals.entry(k.clone()).or_default() += w;
        }
        let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
        ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut names: Vec<String> = ranked.iter().take(top).map(|r| r.0.clone()).collect();
        let mut values = BTreeMap::new();
        for (k, at, w) in events {
            let series = if names.contains(&k) { k } else { timeseries::OTHER.to_owned() };
            *values.entry((series, bucket_of(at))).or_default() += w;
        }
        if ranked.len() > top {
            names.push(timeseries::OTHER.to_owned());
        }
        (names, values)
    };
    let calls = select(&world.rows, range.start, end, Kinds::Tool, &Filt::default());
    let tokens: Events = executions.iter().map(|e| (e.model.clone(), e.occurred_at, e.total_tokens)).collect();
    let cases: [(Metric, GroupBy, Option<Events>); 5] = [
        (Metric::ToolCalls, GroupBy::Tool, Some(calls.iter().map(|r| (r.tool_name.clone(), r.occurred_at, 1)).collect())),
        (Metric::Errors, GroupBy::Tool, Some(calls.iter().map(|r| (r.tool_name.clone(), r.occurred_at, u64::from(!r.success))).collect())),
        (Metric::Tokens, GroupBy::Model, Some(tokens)),
        (Metric::ToolCalls, GroupBy::Server, None),
        (Metric::Errors, GroupBy::Project, None),
    ];
    for (metric, group, events) in cases {
        for top in [1, 2, 3, 5, 6, 7, 8, 9, 100] {
            let what = format!("{metric:?} by {group:?}, top {top}");
            let before = reads();
            let one = answer(timeseries::grouped(&db, &scope, metric, &buckets, group, top, timeseries::ONE_READ_MAX_ROWS).await.unwrap());
            let mid = reads();
            // At most 0 rows in one statement: the ranking, then the points.
            let two = answer(timeseries::grouped(&db, &scope, metric, &buckets, group, top, 0).await.unwrap());
            let after = reads();
            assert!(mid.0 > before.0 && mid.1 == before.1, "{what}: one statement, no ranking ({before:?} -> {mid:?})");
            assert!(after.1 > mid.1, "{what}: over the bound, the ranking is read ({mid:?} -> {after:?})");
            assert_eq!(one, two, "{what}: one statement against the ranking and the points");
            if let Some(events) = &events {
                assert_eq!(one, expect(events.clone(), top as usize), "{what}: against the events");
            }
        }
    }
    app.drop_db().await;
}
