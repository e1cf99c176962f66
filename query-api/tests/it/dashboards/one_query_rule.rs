//! One rule for counting queries, everywhere (docs/api.md, "How queries are
//! counted"): a query counts once, at its `navigator_query` execution,
//! zero-call queries included; tool calls whose query sent no execution are
//! tool calls, not queries. Two tenants send, through Kafka and a real
//! ingest worker, queries with an execution and calls, zero-call queries
//! (one with a proxy call) and call-only queries, with the same project,
//! navigator and user ids and e-mails on both sides; every figure that
//! counts queries (Caylex totals, calls per query and their graphs, hero
//! stats, top projects, the Grafana `queries` metric plain and grouped by
//! project, user-filtered figures, the users list's `weekly_queries` and
//! the user analytics drawer) gives the execution-rule count of its own
//! tenant, and tool-call counts include the call-only queries' calls. A
//! project with tool calls and no query answers 0 calls per query.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::deliver;
use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A, KEY_B};
use crate::kafka::tool_call;

/// The ids both tenants use (the same values on purpose).
struct Ids {
    projects: [Uuid; 3],
    navigators: [Uuid; 3],
    users: [Uuid; 2],
}

const EMAILS: [&str; 2] = ["ana@rule.example", "ben@rule.example"];
const TOOLS: [&str; 2] = ["search", "fetch"];

/// One query of a tenant as the test knows it.
#[derive(Debug, Clone)]
struct Query {
    id: Uuid,
    at: DateTime<Utc>,
    /// Index into the projects (and their navigators).
    project: usize,
    user: usize,
    /// Whether its `navigator_query` execution is sent.
    execution: bool,
    /// The tool names of its `tool` calls.
    tool_calls: Vec<&'static str>,
    proxy_calls: usize,
}

/// How many queries of each sort a tenant sends.
struct Mix {
    with_calls: usize,
    zero_call: usize,
    call_only: usize,
}

/// A tenant's queries: projects 0 and 1 get every sort; project 2 only
/// call-only queries (tool calls and no query).
fn queries(mix: &Mix, now: DateTime<Utc>) -> Vec<Query> {
    let mut out = Vec::new();
    let mut k = 0i64;
    let mut at = || {
        k += 1;
        // Whole milliseconds, spread over the last ~12 hours.
        DateTime::from_timestamp_millis((now - Duration::minutes(20 + 41 * k)).timestamp_millis()).unwrap()
    };
    for i in 0..mix.with_calls {
        let tool_calls = (0..1 + i % 3).map(|j| TOOLS[(i + j) % 2]).collect();
        out.push(Query {
            id: Uuid::new_v4(),
            at: at(),
            project: i % 2,
            user: (i / 2) % 2,
            execution: true,
            tool_calls,
            proxy_calls: i % 2,
        });
    }
    for i in 0..mix.zero_call {
        // The first one made a proxy call: still no tool call.
        let proxy_calls = usize::from(i == 0);
        out.push(Query {
            id: Uuid::new_v4(),
            at: at(),
            project: (i + 1) % 2,
            user: i % 2,
            execution: true,
            tool_calls: vec![],
            proxy_calls,
        });
    }
    for i in 0..mix.call_only {
        out.push(Query {
            id: Uuid::new_v4(),
            at: at(),
            project: i % 2,
            user: (i + 1) % 2,
            execution: false,
            tool_calls: vec![TOOLS[i % 2], TOOLS[0]],
            proxy_calls: i % 2,
        });
    }
    out.push(Query { id: Uuid::new_v4(), at: at(), project: 2, user: 0, execution: false, tool_calls: vec!["search"; 3], proxy_calls: 0 });
    out
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The events of `qs` (tool calls, executions), plus an `agent_chat`
/// execution that is not a query.
fn events(tenant: Uuid, ids: &Ids, qs: &[Query], now: DateTime<Utc>) -> (Vec<Value>, Vec<Value>) {
    let (mut calls, mut execs) = (Vec::new(), Vec::new());
    let dims = |q: &Query| {
        json!({
            "project_id": ids.projects[q.project], "navigator_id": ids.navigators[q.project],
            "navigator_instance_id": ids.navigators[q.project], "user_token_id": ids.users[q.user], "user_email": EMAILS[q.user],
        })
    };
    let merge = |mut a: Value, b: Value| {
        if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
        a
    };
    for q in qs {
        if q.execution {
            execs.push(merge(
                json!({"event_id": Uuid::new_v4(), "occurred_at": stamp(q.at), "tenant_id": tenant, "execution_id": q.id,
                       "execution_kind": "navigator_query", "input_tokens": 5, "output_tokens": 1}),
                dims(q),
            ));
        }
        for (j, tool) in q.tool_calls.iter().enumerate() {
            let extra =
                merge(json!({"query_id": q.id, "call_kind": "tool", "server_id": Uuid::from_u128(9), "server_name": "srv"}), dims(q));
            calls.push(tool_call(tenant, q.at + Duration::seconds(1 + j as i64), tool, extra));
        }
        for j in 0..q.proxy_calls {
            let extra = merge(json!({"query_id": q.id, "call_kind": "suggest_tools", "suggestions_count": 2}), dims(q));
            calls.push(tool_call(tenant, q.at + Duration::seconds(10 + j as i64), "suggest_tools", extra));
        }
    }
    let chat = Query {
        id: Uuid::new_v4(),
        at: now - Duration::minutes(7),
        project: 0,
        user: 0,
        execution: true,
        tool_calls: vec![],
        proxy_calls: 0,
    };
    execs.push(merge(
        json!({"event_id": Uuid::new_v4(), "occurred_at": stamp(chat.at), "tenant_id": tenant, "execution_id": chat.id,
               "execution_kind": "agent_chat", "input_tokens": 5, "output_tokens": 1}),
        dims(&chat),
    ));
    (calls, execs)
}

/// What a filter keeps: project and user (index), each optional.
#[derive(Clone, Copy, Default)]
struct Keep {
    project: Option<usize>,
    user: Option<usize>,
}

impl Keep {
    fn keeps(&self, q: &Query) -> bool {
        self.project.is_none_or(|p| q.project == p) && self.user.is_none_or(|u| q.user == u)
    }
    /// `(queries, tool calls)` by the rule: queries at their execution,
    /// every tool call.
    fn figures(&self, qs: &[Query]) -> (u64, u64) {
        let kept = qs.iter().filter(|q| self.keeps(q));
        let queries = kept.clone().filter(|q| q.execution).count() as u64;
        (queries, kept.map(|q| q.tool_calls.len() as u64).sum())
    }
}

fn calls_per_query((queries, calls): (u64, u64)) -> f64 {
    if queries == 0 {
        0.0
    } else {
        calls as f64 / queries as f64
    }
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((g - want).abs() < 1e-9, "{what}: {g} against {want}");
}

/// The sum of every point of every series of a Grafana answer.
fn series_sum(body: &Value) -> f64 {
    body["series"].as_array().unwrap().iter().flat_map(|s| s["points"].as_array().unwrap()).map(|p| p[1].as_f64().unwrap_or(0.0)).sum()
}

/// Per series name, the sum of its points.
fn series_sums(body: &Value) -> BTreeMap<String, f64> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["name"].as_str().unwrap().to_owned(), s["points"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap_or(0.0)).sum())
        })
        .collect()
}

/// Every figure of one tenant, against its own queries.
async fn check_tenant(app: &App, key: &str, ids: &Ids, qs: &[Query]) {
    let who = if key == KEY_A { "tenant A" } else { "tenant B" };
    let email = |u: usize| format!("&user_email={}", EMAILS[u].replace('@', "%40"));
    let mut filters: Vec<(String, Keep)> = vec![("".into(), Keep::default())];
    for p in 0..3 {
        filters.push((format!("&project_id={}", ids.projects[p]), Keep { project: Some(p), user: None }));
    }
    for u in 0..2 {
        filters.push((email(u), Keep { project: None, user: Some(u) }));
        filters.push((format!("{}&project_id={}", email(u), ids.projects[0]), Keep { project: Some(0), user: Some(u) }));
    }
    for (f, keep) in &filters {
        let (queries, calls) = keep.figures(qs);
        let what = format!("{who} {f:?}");
        let d = app.ok(key, &format!("/api/v1/analytics/queries-processed?window=1d{f}")).await;
        assert_eq!(d["data"]["total_queries"], json!(queries), "{what}: queries-processed {d}");
        let d = app.ok(key, &format!("/api/v1/analytics/tool-calls-processed?window=1d{f}")).await;
        assert_eq!(d["data"]["total_tool_calls"], json!(calls), "{what}: tool-calls-processed {d}");
        let body = app.ok(key, &format!("/api/v1/analytics/average-tool-calls-per-query?window=1d{f}")).await;
        assert_valid("ToolCallsPerQueryResponse", &body);
        let d = &body["data"];
        assert_eq!((d["total_queries"].clone(), d["total_tool_calls"].clone()), (json!(queries), json!(calls)), "{what}: {d}");
        close(&d["average_tool_calls_per_query"], calls_per_query((queries, calls)), &format!("{what}: calls per query"));
        let body = app.ok(key, &format!("/api/v1/analytics/average-tool-calls-per-query-graph?window=1d&frequency=1h{f}")).await;
        assert_valid("ToolCallsPerQueryGraphResponse", &body);
        let points = body["data"]["data_points"].as_array().unwrap();
        let (mut q_sum, mut c_sum) = (0, 0);
        for p in points {
            let (pq, pc) = (p["total_queries"].as_u64().unwrap(), p["total_tool_calls"].as_u64().unwrap());
            close(&p["average_tool_calls_per_query"], calls_per_query((pq, pc)), &format!("{what}: point {p}"));
            (q_sum, c_sum) = (q_sum + pq, c_sum + pc);
        }
        assert_eq!((q_sum, c_sum), (queries, calls), "{what}: calls-per-query graph");
        let body = app.ok(key, &format!("/api/v1/analytics/queries-processed-graph?window=1d&frequency=1h{f}")).await;
        let count: u64 = body["data"]["data_points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(count, queries, "{what}: queries graph");
        let d = app.ok(key, &format!("/api/v1/analytics/heroes/global/stats?comparison_period=rolling_day{f}")).await;
        assert_eq!(
            (d["data"]["total_queries"].clone(), d["data"]["total_tool_calls"].clone()),
            (json!(queries), json!(calls)),
            "{what}: {d}"
        );
        let grafana = |metric: &str, extra: &str| format!("/api/v1/query/timeseries?metric={metric}&window=24h&step=1h{f}{extra}");
        assert_eq!(series_sum(&app.ok(key, &grafana("queries", "")).await), queries as f64, "{what}: Grafana queries");
        assert_eq!(series_sum(&app.ok(key, &grafana("tool_calls", "")).await), calls as f64, "{what}: Grafana tool calls");
        // Grouped by project: each project's queries, zero-call ones included.
        let by_project = series_sums(&app.ok(key, &grafana("queries", "&group_by=project")).await);
        let want: BTreeMap<String, f64> = (0..3)
            .filter(|p| keep.project.is_none_or(|kp| kp == *p))
            .map(|p| (ids.projects[p].to_string(), Keep { project: Some(p), ..*keep }.figures(qs).0 as f64))
            .filter(|(_, n)| *n > 0.0)
            .collect();
        let got: BTreeMap<String, f64> = by_project.into_iter().filter(|(_, n)| *n > 0.0).collect();
        assert_eq!(got, want, "{what}: Grafana queries by project");
    }

    // A filter on a tool counts the queries that made matching calls
    // (call-only queries too): a figure about calls.
    for tool in TOOLS {
        let want = qs.iter().filter(|q| q.tool_calls.contains(&tool)).count() as f64;
        let body = app.ok(key, &format!("/api/v1/query/timeseries?metric=queries&window=24h&step=1h&tool_name={tool}")).await;
        assert_eq!(series_sum(&body), want, "{who}: queries that called {tool}");
    }

    // Top projects: queries at their execution, the project without any
    // absent from the queries list, present in the calls list.
    let d = app.ok(key, "/api/v1/analytics/top-projects?window=1d").await;
    let list = |l: &Value| -> BTreeMap<String, u64> {
        l["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["project_id"].as_str().unwrap().to_owned(), p["count"].as_u64().unwrap()))
            .collect()
    };
    let want_q: BTreeMap<String, u64> = (0..3)
        .map(|p| (ids.projects[p].to_string(), Keep { project: Some(p), user: None }.figures(qs).0))
        .filter(|(_, n)| *n > 0)
        .collect();
    let want_c: BTreeMap<String, u64> = (0..3)
        .map(|p| (ids.projects[p].to_string(), Keep { project: Some(p), user: None }.figures(qs).1))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!((list(&d["data"]["queries_processed"]), list(&d["data"]["tool_calls"])), (want_q, want_c), "{who}: {d}");

    // A project's users: weekly queries at their execution, weekly tool
    // calls; the user analytics drawer agrees.
    for p in 0..3 {
        let project = ids.projects[p];
        let page = app.ok(key, &format!("/api/v1/projects/{project}/users?size=100")).await;
        assert_valid("Page_UserSummary_", &page);
        let got: BTreeMap<String, (u64, u64)> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["user_token_id"].as_str().unwrap().to_owned(),
                    (i["weekly_queries"].as_u64().unwrap(), i["weekly_tool_calls"].as_u64().unwrap()),
                )
            })
            .collect();
        let mut users: BTreeSet<usize> = qs.iter().filter(|q| q.project == p).map(|q| q.user).collect();
        if p == 0 {
            // The agent_chat run's user (an event, not a query).
            users.insert(0);
        }
        let mut want = BTreeMap::new();
        for u in users {
            let keep = Keep { project: Some(p), user: Some(u) };
            let figures = keep.figures(qs);
            want.insert(ids.users[u].to_string(), figures);
            let body = app.ok(key, &format!("/api/v1/projects/{project}/users/{}/analytics?window=1d&frequency=1h", ids.users[u])).await;
            assert_valid("UserAnalyticsResponse", &body);
            let d = &body["data"];
            let what = format!("{who}: user {u} in project {p}");
            assert_eq!((d["total_queries"].clone(), d["total_tool_calls"].clone()), (json!(figures.0), json!(figures.1)), "{what}: {d}");
            close(&d["avg_tool_calls_per_query"], calls_per_query(figures), &what);
            let timeline: u64 = d["queries_timeline"].as_array().unwrap().iter().map(|p| p["value"].as_u64().unwrap()).sum();
            assert_eq!(timeline, figures.0, "{what}: queries timeline");
        }
        assert_eq!(got, want, "{who}: users of project {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_figure_counts_queries_at_their_execution_on_two_tenants() {
    let app = App::start("dash_query_rule", &[]).await;
    let now = Utc::now();
    let ids = Ids {
        projects: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
        navigators: [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()],
        users: [Uuid::new_v4(), Uuid::new_v4()],
    };
    let qs_a = queries(&Mix { with_calls: 4, zero_call: 3, call_only: 3 }, now);
    let qs_b = queries(&Mix { with_calls: 2, zero_call: 5, call_only: 1 }, now);
    let (mut calls, mut execs) = events(app.tenant_a, &ids, &qs_a, now);
    let (calls_b, execs_b) = events(app.tenant_b, &ids, &qs_b, now);
    calls.extend(calls_b);
    execs.extend(execs_b);
    deliver(&app, "dash_query_rule", &calls, &execs).await;

    // The two rules would differ here: call-only queries exist, and
    // zero-call ones.
    let (all_a, exec_a) = (qs_a.len(), qs_a.iter().filter(|q| q.execution).count());
    assert!(all_a > exec_a && qs_a.iter().any(|q| q.execution && q.tool_calls.is_empty()));
    check_tenant(&app, KEY_A, &ids, &qs_a).await;
    check_tenant(&app, KEY_B, &ids, &qs_b).await;

    // Tool calls and no query: 0 calls per query (a number, as the
    // contract's schema says), 0 queries, the calls counted.
    let body = app.ok(KEY_A, &format!("/api/v1/analytics/average-tool-calls-per-query?window=1d&project_id={}", ids.projects[2])).await;
    let d = &body["data"];
    assert_eq!(
        (d["total_queries"].clone(), d["total_tool_calls"].clone(), d["average_tool_calls_per_query"].clone()),
        (json!(0), json!(3), json!(0.0)),
        "{d}"
    );
    app.drop_db().await;
}
