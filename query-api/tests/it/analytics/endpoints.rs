//! Every analytics endpoint for tenant A, number by number.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fixture::{close, count_by, queries_by, select, Figures, Filt, Kinds, World};
use super::schema::assert_valid;
use super::{time_of, App, KEY_A};

const EPS: f64 = 1e-5;

fn range_of(data: &Value) -> (DateTime<Utc>, DateTime<Utc>) {
    (time_of(data, "from"), time_of(data, "to"))
}

/// Checks a graph's buckets: consecutive, the first at `from`, the last
/// containing `to` - 1 min, and returns `[start, end)` per point.
fn bucket_ranges(points: &[Value], to: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let starts: Vec<DateTime<Utc>> = points.iter().map(|p| time_of(p, "timestamp")).collect();
    assert!(!starts.is_empty());
    (0..starts.len())
        .map(|i| {
            let end = starts.get(i + 1).copied().unwrap_or(to);
            assert!(starts[i] < end, "buckets out of order");
            (starts[i], end)
        })
        .collect()
}

#[tokio::test]
async fn every_endpoint_matches_the_events() {
    let app = App::start("an_endpoints", &[]).await;
    let now = Utc::now();
    let a = World::generate(app.tenant_a, 1, 160, now, "alpha");
    let b = World::generate(app.tenant_b, 2, 60, now, "beta");
    app.insert_calls(&a.rows).await;
    app.insert_executions(&a.executions).await;
    app.insert_calls(&b.rows).await;
    app.insert_executions(&b.executions).await;
    let rows = &a.rows;
    let none = Filt::default();

    // --- single figures -------------------------------------------------
    let body = app.ok(KEY_A, "/api/v1/analytics/average-tool-call-latency").await;
    assert_valid("AverageToolCallLatencyResponse", &body);
    let d = &body["data"];
    assert_eq!(d["window"], "24h");
    let (from, to) = range_of(d);
    assert_eq!((to - from).num_hours(), 24);
    let f = Figures::of(&select(rows, from, to, Kinds::Tool, &none));
    assert!(f.calls > 20, "fixture should have calls in the last day");
    assert_eq!(d["total_calls"], f.calls);
    close(&d["average_latency"], f.avg_latency_s(), EPS, "average_latency");
    let (p50, p95, p99) = (d["latency_p50"].as_f64().unwrap(), d["latency_p95"].as_f64().unwrap(), d["latency_p99"].as_f64().unwrap());
    assert!(p50 <= p95 && p95 <= p99, "{p50} {p95} {p99}");
    // t-digest: within 10 % of the latency range of the exact percentile.
    let spread = (f.latencies.last().unwrap() - f.latencies[0]) / 1000.0;
    for (got, q) in [(p50, 0.5), (p95, 0.95), (p99, 0.99)] {
        assert!((got - f.pct_ms(q) / 1000.0).abs() <= 0.1 * spread, "p{q}: {got} vs {}", f.pct_ms(q) / 1000.0);
    }

    let project = a.projects[0];
    let body = app.ok(KEY_A, &format!("/api/v1/analytics/average-tool-call-latency?window=7d&project_id={project}")).await;
    assert_valid("AverageToolCallLatencyResponse", &body);
    let d = &body["data"];
    assert_eq!(d["filters"]["project_id"], project.to_string());
    let (from, to) = range_of(d);
    let f = Figures::of(&select(rows, from, to, Kinds::Tool, &Filt { project: Some(project), ..Filt::default() }));
    assert_eq!(d["total_calls"], f.calls);
    close(&d["average_latency"], f.avg_latency_s(), EPS, "average_latency project");

    let body = app.ok(KEY_A, "/api/v1/analytics/average-tool-call-runtime").await;
    assert_valid("AverageToolCallRuntimeResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let f = Figures::of(&select(rows, from, to, Kinds::Tool, &none));
    assert_eq!(d["total_executions"], f.runtime_count);
    close(&d["average_runtime"], f.avg_runtime_s(), EPS, "average_runtime");

    let tool = &a.tools[0];
    for (q, filt) in [("", none.clone()), (&*format!("?tool_id={}", tool.id), Filt { tool_id: Some(tool.id), ..Filt::default() })] {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/average-tool-calls-per-query{q}")).await;
        assert_valid("ToolCallsPerQueryResponse", &body);
        let d = &body["data"];
        assert_eq!(d["frequency"], "1h");
        assert_eq!(d["view"], "timeseries");
        let (from, to) = range_of(d);
        let f = Figures::of(&select(rows, from, to, Kinds::Tool, &filt));
        assert_eq!(d["total_tool_calls"], f.calls, "{q}");
        assert_eq!(d["total_queries"], f.queries, "{q}");
        close(&d["average_tool_calls_per_query"], f.calls as f64 / f.queries as f64, EPS, "calls per query");
    }

    for (q, filt) in [("", none.clone()), ("?tool_name=search", Filt { tool_name: Some("search".into()), ..Filt::default() })] {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/queries-processed{q}")).await;
        assert_valid("QueriesProcessedResponse", &body);
        let d = &body["data"];
        assert_eq!(d["window"], "1mon");
        let (from, to) = range_of(d);
        let prev_from = time_of(d, "previous_period_start");
        assert_eq!(d["total_queries"], Figures::of(&select(rows, from, to, Kinds::Tool, &filt)).queries, "{q}");
        assert_eq!(d["previous_total_queries"], Figures::of(&select(rows, prev_from, from, Kinds::Tool, &filt)).queries, "{q}");

        let body = app.ok(KEY_A, &format!("/api/v1/analytics/tool-calls-processed{q}")).await;
        assert_valid("ToolCallsProcessedResponse", &body);
        let d = &body["data"];
        let (from, to) = range_of(d);
        let prev_from = time_of(d, "previous_period_start");
        let cur = Figures::of(&select(rows, from, to, Kinds::Tool, &filt)).calls;
        let prev = Figures::of(&select(rows, prev_from, from, Kinds::Tool, &filt)).calls;
        assert_eq!(d["total_tool_calls"], cur);
        assert_eq!(d["previous_total_tool_calls"], prev);
        assert!(prev > 0, "fixture has events in the previous month");
        close(&d["change_percent"], ((cur as f64 - prev as f64) / prev as f64 * 10_000.0).round() / 100.0, 1e-9, "change");
    }

    let body = app.ok(KEY_A, "/api/v1/analytics/proxy-tools").await;
    assert_valid("ProxyToolEfficiencyResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let proxy = select(rows, from, to, Kinds::Proxy, &none);
    let kinds = count_by(&proxy, |r| Some(r.call_kind.clone()));
    for k in ["suggest_tools", "get_tool_schemas", "invoke_tools"] {
        assert_eq!(d[format!("{k}_count")], kinds.get(k).copied().unwrap_or(0), "{k}");
    }
    let nav = &a.navs[1];
    let body =
        app.ok(KEY_A, &format!("/api/v1/analytics/proxy-tools/suggest-tools?window=1mon&navigator_instance_id={}", nav.instance)).await;
    assert_valid("ProxyToolSuggestionsResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let sugg: Vec<_> = select(rows, from, to, Kinds::Proxy, &Filt { nav_instance: Some(nav.instance), ..Filt::default() })
        .into_iter()
        .filter(|r| r.call_kind == "suggest_tools")
        .collect();
    assert_eq!(d["count"], sugg.len() as u64);
    assert_eq!(d["suggested_tools"], sugg.iter().map(|r| u64::from(r.suggestions_count)).sum::<u64>());
    assert_eq!(d["filters"]["navigator_instance_id"], nav.instance.to_string());

    for period in ["rolling_month", "rolling_week", "rolling_day", "rolling_hour"] {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/heroes/global/stats?comparison_period={period}")).await;
        assert_valid("GlobalStatsResponse", &body);
        let d = &body["data"];
        assert_eq!(d["comparison_period"], period);
        let (from, to) = range_of(d);
        let prev_from = time_of(d, "previous_from");
        let cur = Figures::of(&select(rows, from, to, Kinds::Tool, &none));
        let prev = Figures::of(&select(rows, prev_from, from, Kinds::Tool, &none));
        assert_eq!(d["total_tool_calls"], cur.calls, "{period}");
        assert_eq!(d["total_queries"], cur.queries, "{period}");
        assert_eq!(d["previous_total_tool_calls"], prev.calls, "{period}");
        assert_eq!(d["previous_total_queries"], prev.queries, "{period}");
    }

    // --- graphs ------------------------------------------------------------
    for (path, schema) in [
        ("tool-calls-processed-graph", "ToolCallsGraphResponse"),
        ("queries-processed-graph", "ToolCallsGraphResponse"),
        ("average-tool-call-latency-graph", "AverageToolCallLatencyGraphResponse"),
        ("average-tool-call-runtime-graph", "AverageToolCallRuntimeGraphResponse"),
        ("average-tool-calls-per-query-graph", "ToolCallsPerQueryGraphResponse"),
    ] {
        for q in ["", "?frequency=6h&window=7d&tz=Europe/Berlin", "?frequency=1w&window=1mon&tz=America/New_York"] {
            let body = app.ok(KEY_A, &format!("/api/v1/analytics/{path}{q}")).await;
            assert_valid(schema, &body);
            let d = &body["data"];
            let (from, to) = range_of(d);
            let points = d["data_points"].as_array().unwrap();
            let ranges = bucket_ranges(points, to);
            assert_eq!(ranges[0].0, from, "{path}{q}: first bucket starts the range");
            assert_eq!(d["bucket_count"], points.len());
            if q.is_empty() {
                assert_eq!(points.len() as i64, (to - from).num_days() + i64::from((to - from).num_seconds() % 86_400 != 0));
                assert!(points.iter().all(|p| time_of(p, "timestamp").timestamp() % 86_400 == 0), "UTC midnights");
            }
            let open = d["open_bucket"].as_str().expect("the current bucket is open");
            assert_eq!(points.last().unwrap()["timestamp"], open);
            assert_eq!(points.last().unwrap()["partial"], true);
            let mut total = 0;
            for (p, (s, e)) in points.iter().zip(&ranges) {
                let f = Figures::of(&select(rows, *s, *e, Kinds::Tool, &none));
                total += f.calls;
                match path {
                    "tool-calls-processed-graph" => assert_eq!(p["count"], f.calls, "{path}{q} {s}"),
                    "queries-processed-graph" => assert_eq!(p["count"], f.queries, "{path}{q} {s}"),
                    "average-tool-call-latency-graph" => {
                        assert_eq!(p["total_calls"], f.calls);
                        close(&p["average_latency"], f.avg_latency_s(), EPS, "bucket latency");
                    }
                    "average-tool-call-runtime-graph" => {
                        assert_eq!(p["total_executions"], f.runtime_count);
                        close(&p["average_runtime"], f.avg_runtime_s(), EPS, "bucket runtime");
                    }
                    _ => {
                        assert_eq!(p["total_tool_calls"], f.calls);
                        assert_eq!(p["total_queries"], f.queries);
                    }
                }
            }
            assert_eq!(total, Figures::of(&select(rows, from, to, Kinds::Tool, &none)).calls);
        }
    }

    let body = app.ok(KEY_A, "/api/v1/analytics/error-rate-graph?window=1w&frequency=12h").await;
    assert_valid("ErrorRateGraphResponse", &body);
    let d = &body["data"];
    assert_eq!(d["view_type"], "timeseries");
    let (from, to) = range_of(d);
    let points = d["time_series_data"].as_array().unwrap();
    for (p, (s, e)) in points.iter().zip(bucket_ranges(points, to)) {
        let f = Figures::of(&select(rows, s, e, Kinds::Tool, &none));
        assert_eq!(p["errors"], f.errors);
        assert_eq!(p["calls"], f.calls);
        close(&p["value"], if f.calls == 0 { 0.0 } else { f.errors as f64 / f.calls as f64 }, 1e-12, "error rate");
    }
    let f = Figures::of(&select(rows, from, to, Kinds::Tool, &none));
    assert!(f.errors > 0);
    assert_eq!(d["total_errors"], f.errors);
    assert_eq!(d["total_tool_calls"], f.calls);
    close(&d["average_error_rate"], f.errors as f64 / f.calls as f64, 1e-12, "average error rate");

    let body = app.ok(KEY_A, "/api/v1/analytics/error-types-graph").await;
    assert_valid("ErrorTypesGraphResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let failed: Vec<_> = select(rows, from, to, Kinds::Tool, &none).into_iter().filter(|r| !r.success).collect();
    let by_type = count_by(&failed, |r| Some(if r.error_type.is_empty() { "other".to_owned() } else { r.error_type.clone() }));
    let series = d["time_series_data"].as_array().unwrap();
    assert_eq!(series.len(), by_type.len());
    assert_eq!(d["total_errors"], failed.len() as u64);
    let mut last = u64::MAX;
    for s in series {
        let t = s["error_type"].as_str().unwrap();
        let n = s["total_count"].as_u64().unwrap();
        assert!(n <= last, "most frequent first");
        last = n;
        assert_eq!(n, by_type[t], "{t}");
        let pts = s["time_series_data"].as_array().unwrap();
        for (p, (bs, be)) in pts.iter().zip(bucket_ranges(pts, to)) {
            let want = failed
                .iter()
                .filter(|r| {
                    r.occurred_at >= bs && r.occurred_at < be && (if t == "other" { r.error_type.is_empty() } else { r.error_type == t })
                })
                .count() as u64;
            assert_eq!(p["value"], want);
            assert_eq!(p["labels"]["error_type"], t);
        }
    }

    // --- lists -------------------------------------------------------------
    let body = app.ok(KEY_A, "/api/v1/analytics/navigator-tool-connections").await;
    assert_valid("NavigatorToolConnectionsResponse", &body);
    let items = body["data"].as_array().unwrap();
    // Connections echo no range; the window is 24h ending now (events keep 10 min away from the edges).
    let recent = select(rows, now - chrono::Duration::hours(24), now + chrono::Duration::minutes(5), Kinds::Tool, &none);
    let pairs = count_by(&recent, |r| {
        (!r.navigator_instance_id.is_nil() && !r.tool_id.is_nil()).then(|| (r.navigator_instance_id.to_string(), r.tool_id.to_string()))
    });
    assert_eq!(items.len(), pairs.len());
    for it in items {
        let key = (it["navigator_instance_id"].as_str().unwrap().to_owned(), it["tool_id"].as_str().unwrap().to_owned());
        assert_eq!(it["usage_count"], pairs[&key]);
        let last = recent
            .iter()
            .filter(|r| r.navigator_instance_id.to_string() == key.0 && r.tool_id.to_string() == key.1)
            .map(|r| r.occurred_at)
            .max()
            .unwrap();
        assert_eq!(time_of(it, "last_used").timestamp(), last.timestamp());
        assert_eq!(it["connection_status"], "active");
        assert_eq!(it["window"], "24h");
    }

    let body = app.ok(KEY_A, "/api/v1/analytics/tools?sort_order=desc&limit=3").await;
    assert_valid("ToolActivityResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let names: Vec<String> = count_by(&select(rows, from, to, Kinds::Tool, &none), |r| Some(r.tool_name.clone())).into_keys().collect();
    assert_eq!(d["total_count"], names.len());
    let want: Vec<String> = names.iter().rev().take(3).cloned().collect();
    assert_eq!(d["tools"], serde_json::json!(want));
    assert_eq!(d["limit"], 3);
    assert_eq!(d["sort_order"], "desc");

    let body = app.ok(KEY_A, "/api/v1/analytics/servers").await;
    assert_valid("ServerActivityResponse", &body);
    let d = &body["data"];
    let (from, to) = range_of(d);
    let by_server = count_by(&select(rows, from, to, Kinds::Tool, &none), |r| (!r.server_name.is_empty()).then(|| r.server_name.clone()));
    let mut want: Vec<(String, u64)> = by_server.into_iter().collect();
    want.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let got: Vec<(String, u64)> = d["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server_name"].as_str().unwrap().to_owned(), s["tool_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);

    for (path, schema, map_key, list_key, id_key, key) in [
        (
            "top-servers",
            "TopServersActivityResponse",
            "server_count",
            "servers",
            "server_id",
            (|r: &agentmeter_schema::rows::ToolCallRow| r.server_id) as fn(&agentmeter_schema::rows::ToolCallRow) -> uuid::Uuid,
        ),
        ("top-projects", "TopProjectsActivityResponse", "project_count", "projects", "project_id", |r| r.project_id),
        ("top-navigators", "TopNavigatorsActivityResponse", "navigator_count", "navigators", "navigator_id", |r| r.navigator_id),
    ] {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/{path}?limit=2")).await;
        assert_valid(schema, &body);
        let d = &body["data"];
        let (from, to) = range_of(d);
        let sel = select(rows, from, to, Kinds::Tool, &none);
        let calls = count_by(&sel, |r| (!key(r).is_nil()).then(|| key(r).to_string()));
        let queries = queries_by(&sel, |r| (!key(r).is_nil()).then(|| key(r).to_string()));
        for (m, counts) in [("tool_calls", calls), ("queries_processed", queries)] {
            let mut want: Vec<(String, u64)> = counts.into_iter().filter(|x| x.1 > 0).collect();
            want.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            want.truncate(2);
            let got: Vec<(String, u64)> = d[m][list_key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s[id_key].as_str().unwrap().to_owned(), s["count"].as_u64().unwrap()))
                .collect();
            assert_eq!(got, want, "{path} {m}");
            assert_eq!(d[m][map_key], want.len());
        }
    }

    // Calls per e-mail: whole hours from the per-user rollup and the
    // minutes at either end from the raw calls (the default day, a
    // project's, and a range from one call to just after another, both
    // inside their hours), or all raw (an hour that holds no whole hour).
    let project = a.projects[1];
    let by_project = Filt { project: Some(project), ..Filt::default() };
    let inside_hour = |r: &&agentmeter_schema::rows::ToolCallRow| r.occurred_at.timestamp() % 3600 != 0 && !r.user_email.is_empty();
    let first = rows.iter().filter(inside_hour).find(|r| r.occurred_at < now - chrono::Duration::days(3)).unwrap().occurred_at;
    let last = rows.iter().filter(inside_hour).find(|r| r.occurred_at > first + chrono::Duration::hours(30)).unwrap().occurred_at;
    let between = format!("&from={}&to={}", first.timestamp_millis(), last.timestamp_millis() + 1);
    let by_project_query = format!("&project_id={project}");
    for (query, filt) in [("", &none), (by_project_query.as_str(), &by_project), (between.as_str(), &none), ("&window=1h", &none)] {
        let body = app.ok(KEY_A, &format!("/api/v1/analytics/users?sort_order=asc{query}")).await;
        assert_valid("UsersActivityResponse", &body);
        let d = &body["data"];
        let (from, to) = range_of(d);
        let by_user = count_by(&select(rows, from, to, Kinds::Tool, filt), |r| (!r.user_email.is_empty()).then(|| r.user_email.clone()));
        let mut want: Vec<(String, u64)> = by_user.into_iter().collect();
        want.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)));
        let got: Vec<(String, u64)> = d["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["user_email"].as_str().unwrap().to_owned(), s["tool_count"].as_u64().unwrap()))
            .collect();
        assert!(!want.is_empty(), "{query}");
        assert_eq!(got, want, "{query}");
        assert_eq!(d["total_count"], want.len(), "{query}");
    }

    // --- per-project users ------------------------------------------------
    let body = app.ok(KEY_A, &format!("/api/v1/projects/{project}/users/summary")).await;
    assert_valid("UserbaseSummaryResponse", &body);
    let d = &body["data"];
    let in_project: Vec<_> = rows.iter().filter(|r| r.project_id == project && !r.user_token_id.is_nil()).collect();
    let distinct = |since: DateTime<Utc>| {
        in_project.iter().filter(|r| r.occurred_at >= since).map(|r| r.user_token_id).collect::<std::collections::BTreeSet<_>>().len()
            as u64
    };
    let calc = time_of(d, "calculated_at");
    let total = distinct(calc - chrono::Duration::days(400));
    assert_eq!(d["total_users"], total);
    assert_eq!(d["weekly_active_users"], distinct(now - chrono::Duration::days(7)));
    assert_eq!(d["monthly_active_users"], distinct(now - chrono::Duration::days(30)));
    assert_eq!(d["inactive_users"], total - distinct(now - chrono::Duration::days(30)));
    let wau = d["wau_timeline"].as_array().unwrap();
    assert_eq!(wau.len(), 8);
    for (p, (s, e)) in wau.iter().zip(bucket_ranges(wau, now + chrono::Duration::minutes(1))) {
        assert_eq!(chrono::Datelike::weekday(&s), chrono::Weekday::Mon);
        let n = in_project
            .iter()
            .filter(|r| r.occurred_at >= s && r.occurred_at < e)
            .map(|r| r.user_token_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        assert_eq!(p["value"], n, "week {s}");
    }

    let user = &a.users[0];
    let body = app.ok(KEY_A, &format!("/api/v1/projects/{project}/users/{}/analytics?window=1mon&frequency=1w", user.token)).await;
    assert_valid("UserAnalyticsResponse", &body);
    let d = &body["data"];
    assert_eq!(d["user_email"], user.email);
    let (from, to) = range_of(d);
    let filt = Filt { project: Some(project), user: Some(user.token), ..Filt::default() };
    let sel = select(rows, from, to, Kinds::Tool, &filt);
    let f = Figures::of(&sel);
    assert!(f.calls > 0);
    assert_eq!(d["total_tool_calls"], f.calls);
    assert_eq!(d["total_queries"], f.queries);
    assert_eq!(d["error_rate_data"]["total_errors"], f.errors);
    let tools = count_by(&sel, |r| Some(r.tool_name.clone()));
    let got: BTreeMap<String, u64> = d["top_tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tool_name"].as_str().unwrap().to_owned(), t["call_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, tools);
    let navs = count_by(&sel, |r| Some(r.navigator_instance_id.to_string()));
    let got: BTreeMap<String, u64> = d["top_navigators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["navigator_instance_id"].as_str().unwrap().to_owned(), t["tool_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, navs);
    let tl = d["tool_calls_timeline"].as_array().unwrap();
    let first = time_of(&tl[0], "timestamp");
    let all = Figures::of(&select(rows, first, to, Kinds::Tool, &filt));
    assert_eq!(tl.iter().map(|p| p["value"].as_u64().unwrap()).sum::<u64>(), all.calls);

    app.drop_db().await;
}
