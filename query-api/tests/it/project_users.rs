//! A project's users end to end: tool-call and agent-execution events of
//! two tenants produced to Kafka, carried into ClickHouse by a real ingest
//! worker, answered by `GET /api/v1/projects/{project_id}/users` and
//! `.../users/{user_id}`, compared with figures computed here from the same
//! events and validated against the contract's schemas (`Page_UserSummary_`,
//! `UserAuthDetails`). Cursor pages are walked while new users and new
//! events arrive: no user is served twice or skipped.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::schema::assert_valid;
use crate::analytics::{App, KEY_A, KEY_B};
use crate::kafka::{tool_call, Kind, Pipeline};

/// Now, in whole milliseconds (what the events carry).
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event as the test knows it.
#[derive(Clone)]
struct Ev {
    user: Uuid,
    email: &'static str,
    at: DateTime<Utc>,
    /// `None`: a navigator query (execution); else the call kind.
    kind: Option<&'static str>,
    query: Uuid,
    server_instance: Uuid,
}

fn to_json(tenant: Uuid, project: Uuid, e: &Ev) -> (Kind, Value) {
    match e.kind {
        None => (
            Kind::AgentExecution,
            json!({
                "event_id": Uuid::new_v4(), "occurred_at": at(e.at), "tenant_id": tenant, "execution_id": e.query,
                "execution_kind": "navigator_query", "project_id": project, "user_token_id": e.user,
                "user_email": e.email, "input_tokens": 3, "output_tokens": 2,
            }),
        ),
        Some(kind) => (
            Kind::ToolCall,
            tool_call(
                tenant,
                e.at,
                "create_issue",
                json!({"project_id": project, "query_id": e.query, "call_kind": kind, "user_token_id": e.user,
                       "user_email": e.email, "server_id": Uuid::from_u128(7), "server_name": "GitHub API",
                       "server_instance_id": e.server_instance}),
            ),
        ),
    }
}

async fn produce(pipe: &Pipeline, tenant: Uuid, project: Uuid, events: &[Ev]) {
    let (calls, execs): (Vec<_>, Vec<_>) =
        events.iter().map(|e| to_json(tenant, project, e)).partition(|(k, _)| matches!(k, Kind::ToolCall));
    pipe.produce(Kind::ToolCall, &calls.into_iter().map(|(_, v)| v).collect::<Vec<_>>()).await;
    pipe.produce(Kind::AgentExecution, &execs.into_iter().map(|(_, v)| v).collect::<Vec<_>>()).await;
}

/// What the API should say of a user, from the events.
#[derive(Debug, PartialEq)]
struct Expected {
    email: String,
    first: DateTime<Utc>,
    weekly_queries: u64,
    weekly_tool_calls: u64,
    /// Any event in the week (an active user).
    weekly_active: bool,
}

fn expected(events: &[Ev], now: DateTime<Utc>) -> BTreeMap<Uuid, Expected> {
    let week = now - Duration::days(7);
    let mut out = BTreeMap::new();
    let mut by_user: BTreeMap<Uuid, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_user.entry(e.user).or_default().push(e);
    }
    for (u, evs) in by_user {
        let latest = evs.iter().max_by_key(|e| e.at).unwrap();
        // Queries count at their navigator_query execution; a tool call
        // whose query sent no execution is a tool call, not a query.
        let queries: BTreeSet<Uuid> = evs.iter().filter(|e| e.at >= week && e.kind.is_none()).map(|e| e.query).collect();
        out.insert(
            u,
            Expected {
                email: latest.email.to_owned(),
                first: evs.iter().map(|e| e.at).min().unwrap(),
                weekly_queries: queries.len() as u64,
                weekly_tool_calls: evs.iter().filter(|e| e.at >= week && e.kind == Some("tool")).count() as u64,
                weekly_active: evs.iter().any(|e| e.at >= week),
            },
        );
    }
    out
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v[field].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

/// Every page of the list, following `next_cursor`; asserts each page.
async fn all_pages(app: &App, key: &str, path: &str, size: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for n in 0.. {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}size={size}&cursor={c}"),
            None => format!("{path}{sep}size={size}"),
        };
        let page = app.ok(key, &url).await;
        assert_valid("Page_UserSummary_", &page);
        assert_eq!(page["meta"]["has_prev"], json!(n > 0), "{page}");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= size);
        items.extend(got.iter().cloned());
        match page["meta"]["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(page["meta"]["has_next"], true);
                assert_eq!(got.len(), size, "a page before the last is full");
                cursor = Some(c.to_owned());
            }
            None => {
                assert_eq!(page["meta"]["has_next"], false);
                break;
            }
        }
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn project_users_from_real_events_with_stable_pages_and_tenant_walls() {
    let app = App::start("project_users", &[]).await;
    let pipe = Pipeline::start("project_users", &app.db_name).await;
    let (a, b) = (app.tenant_a, app.tenant_b);
    let project = Uuid::new_v4();
    let (inst_1, inst_2) = (Uuid::new_v4(), Uuid::new_v4());
    let now = now_ms();
    let base = now - Duration::days(12);
    let emails = ["ana@acme.test", "Bob.Builder@ACME.test", "carol@example.org"];

    // Tenant A: 23 users, first seen a distinct hour apart (ascending); some
    // only outside the week, one with only a zero-tool-call query, one whose
    // e-mail changes, proxy calls that are not tool calls.
    let users: Vec<Uuid> = (0..23).map(|_| Uuid::new_v4()).collect();
    let mut events = Vec::new();
    for (i, &u) in users.iter().enumerate() {
        let first = base + Duration::hours(i as i64 * 11);
        let email = emails[i % 3];
        let q_old = Uuid::new_v4();
        events.push(Ev { user: u, email, at: first, kind: Some("tool"), query: q_old, server_instance: inst_1 });
        if i % 4 != 0 {
            // Recent activity: a query with two tool calls and a proxy call.
            let q = Uuid::new_v4();
            let t = now - Duration::hours(1 + i as i64);
            let inst = if i % 2 == 0 { inst_2 } else { inst_1 };
            events.push(Ev { user: u, email, at: t, kind: None, query: q, server_instance: Uuid::nil() });
            events.push(Ev { user: u, email, at: t + Duration::seconds(1), kind: Some("tool"), query: q, server_instance: inst });
            events.push(Ev { user: u, email, at: t + Duration::seconds(2), kind: Some("tool"), query: q, server_instance: inst });
            events.push(Ev { user: u, email, at: t + Duration::seconds(3), kind: Some("invoke_tools"), query: q, server_instance: inst });
        }
    }
    // A user whose only event is a navigator query without tool calls.
    let quiet = Uuid::new_v4();
    events.push(Ev {
        user: quiet,
        email: "quiet@acme.test",
        at: now - Duration::minutes(30),
        kind: None,
        query: Uuid::new_v4(),
        server_instance: Uuid::nil(),
    });
    // users[5] changed e-mail: the latest one is shown.
    events.push(Ev {
        user: users[5],
        email: "renamed@acme.test",
        at: now - Duration::minutes(10),
        kind: Some("tool"),
        query: Uuid::new_v4(),
        server_instance: inst_1,
    });
    produce(&pipe, a, project, &events).await;
    // Events without a user are nobody's.
    pipe.produce(Kind::ToolCall, &[tool_call(a, now - Duration::hours(2), "x", json!({"project_id": project}))]).await;
    // Tenant B: the same project id and one of A's user ids, with other e-mails.
    let b_events = vec![
        Ev {
            user: users[3],
            email: "intruder@b.test",
            at: now - Duration::hours(3),
            kind: Some("tool"),
            query: Uuid::new_v4(),
            server_instance: inst_1,
        },
        Ev {
            user: Uuid::new_v4(),
            email: "b-only@b.test",
            at: now - Duration::hours(4),
            kind: Some("tool"),
            query: Uuid::new_v4(),
            server_instance: inst_2,
        },
    ];
    produce(&pipe, b, project, &b_events).await;
    let calls = events.iter().filter(|e| e.kind.is_some()).count() + 1 + b_events.len();
    let execs = events.iter().filter(|e| e.kind.is_none()).count();
    pipe.wait_rows(&app.db, "tool_calls", calls as u64).await;
    pipe.wait_rows(&app.db, "agent_executions", execs as u64).await;

    let want = expected(&events, Utc::now());
    let path = format!("/api/v1/projects/{project}/users");

    // Default page: 20, newest first, total over all pages.
    let page = app.ok(KEY_A, &path).await;
    assert_valid("Page_UserSummary_", &page);
    assert_eq!(page["meta"]["total"], want.len() as u64, "{page}");
    assert_eq!(page["meta"]["size"], 20);
    assert_eq!(page["items"].as_array().unwrap().len(), 20);

    // Walk pages of 7: every user once, in (first event) descending order,
    // with the figures the events give.
    let items = all_pages(&app, KEY_A, &path, 7).await;
    let ids: Vec<Uuid> = items.iter().map(|i| Uuid::parse_str(i["user_token_id"].as_str().unwrap()).unwrap()).collect();
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), want.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(ids.len(), want.len(), "no user twice");
    let firsts: Vec<DateTime<Utc>> = items.iter().map(|i| time(i, "first_seen_at")).collect();
    assert!(firsts.windows(2).all(|w| w[0] >= w[1]), "newest first: {firsts:?}");
    for item in &items {
        let u = Uuid::parse_str(item["user_token_id"].as_str().unwrap()).unwrap();
        let w = &want[&u];
        assert_eq!(item["user_email"], w.email, "{item}");
        assert_eq!(time(item, "first_seen_at"), w.first, "{item}");
        assert_eq!(
            (item["weekly_queries"].as_u64().unwrap(), item["weekly_tool_calls"].as_u64().unwrap()),
            (w.weekly_queries, w.weekly_tool_calls),
            "{item}"
        );
        // What the events cannot know is empty; what they know is counted.
        assert_eq!((item["authenticated_servers_count"].clone(), item["server_logos"].clone()), (json!(0), json!([])), "{item}");
        assert!(item["last_authentication_at"].is_null());
        assert_eq!(item["total_project_server_instances"], 2, "{item}");
    }
    let quiet_item = items.iter().find(|i| i["user_token_id"] == quiet.to_string()).unwrap();
    assert_eq!((quiet_item["weekly_queries"].clone(), quiet_item["weekly_tool_calls"].clone()), (json!(1), json!(0)));
    assert_eq!(items.iter().find(|i| i["user_token_id"] == users[5].to_string()).unwrap()["user_email"], "renamed@acme.test");
    assert_eq!(want[&users[4]].weekly_queries, 0, "users[4] is only outside the week");
    // users[5]'s latest tool call belongs to a query that sent no
    // execution: a tool call this week, not a query.
    let renamed = items.iter().find(|i| i["user_token_id"] == users[5].to_string()).unwrap();
    assert_eq!((renamed["weekly_queries"].clone(), renamed["weekly_tool_calls"].clone()), (json!(1), json!(3)), "{renamed}");

    // Stable under concurrent inserts: take the first page, then a new
    // user and new events of listed users arrive; the rest of the walk
    // neither repeats nor skips anyone.
    let first_page = app.ok(KEY_A, &format!("{path}?size=5")).await;
    let mut seen: Vec<String> =
        first_page["items"].as_array().unwrap().iter().map(|i| i["user_token_id"].as_str().unwrap().to_owned()).collect();
    let newcomer = Uuid::new_v4();
    let late = vec![
        Ev {
            user: newcomer,
            email: "new@acme.test",
            at: now_ms() - Duration::seconds(5),
            kind: Some("tool"),
            query: Uuid::new_v4(),
            server_instance: inst_1,
        },
        Ev {
            user: users[0],
            email: emails[0],
            at: now_ms() - Duration::seconds(4),
            kind: Some("tool"),
            query: Uuid::new_v4(),
            server_instance: inst_1,
        },
        Ev {
            user: users[22],
            email: emails[1],
            at: now_ms() - Duration::seconds(3),
            kind: Some("tool"),
            query: Uuid::new_v4(),
            server_instance: inst_1,
        },
    ];
    produce(&pipe, a, project, &late).await;
    pipe.wait_rows(&app.db, "tool_calls", (calls + late.len()) as u64).await;
    let mut cursor = first_page["meta"]["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = app.ok(KEY_A, &format!("{path}?size=5&cursor={c}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["user_token_id"].as_str().unwrap().to_owned()));
        cursor = page["meta"]["next_cursor"].as_str().map(str::to_owned);
    }
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "a user served twice: {seen:?}");
    assert_eq!(seen_set, want.keys().map(Uuid::to_string).collect::<BTreeSet<_>>(), "the walk holds exactly the users at its start");
    let fresh = app.ok(KEY_A, &format!("{path}?size=1")).await;
    assert_eq!(fresh["items"][0]["user_token_id"], newcomer.to_string(), "a new user comes first: {fresh}");
    assert_eq!(fresh["meta"]["total"], want.len() as u64 + 1);

    // Search: part of the e-mail, any case; or the exact user id.
    let bobs = all_pages(&app, KEY_A, &format!("{path}?search=bob.builder"), 100).await;
    let want_bobs = want.iter().filter(|(_, w)| w.email == emails[1]).count();
    assert_eq!(bobs.len(), want_bobs);
    assert!(bobs.iter().all(|i| i["user_email"] == emails[1]));
    let acme = app.ok(KEY_A, &format!("{path}?search=ACME.TEST&size=100")).await;
    let want_acme = want.iter().filter(|(_, w)| w.email.to_lowercase().contains("acme.test")).count() + 1; // + the newcomer
    assert_eq!((acme["items"].as_array().unwrap().len(), acme["meta"]["total"].as_u64().unwrap()), (want_acme, want_acme as u64));
    let by_id = app.ok(KEY_A, &format!("{path}?search={}", users[7].to_string().to_uppercase())).await;
    assert_eq!(by_id["meta"]["total"], 1);
    assert_eq!(by_id["items"][0]["user_token_id"], users[7].to_string());

    // Server instances: users whose tool calls reached any of them.
    let on_2 = app.ok(KEY_A, &format!("{path}?server_instance_ids={inst_2}&size=100")).await;
    let want_on_2: BTreeSet<String> =
        events.iter().filter(|e| e.kind.is_some() && e.server_instance == inst_2).map(|e| e.user.to_string()).collect();
    let got_on_2: BTreeSet<String> =
        on_2["items"].as_array().unwrap().iter().map(|i| i["user_token_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got_on_2, want_on_2);
    let on_both = app.ok(KEY_A, &format!("{path}?server_instance_ids={inst_2}&server_instance_ids={inst_1}&size=100")).await;
    // Everyone with a tool call (all but the quiet user; the newcomer too).
    let with_calls = want.keys().filter(|u| **u != quiet).count() as u64 + 1;
    assert_eq!(on_both["meta"]["total"].as_u64().unwrap(), with_calls);

    // Tenant B sees its own two users only, with its own e-mails.
    let b_page = app.ok(KEY_B, &path).await;
    assert_valid("Page_UserSummary_", &b_page);
    let b_emails: BTreeSet<&str> = b_page["items"].as_array().unwrap().iter().map(|i| i["user_email"].as_str().unwrap()).collect();
    assert_eq!(b_emails, BTreeSet::from(["intruder@b.test", "b-only@b.test"]));
    assert_eq!(b_page["items"][0]["total_project_server_instances"], 2);
    // A's cursor only positions B's own list.
    let a_cursor = app.ok(KEY_A, &format!("{path}?size=1")).await["meta"]["next_cursor"].as_str().unwrap().to_owned();
    let b_after = app.ok(KEY_B, &format!("{path}?cursor={a_cursor}")).await;
    assert!(b_after["items"].as_array().unwrap().iter().all(|i| i["user_email"].as_str().unwrap().ends_with("@b.test")));
    // A cursor past the last user: an empty page that still tells the total.
    let past_end = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"f\":0,\"u\":\"{}\"}}", Uuid::nil()))
    };
    let after_all = app.ok(KEY_A, &format!("{path}?cursor={past_end}")).await;
    assert_eq!((after_all["items"].clone(), after_all["meta"]["total"].clone()), (json!([]), json!(want.len() + 1)), "{after_all}");
    // An unknown project is an empty page.
    let empty = app.ok(KEY_A, &format!("/api/v1/projects/{}/users", Uuid::new_v4())).await;
    assert_eq!(
        (empty["items"].clone(), empty["meta"]["total"].clone(), empty["meta"]["has_next"].clone()),
        (json!([]), json!(0), json!(false))
    );

    // The userbase summary counts the same users; the quiet user (no tool
    // call) is a user for the analytics drawer too.
    let summary = app.ok(KEY_A, &format!("{path}/summary")).await;
    let now_all = expected(&[events.clone(), late.clone()].concat(), Utc::now());
    let wau = now_all.values().filter(|w| w.weekly_active).count() as u64;
    assert_eq!(
        (summary["data"]["total_users"].as_u64(), summary["data"]["weekly_active_users"].as_u64()),
        (Some(now_all.len() as u64), Some(wau)),
        "{summary}"
    );
    let drawer = app.ok(KEY_A, &format!("{path}/{quiet}/analytics")).await;
    assert_eq!(drawer["data"]["user_email"], "quiet@acme.test");

    // One user's details.
    let u = users[6];
    let d = app.ok(KEY_A, &format!("{path}/{u}")).await;
    assert_valid("UserAuthDetails", &d);
    assert_eq!((d["user_email"].clone(), d["servers"].clone()), (json!(want[&u].email), json!([])), "{d}");
    assert_eq!(
        (d["weekly_queries"].as_u64(), d["weekly_tool_calls"].as_u64()),
        (Some(want[&u].weekly_queries), Some(want[&u].weekly_tool_calls))
    );
    let used: BTreeMap<String, u64> = d["servers_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server_instance_id"].as_str().unwrap().to_owned(), s["tool_calls"].as_u64().unwrap()))
        .collect();
    let mut want_used: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.user == u && e.kind.is_some()) {
        *want_used.entry(e.server_instance.to_string()).or_default() += u64::from(e.kind == Some("tool"));
    }
    assert_eq!(used, want_used, "{d}");
    // The same user id in tenant B is B's user, with B's e-mail.
    let d_b = app.ok(KEY_B, &format!("{path}/{}", users[3])).await;
    assert_eq!(d_b["user_email"], "intruder@b.test");
    // 404: another tenant's user, an unknown user; 422: a malformed id.
    for (key, user) in [(KEY_B, users[6]), (KEY_A, Uuid::new_v4())] {
        let (s, body) = app.get(Some(key), &format!("{path}/{user}")).await;
        assert_eq!((s, body), (404, json!({"detail": "User not found in this project"})));
    }
    let (s, _) = app.get(Some(KEY_A), &format!("{path}/not-a-uuid")).await;
    assert_eq!(s, 422);

    // 422s name the parameter.
    for (q, loc) in [
        ("size=0", "size"),
        ("size=101", "size"),
        ("cursor=%21%21", "cursor"),
        ("server_instance_ids=nope", "server_instance_ids"),
        ("size=3&size=4", "size"),
    ] {
        let (s, body) = app.get(Some(KEY_A), &format!("{path}?{q}")).await;
        assert_eq!(s, 422, "{q}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", loc]), "{q}: {body}");
    }
    let long = "x".repeat(300);
    assert_eq!(app.get(Some(KEY_A), &format!("{path}?search={long}")).await.0, 422);
    assert_eq!(app.get(None, &path).await.0, 401);

    pipe.stop().await;
    app.drop_db().await;
}
