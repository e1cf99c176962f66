//! Figures filtered by a user (`user_email`, `user_token_id`) from the
//! per-user rollups of migration 0013 give the raw answer: two tenants
//! with the same user ids and e-mails, ranges that start at :17 and end
//! mid-hour (the minutes at either end read from the raw events), daily
//! UTC and hourly Berlin buckets, tool and all call kinds. Calls, errors,
//! latency sums, queries (at their `navigator_query` execution) and the
//! execution metrics (executions of every kind, tokens, cost, messages)
//! are compared bucket by bucket with the raw path (`Source::Raw`) and
//! with the figures computed here from the events; t-digest percentiles
//! close.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use agentmeter_api::buckets::Buckets;
use agentmeter_api::db::Db;
use agentmeter_api::metrics::Metrics;
use agentmeter_api::queries::analytics::rollup::{self, Grouping, Source};
use agentmeter_api::queries::analytics::timeseries::{self, GroupBy, Metric};
use agentmeter_api::queries::analytics::tool_calls::{self, Dim, Need};
use agentmeter_api::queries::{CallKinds, Filters, Scope};
use agentmeter_api::window::{Span, TimeRange, Unit};
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::fixture::{assert_same_stats, World};
use super::App;

/// The events a scope selects.
struct Selected<'a> {
    calls: Vec<&'a ToolCallRow>,
    executions: Vec<&'a AgentExecutionRow>,
}

fn select<'a>(world: &'a World, scope: &Scope, from: DateTime<Utc>, to: DateTime<Utc>) -> Selected<'a> {
    let f = &scope.filters;
    let user = |token: Uuid, email: &str| f.user_token_id.is_none_or(|u| u == token) && f.user_email.as_deref().is_none_or(|e| e == email);
    let calls = world
        .rows
        .iter()
        .filter(|r| r.occurred_at >= from && r.occurred_at < to && user(r.user_token_id, &r.user_email))
        .filter(|r| f.project_id.is_none_or(|p| r.project_id == p))
        .filter(|r| match scope.kinds {
            CallKinds::Tool => r.call_kind == "tool",
            CallKinds::Proxy => r.call_kind != "tool",
            CallKinds::All => true,
        })
        .collect();
    let executions = world
        .executions
        .iter()
        .filter(|e| e.occurred_at >= from && e.occurred_at < to && user(e.user_token_id, &e.user_email))
        .filter(|e| f.project_id.is_none_or(|p| e.project_id == p))
        .collect();
    Selected { calls, executions }
}

impl Selected<'_> {
    fn queries(&self) -> u64 {
        self.executions.iter().filter(|e| e.execution_kind == "navigator_query").count() as u64
    }
    fn errors(&self) -> u64 {
        self.calls.iter().filter(|r| !r.success).count() as u64
    }
}

/// Tenant B's world with tenant A's users (same ids, same e-mails), and
/// executions that are not queries, with tokens, cost and messages.
fn worlds(a: Uuid, b: Uuid, now: DateTime<Utc>) -> Vec<World> {
    let mut worlds = vec![World::generate(a, 7, 400, now, "shared"), World::generate(b, 8, 300, now, "shared")];
    let users = worlds[0].users.clone();
    let index: BTreeMap<Uuid, usize> = worlds[1].users.iter().enumerate().map(|(i, u)| (u.token, i)).collect();
    let w = &mut worlds[1];
    for r in &mut w.rows {
        if let Some(i) = index.get(&r.user_token_id) {
            (r.user_token_id, r.user_email) = (users[*i].token, users[*i].email.clone());
        }
    }
    for e in &mut w.executions {
        if let Some(i) = index.get(&e.user_token_id) {
            (e.user_token_id, e.user_email) = (users[*i].token, users[*i].email.clone());
        }
    }
    w.users = users;
    for w in &mut worlds {
        let mut chats = Vec::new();
        for (i, e) in w.executions.iter_mut().enumerate() {
            e.input_tokens = (i % 7) as u64;
            e.output_tokens = 3;
            e.total_tokens = e.input_tokens + 3;
            e.cost_usd = (i % 5) as i64 * 1000;
            e.cost_known = i % 11 != 0;
            if !e.cost_known {
                e.cost_usd = 0;
            }
            e.messages_count = 1 + (i % 2) as u32;
            if i % 4 == 0 {
                // Another kind of run by the same user: an execution, not a query.
                let mut chat = e.clone();
                chat.event_id = Uuid::new_v4();
                chat.execution_id = Uuid::new_v4();
                chat.execution_kind = "agent_chat".into();
                chat.occurred_at = e.occurred_at + Duration::seconds(20);
                chats.push(chat);
            }
        }
        w.executions.extend(chats);
    }
    worlds
}

#[tokio::test]
async fn user_filtered_figures_from_the_user_rollups_equal_the_events() {
    let app = App::start("an_user_rollups", &[]).await;
    let now = Utc::now();
    let worlds = worlds(app.tenant_a, app.tenant_b, now);
    for w in &worlds {
        app.insert_calls(&w.rows).await;
        app.insert_executions(&w.executions).await;
    }
    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), Arc::new(Metrics::new()));
    // Mid-hour end (a tail of raw minutes) unless the test runs at :00.
    let end = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let mut compared = 0;
    for (t, world) in worlds.iter().enumerate() {
        let tenant = if t == 0 { app.tenant_a } else { app.tenant_b };
        let (u0, u1, u2) = (&world.users[0], &world.users[1], &world.users[2]);
        let cases = [
            (
                "by e-mail, daily UTC 30 days",
                TimeRange { start: end - Duration::days(30), end },
                Span::new(1, Unit::Day),
                Tz::UTC,
                Filters { user_email: Some(u0.email.clone()), ..Filters::default() },
                CallKinds::Tool,
            ),
            (
                "by e-mail and project, hourly Berlin 3 days, all kinds",
                TimeRange { start: end - Duration::days(3), end },
                Span::new(1, Unit::Hour),
                berlin,
                Filters { user_email: Some(u1.email.clone()), project_id: Some(world.projects[0]), ..Filters::default() },
                CallKinds::All,
            ),
            (
                "by user id and project, daily UTC 30 days",
                TimeRange { start: end - Duration::days(30), end },
                Span::new(1, Unit::Day),
                Tz::UTC,
                Filters { user_token_id: Some(u2.token), project_id: Some(world.projects[1]), ..Filters::default() },
                CallKinds::Tool,
            ),
        ];
        for (what, range, freq, tz, filters, kinds) in cases {
            let what = format!("tenant {t}, {what}");
            let buckets = Buckets::plan(range, freq, tz, 2000).unwrap();
            let scope = Scope { tenant, range: TimeRange { start: buckets.first_start(), end }, filters: filters.clone(), kinds };
            let chosen = rollup::choose_ungrouped(&scope, Some(&buckets), true);
            assert!(matches!(chosen, Source::UserHourly(_)), "{what}: {chosen:?}");
            let auto = tool_calls::series(&db, &scope, &buckets, Need::ALL).await.unwrap();
            let raw = tool_calls::series_via(&db, &scope, &buckets, Need::ALL, &Source::Raw).await.unwrap();
            for (i, (a, r)) in auto.iter().zip(&raw).enumerate() {
                assert_same_stats(a, r, &format!("{what}, bucket {i}: user rollup vs raw"));
                let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
                let s = select(world, &scope, buckets.start(i), bucket_end);
                let latency: f64 = s.calls.iter().map(|r| r.latency_ms).sum();
                assert_eq!((a.calls, a.errors, a.queries), (s.calls.len() as u64, s.errors(), s.queries()), "{what}, bucket {i}");
                assert!((a.latency_sum_ms - latency).abs() < 1e-6 * latency.max(1.0), "{what}, bucket {i}: latency sum");
            }
            assert!(auto.iter().map(|s| s.calls).sum::<u64>() > 0, "{what}: no calls");
            assert!(auto.iter().map(|s| s.queries).sum::<u64>() > 0, "{what}: no queries");

            // Totals over a range starting at :17 (raw head, whole hours, raw tail).
            let odd = TimeRange { start: range.start.duration_trunc(Duration::hours(1)).unwrap() + Duration::minutes(17), end };
            let odd_scope = Scope { range: odd, ..scope.clone() };
            let chosen = rollup::choose_ungrouped(&odd_scope, None, true);
            assert!(matches!(chosen, Source::UserHourly(s) if s.head.is_some()), "{what}: {chosen:?}");
            let totals = tool_calls::totals(&db, &odd_scope, Need::ALL).await.unwrap();
            assert_same_stats(&totals, &tool_calls::totals_via(&db, &odd_scope, Need::ALL, &Source::Raw).await.unwrap(), &what);
            let s = select(world, &odd_scope, odd.start, odd.end);
            assert_eq!((totals.calls, totals.errors, totals.queries), (s.calls.len() as u64, s.errors(), s.queries()), "{what}: totals");

            // Per project and per navigator.
            for dim in [Dim::ProjectId, Dim::NavigatorId] {
                let chosen = rollup::choose_grouped(&odd_scope, Grouping::Navigator, false);
                assert!(matches!(chosen, Source::UserHourly(_)), "{what} {dim:?}: {chosen:?}");
                let got = tool_calls::group_counts(&db, &odd_scope, dim, true).await.unwrap();
                let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let key = |p: Uuid, n: Uuid| if dim == Dim::ProjectId { p } else { n };
                for r in &s.calls {
                    let k = key(r.project_id, r.navigator_id);
                    if !k.is_nil() {
                        want.entry(k.to_string()).or_default().0 += 1;
                    }
                }
                for e in s.executions.iter().filter(|e| e.execution_kind == "navigator_query") {
                    want.entry(key(e.project_id, e.navigator_id).to_string()).or_default().1 += 1;
                }
                let got: BTreeMap<String, (u64, u64)> = got.into_iter().map(|g| (g.key, (g.calls, g.queries))).collect();
                assert_eq!(got, want, "{what}: per {dim:?}");
            }

            // The Grafana endpoint's metrics (user_email only, as there).
            if filters.user_email.is_none() {
                continue;
            }
            let metrics = [
                Metric::ToolCalls,
                Metric::Queries,
                Metric::Errors,
                Metric::LatencyAvg,
                Metric::Tokens,
                Metric::InputTokens,
                Metric::CostUsd,
                Metric::UnpricedExecutions,
                Metric::Messages,
            ];
            for metric in metrics {
                let points = timeseries::points(&db, &scope, metric, &buckets, None, "m").await.unwrap();
                let got: BTreeMap<u32, f64> = points.iter().map(|p| (p.bucket, p.value)).collect();
                for i in 0..buckets.len() {
                    let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
                    let s = select(world, &scope, buckets.start(i), bucket_end);
                    let n = s.calls.len() as f64;
                    let want = match metric {
                        Metric::ToolCalls => n,
                        Metric::Queries => s.queries() as f64,
                        Metric::Errors => s.errors() as f64,
                        Metric::LatencyAvg => s.calls.iter().map(|r| r.latency_ms).sum::<f64>() / n,
                        Metric::Tokens => s.executions.iter().map(|e| e.total_tokens).sum::<u64>() as f64,
                        Metric::InputTokens => s.executions.iter().map(|e| e.input_tokens).sum::<u64>() as f64,
                        Metric::CostUsd => {
                            let unpriced = s.executions.iter().filter(|e| !e.cost_known).count();
                            if unpriced > 0 && unpriced == s.executions.len() {
                                f64::NAN
                            } else {
                                s.executions.iter().map(|e| e.cost_usd).sum::<i64>() as f64 / 1e6
                            }
                        }
                        Metric::UnpricedExecutions => s.executions.iter().filter(|e| !e.cost_known).count() as f64,
                        Metric::Messages => s.executions.iter().map(|e| u64::from(e.messages_count)).sum::<u64>() as f64,
                        _ => unreachable!(),
                    };
                    let value = got.get(&(i as u32)).copied();
                    let ok = match value {
                        Some(v) if v.is_nan() || want.is_nan() => v.is_nan() && want.is_nan(),
                        Some(v) => (v - want).abs() <= 1e-9 * want.abs().max(1.0),
                        // No row: an empty bucket (zero, or no value for a ratio).
                        None => want == 0.0 || want.is_nan(),
                    };
                    assert!(ok, "{what}, {metric:?}, bucket {i}: {value:?} vs {want}");
                    compared += 1;
                }
            }
            // Grouped by project: the per-user rollups, the same sums.
            let (keys, _) = timeseries::top_groups(&db, &scope, Metric::Tokens, GroupBy::Project, 5).await.unwrap();
            let grouped = timeseries::points(&db, &scope, Metric::Tokens, &buckets, Some((GroupBy::Project, &keys)), "m").await.unwrap();
            let s = select(world, &scope, scope.range.start, end);
            let want: u64 = s.executions.iter().map(|e| e.total_tokens).sum();
            assert_eq!(grouped.iter().map(|p| p.value).sum::<f64>() as u64, want, "{what}: tokens by project");
        }
    }
    assert!(compared > 100, "{compared}");
    app.drop_db().await;
}
