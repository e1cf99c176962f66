//! Queries are counted once, at their own time, from their
//! `navigator_query` execution (SEED_SPEC §4.3, §4.5), zero-call queries
//! included; a server filter counts the queries that called the server and
//! proxy kinds the queries with proxy calls (from the calls). Events go
//! through Kafka and a real ingest worker, then every distinct-query figure
//! the rollups give (totals, hourly, daily and 5-minute series,
//! per-project and per-navigator counts, filters) is compared with the
//! answer computed from the events themselves and with the raw tables. The
//! data holds queries with zero tool calls (an execution only), queries
//! whose execution and calls fall in different hours (counted in the
//! execution's), tool-call-only queries (no execution: not counted as
//! queries, only under a server filter or proxy kinds) and proxy calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use agentmeter_api::buckets::Buckets;
use agentmeter_api::db::Db;
use agentmeter_api::metrics::Metrics;
use agentmeter_api::queries::analytics::tool_calls::{self, Dim, Need};
use agentmeter_api::queries::{CallKinds, Filters, Scope};
use agentmeter_api::window::{Span, TimeRange, Unit};
use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use uuid::Uuid;

use super::App;
use crate::kafka::{Kind, Pipeline};

/// One event as the test knows it: the query it shows, when, and what it is.
#[derive(Clone)]
struct Shown {
    query: Uuid,
    at: DateTime<Utc>,
    /// `None` for the query's execution, else the call kind.
    call_kind: Option<&'static str>,
    project: Uuid,
    navigator: Uuid,
    server_instance: Uuid,
}

struct Events {
    shown: Vec<Shown>,
    calls: Vec<Value>,
    executions: Vec<Value>,
}

fn at_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Events {
    fn execution(&mut self, tenant: Uuid, s: Shown, kind: &str) {
        self.executions.push(json!({
            "event_id": Uuid::new_v4(), "occurred_at": at_ms(s.at), "tenant_id": tenant, "execution_id": s.query,
            "execution_kind": kind, "billable": false, "input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
            "cost_usd": "0.000001", "messages_count": 1, "status": "success", "project_id": s.project,
            "navigator_id": s.navigator, "navigator_instance_id": s.navigator,
        }));
        if kind == "navigator_query" {
            self.shown.push(s);
        }
    }
    fn call(&mut self, tenant: Uuid, s: Shown) {
        self.calls.push(json!({
            "event_id": Uuid::new_v4(), "occurred_at": at_ms(s.at), "tenant_id": tenant, "query_id": s.query,
            "call_kind": s.call_kind.unwrap(), "tool_name": "search", "latency_ms": 12.5, "success": true,
            "project_id": s.project, "navigator_id": s.navigator, "navigator_instance_id": s.navigator,
            "server_instance_id": s.server_instance, "server_id": s.server_instance, "server_name": "srv",
        }));
        self.shown.push(s);
    }
}

/// Whether the queries of a request are counted at their execution (the
/// default), not from the calls (a server filter, proxy kinds).
fn by_execution(kinds: CallKinds, filters: &Filters) -> bool {
    kinds != CallKinds::Proxy && filters.server_instance_id.is_none()
}

/// Distinct queries of `shown` in `[from, to)`, of `kinds`, passing `keep`:
/// with `by_execution`, the executions in the range; else the queries with
/// calls of `kinds` in it.
fn expected(
    shown: &[Shown],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    kinds: CallKinds,
    by_execution: bool,
    keep: impl Fn(&Shown) -> bool,
) -> u64 {
    let kind_ok = |s: &Shown| match kinds {
        _ if by_execution => s.call_kind.is_none(),
        CallKinds::All => true,
        CallKinds::Tool => matches!(s.call_kind, None | Some("tool")),
        CallKinds::Proxy => matches!(s.call_kind, Some(k) if k != "tool"),
    };
    let ids: BTreeSet<Uuid> = shown.iter().filter(|s| s.at >= from && s.at < to && kind_ok(s) && keep(s)).map(|s| s.query).collect();
    ids.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_are_counted_once_at_their_execution() {
    let app = App::start("an_queries_once", &[]).await;
    let tenant = app.tenant_a;
    let now = Utc::now();
    let hour = (now - Duration::hours(30)).duration_trunc(Duration::hours(1)).unwrap();
    let (p1, p2) = (Uuid::new_v4(), Uuid::new_v4());
    let (n1, n2) = (Uuid::new_v4(), Uuid::new_v4());
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    let mut ev = Events { shown: Vec::new(), calls: Vec::new(), executions: Vec::new() };
    let shown = |query, at, call_kind, i: usize| Shown {
        query,
        at,
        call_kind,
        project: if i.is_multiple_of(3) { p2 } else { p1 },
        navigator: if i.is_multiple_of(3) { n2 } else { n1 },
        server_instance: if i.is_multiple_of(2) { s1 } else { s2 },
    };
    for i in 0..60usize {
        let q = Uuid::new_v4();
        // Spread over ~27 hours, some in the last two hours (5-minute buckets).
        let t = if i % 10 == 0 { now - Duration::minutes(3 + 7 * i as i64 / 10) } else { hour + Duration::minutes(27 * i as i64) };
        match i % 6 {
            // Zero tool calls: the execution only.
            0 => ev.execution(tenant, shown(q, t, None, i), "navigator_query"),
            // Tool calls only (no execution event).
            1 => {
                for k in 0..2 {
                    ev.call(tenant, shown(q, t + Duration::seconds(k), Some("tool"), i));
                }
            }
            // Execution just before an hour edge, calls just after it.
            2 => {
                let edge = t.duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(1);
                ev.execution(tenant, shown(q, edge - Duration::seconds(20), None, i), "navigator_query");
                ev.call(tenant, shown(q, edge + Duration::seconds(5), Some("tool"), i));
                ev.call(tenant, shown(q, edge + Duration::seconds(9), Some("tool"), i + 1));
            }
            // Proxy calls only, with an execution.
            3 => {
                ev.execution(tenant, shown(q, t, None, i), "navigator_query");
                ev.call(tenant, shown(q, t + Duration::seconds(1), Some("suggest_tools"), i));
            }
            // Execution, a proxy call and tool calls.
            _ => {
                ev.execution(tenant, shown(q, t, None, i), "navigator_query");
                ev.call(tenant, shown(q, t + Duration::seconds(1), Some("suggest_tools"), i));
                for k in 0..(1 + i % 3) {
                    ev.call(tenant, shown(q, t + Duration::seconds(2 + k as i64), Some("tool"), i + k));
                }
            }
        }
        // Other agent runs are not queries.
        if i % 5 == 0 {
            ev.execution(tenant, shown(Uuid::new_v4(), t, None, i), "agent_chat");
        }
    }

    let pipe = Pipeline::start_batched("queries_once", &app.db_name, 50).await;
    pipe.produce(Kind::ToolCall, &ev.calls).await;
    pipe.produce(Kind::AgentExecution, &ev.executions).await;
    pipe.wait_rows(&app.db, "tool_calls", ev.calls.len() as u64).await;
    pipe.wait_rows(&app.db, "agent_executions", ev.executions.len() as u64).await;
    pipe.stop().await;

    let db = Db::new(app.db.clone(), 4, StdDuration::from_secs(30), Arc::new(Metrics::new()));
    let end = now.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
    let by_project = Filters { project_id: Some(p2), ..Filters::default() };
    let by_navigator = Filters { navigator_instance_id: Some(n1), ..Filters::default() };
    let by_server = Filters { server_instance_id: Some(s1), ..Filters::default() };
    let keep = |f: &Filters| {
        let f = f.clone();
        move |s: &Shown| {
            f.project_id.is_none_or(|p| s.project == p)
                && f.navigator_instance_id.is_none_or(|n| s.navigator == n)
                // A server filter counts queries with calls to that server.
                && f.server_instance_id.is_none_or(|v| s.call_kind.is_some() && s.server_instance == v)
        }
    };
    let zero_call = ev.shown.iter().filter(|s| s.call_kind.is_none()).map(|s| s.query).collect::<BTreeSet<_>>().len();
    assert!(zero_call > 0);
    let cases = [
        ("daily UTC 3 days", Duration::days(3), Span::new(1, Unit::Day), Filters::default(), CallKinds::Tool),
        ("hourly UTC 3 days", Duration::days(3), Span::new(1, Unit::Hour), Filters::default(), CallKinds::Tool),
        ("5-minute 2 hours", Duration::hours(2), Span::new(5, Unit::Minute), Filters::default(), CallKinds::Tool),
        ("hourly by project", Duration::days(3), Span::new(1, Unit::Hour), by_project.clone(), CallKinds::Tool),
        ("daily by navigator, all kinds", Duration::days(3), Span::new(1, Unit::Day), by_navigator.clone(), CallKinds::All),
        ("hourly by server", Duration::days(3), Span::new(1, Unit::Hour), by_server.clone(), CallKinds::Tool),
        ("daily proxy calls", Duration::days(3), Span::new(1, Unit::Day), Filters::default(), CallKinds::Proxy),
    ];
    for (what, back, freq, filters, kinds) in cases {
        let buckets = Buckets::plan(TimeRange { start: end - back, end }, freq, Tz::UTC, 5000).unwrap();
        let start = buckets.first_start();
        let scope = Scope { tenant, range: TimeRange { start, end }, filters: filters.clone(), kinds };
        let series = tool_calls::series(&db, &scope, &buckets, Need::QUERIES).await.unwrap();
        let totals = tool_calls::totals(&db, &scope, Need::QUERIES).await.unwrap();
        let by_execution = by_execution(kinds, &filters);
        let mut sum = 0;
        for (i, s) in series.iter().enumerate() {
            let bucket_end = if i + 1 < buckets.len() { buckets.start(i + 1) } else { end };
            let want = expected(&ev.shown, buckets.start(i), bucket_end, kinds, by_execution, keep(&filters));
            assert_eq!(s.queries, want, "{what}: bucket {i} at {}", buckets.start(i));
            sum += want;
        }
        assert!(sum > 0, "{what}: no queries in range");
        assert_eq!(totals.queries, expected(&ev.shown, start, end, kinds, by_execution, keep(&filters)), "{what}: totals");
        // The raw tables give the same totals.
        let raw: u64 = app
            .db
            .query(
                "SELECT uniqExact(q) FROM (
                   SELECT query_id AS q, occurred_at, project_id, navigator_instance_id, server_instance_id, call_kind FROM tool_calls
                   WHERE query_id != toUUID('00000000-0000-0000-0000-000000000000')
                   UNION ALL
                   SELECT execution_id, occurred_at, project_id, navigator_instance_id, toUUID('00000000-0000-0000-0000-000000000000'), '' FROM agent_executions
                   WHERE execution_kind = 'navigator_query')
                 WHERE occurred_at >= fromUnixTimestamp64Milli(?, 'UTC') AND occurred_at < fromUnixTimestamp64Milli(?, 'UTC')
                   AND (? = 0 OR call_kind = '')
                   AND (? = '' OR toString(project_id) = ?) AND (? = '' OR toString(navigator_instance_id) = ?)
                   AND (? = '' OR (call_kind != '' AND toString(server_instance_id) = ?))
                   AND multiIf(? = 'tool', call_kind IN ('', 'tool'), ? = 'proxy', call_kind NOT IN ('', 'tool'), 1)",
            )
            .bind(start.timestamp_millis())
            .bind(end.timestamp_millis())
            .bind(u8::from(by_execution))
            .bind(filters.project_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(filters.project_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(filters.navigator_instance_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(filters.navigator_instance_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(filters.server_instance_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(filters.server_instance_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(match kinds {
                CallKinds::Tool => "tool",
                CallKinds::Proxy => "proxy",
                CallKinds::All => "all",
            })
            .bind(match kinds {
                CallKinds::Tool => "tool",
                CallKinds::Proxy => "proxy",
                CallKinds::All => "all",
            })
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(totals.queries, raw, "{what}: totals against the raw tables");
    }

    // Per project and per navigator: zero-call queries count in their group.
    let scope =
        Scope { tenant, range: TimeRange { start: end - Duration::days(3), end }, filters: Filters::default(), kinds: CallKinds::Tool };
    for (dim, key) in [(Dim::ProjectId, (|s: &Shown| s.project) as fn(&Shown) -> Uuid), (Dim::NavigatorId, |s: &Shown| s.navigator)] {
        let groups = tool_calls::group_counts(&db, &scope, dim, true).await.unwrap();
        let got: BTreeMap<String, u64> = groups.iter().map(|g| (g.key.clone(), g.queries)).collect();
        let want: BTreeMap<String, u64> = [p1, p2, n1, n2]
            .iter()
            .filter_map(|id| {
                let n = expected(&ev.shown, scope.range.start, end, CallKinds::Tool, true, |s| key(s) == *id);
                (n > 0).then(|| (id.to_string(), n))
            })
            .collect();
        assert_eq!(got, want, "{dim:?}");
    }

    app.drop_db().await;
}
