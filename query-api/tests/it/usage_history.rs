//! Usage history and per-user usage end to end (docs/limits.md, "Usage
//! history and per-user usage"): billable and non-billable agent executions
//! of two tenants over three months produced to Kafka and carried by a real
//! ingest worker; `GET /v1/api/usage/history`,
//! `GET /v1/subscriptions/users/{user_id}/usage` and `.../usage/limits`
//! compared with sums computed here from the same events, per calendar
//! month without limits and per the limit's week once a weekly limit
//! applies.

use std::collections::BTreeSet;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Datelike, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::{App, KEY_A, KEY_ADMIN_A, KEY_B};
use crate::kafka::{Kind, Pipeline};

#[derive(Clone)]
struct Exec {
    org: Uuid,
    user: Uuid,
    at: DateTime<Utc>,
    input: u64,
    output: u64,
    cost_micros: i128,
    billable: bool,
}

fn event(tenant: Uuid, e: &Exec) -> Value {
    json!({
        "event_id": Uuid::new_v4(), "occurred_at": e.at.to_rfc3339_opts(SecondsFormat::Millis, true), "tenant_id": tenant,
        "execution_id": Uuid::new_v4(), "execution_kind": if e.billable { "agent_chat" } else { "external_agent_call" },
        "billable": e.billable, "organization_id": e.org, "user_id": e.user, "input_tokens": e.input, "output_tokens": e.output,
        "cost_usd": format!("{}.{:06}", e.cost_micros / 1_000_000, e.cost_micros % 1_000_000), "messages_count": 1, "status": "success",
    })
}

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v[field].as_str().unwrap_or_else(|| panic!("{field} in {v}"))).unwrap().with_timezone(&Utc)
}

fn micros(v: &Value) -> i128 {
    (v.as_f64().unwrap_or_else(|| panic!("a number: {v}")) * 1e6).round() as i128
}

/// `[messages, tokens, input, output, executions, cost]` of the billable
/// executions of `org` (and `user`) in `[start, end)`.
fn sums(events: &[Exec], org: Uuid, user: Option<Uuid>, start: DateTime<Utc>, end: DateTime<Utc>) -> [i128; 6] {
    let mut s = [0i128; 6];
    for e in events.iter().filter(|e| e.billable && e.org == org && user.is_none_or(|u| u == e.user) && e.at >= start && e.at < end) {
        s[0] += 1;
        s[1] += i128::from(e.input + e.output);
        s[2] += i128::from(e.input);
        s[3] += i128::from(e.output);
        s[4] += 1;
        s[5] += e.cost_micros;
    }
    s
}

fn figures(r: &Value) -> [i128; 6] {
    let n = |f: &str| i128::from(r[f].as_i64().unwrap_or_else(|| panic!("{f} in {r}")));
    [
        n("messages_count"),
        n("tokens_count"),
        n("input_tokens_count"),
        n("output_tokens_count"),
        n("executions_count"),
        micros(&r["cost_usd"]),
    ]
}

/// Every record matches the events of its period; periods are contiguous,
/// newest first, the first contains now.
fn assert_records(records: &[Value], events: &[Exec], org: Uuid, user: Option<Uuid>) {
    let now = Utc::now();
    for (i, r) in records.iter().enumerate() {
        let (start, end) = (time(r, "period_start"), time(r, "period_end"));
        assert_eq!(figures(r), sums(events, org, user, start, end), "record {i}: {r}");
        assert_eq!(r["is_current"], json!(i == 0), "{r}");
        assert_eq!((r["plan_id"].clone(), r["plan_name"].clone()), (Value::Null, Value::Null));
        assert_eq!(r["organization_id"], org.to_string());
        assert_eq!(r["user_id"], user.map_or(Value::Null, |u| json!(u.to_string())));
        if i > 0 {
            assert_eq!(end, time(&records[i - 1], "period_start"), "contiguous");
        }
    }
    if let Some(r) = records.first() {
        assert!(time(r, "period_start") <= now && now < time(r, "period_end"), "{r}");
    }
}

/// GET with status, `X-Total-Count` and body; checked against the document.
async fn get(app: &App, key: &str, path: &str, headers: &[(&str, String)]) -> (u16, Option<u64>, Value) {
    let mut req = app.http.get(format!("{}{}", app.base, path)).header("X-API-Key", key);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let total = resp.headers().get("x-total-count").map(|v| v.to_str().unwrap().parse().unwrap());
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
    crate::openapi_doc::assert_documented("GET", path, status, &body);
    (status, total, body)
}

/// Polls until `done` holds for a 200 answer (usage takes a refresh).
async fn until(app: &App, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> (Option<u64>, Value) {
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        let (s, total, v) = get(app, key, path, &[]).await;
        if s == 200 && done(&v) {
            return (total, v);
        }
        assert!(Instant::now() < deadline, "{path}: {s} {v}");
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_history_and_per_user_usage_from_real_events() {
    // Events days old arrive late for the counters' minute deltas: a short
    // reconcile interval picks them up within a second (default 60 s).
    let app = App::start("usage_history", &["--usage-reconcile-interval-ms", "1000"]).await;
    let pipe = Pipeline::start("usage_history", &app.db_name).await;
    let (a, b) = (app.tenant_a, app.tenant_b);
    let (org, other_org, u1, u2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now();
    let ms = |t: DateTime<Utc>| DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap();
    let x = |org, user, ago: Duration, input, output, cost_micros, billable| Exec {
        org,
        user,
        at: ms(now - ago),
        input,
        output,
        cost_micros,
        billable,
    };
    let events_a = vec![
        x(org, u1, Duration::days(75), 60, 40, 500_000, true),
        x(org, u2, Duration::days(45), 150, 50, 1_250_000, true),
        x(org, u1, Duration::days(15), 200, 100, 30_000, true),
        x(org, u1, Duration::days(2), 10, 5, 1, true),
        x(org, u1, Duration::minutes(2), 300, 100, 2_000_000, true),
        x(org, u2, Duration::minutes(2), 30, 20, 123_456, true),
        // Not billable, another organization: never in these figures.
        x(org, u1, Duration::minutes(3), 999, 999, 9_000_000, false),
        x(other_org, u1, Duration::minutes(3), 123, 0, 0, true),
    ];
    let events_b = vec![x(org, u1, Duration::minutes(2), 7000, 777, 7_000_000, true)];
    pipe.produce(Kind::AgentExecution, &events_a.iter().map(|e| event(a, e)).collect::<Vec<_>>()).await;
    pipe.produce(Kind::AgentExecution, &events_b.iter().map(|e| event(b, e)).collect::<Vec<_>>()).await;
    pipe.wait_rows(&app.db, "agent_executions", (events_a.len() + events_b.len()) as u64).await;

    // Calendar months (UTC) without limits: from the month of the first
    // usage to the current one, newest first.
    let history = format!("/v1/api/usage/history?organization_id={org}");
    let current_tokens = sums(&events_a, org, None, month_start(now), now + Duration::days(40))[1];
    let (total, records) = until(&app, KEY_A, &history, |v| v[0]["tokens_count"] == json!(current_tokens as i64)).await;
    let records = records.as_array().unwrap().clone();
    let months: BTreeSet<DateTime<Utc>> =
        events_a.iter().filter(|e| e.billable && e.org == org).map(|e| month_start(e.at)).chain([month_start(now)]).collect();
    let first_month = *months.iter().next().unwrap();
    let mut n_months = 0;
    let mut m = month_start(now);
    while m >= first_month {
        n_months += 1;
        m = month_start(m - Duration::days(1));
    }
    assert_eq!((records.len(), total), (n_months, Some(n_months as u64)), "{records:#?}");
    assert_records(&records, &events_a, org, None);
    for r in &records {
        assert_eq!(time(r, "period_start"), month_start(time(r, "period_start")), "{r}");
        assert_eq!(r["usage_metadata"]["period"], "month");
        assert_eq!(r["usage_metadata"]["time_zone"], "UTC");
    }
    assert_eq!(records[0]["usage_metadata"]["source"], "counters");
    // The current record is the figure `current` answers.
    let current = app.ok(KEY_A, &format!("/v1/api/usage/current?organization_id={org}")).await;
    assert_eq!(current["usage"]["tokens"]["total"], records[0]["tokens_count"]);
    assert_eq!(current["period_start"], records[0]["period_start"]);

    // Offset pagination.
    let (s, total, page) = get(&app, KEY_A, &format!("{history}&limit=1&offset=1"), &[]).await;
    assert_eq!((s, total), (200, Some(n_months as u64)));
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["period_start"], records[1]["period_start"]);
    assert_eq!(page[0]["id"], records[1]["id"], "ids are stable");
    let (_, _, beyond) = get(&app, KEY_A, &format!("{history}&offset={n_months}"), &[]).await;
    assert_eq!(beyond, json!([]));

    // One user.
    let (_, user_records) = until(&app, KEY_A, &format!("{history}&user_id={u1}"), |v| v.is_array()).await;
    assert_records(user_records.as_array().unwrap(), &events_a, org, Some(u1));

    // Tenant B: its own usage of the same organization id, its current month only.
    let (total_b, records_b) = until(&app, KEY_B, &history, |v| v[0]["tokens_count"] == json!(7777)).await;
    assert_eq!((records_b.as_array().unwrap().len(), total_b), (1, Some(1)));
    assert_records(records_b.as_array().unwrap(), &events_b, org, None);
    // An organization without usage: the current period, zeros.
    let (_, _, none) = get(&app, KEY_A, &format!("/v1/api/usage/history?organization_id={}", Uuid::new_v4()), &[]).await;
    assert_eq!(none.as_array().unwrap().len(), 1);
    assert_eq!(none[0]["tokens_count"], 0);

    // A weekly messages limit in Europe/Berlin: periods follow it.
    let put = |body: Value| {
        let app = &app;
        async move {
            let resp = app
                .http
                .put(format!("{}/v1/limits/{}", app.base, Uuid::new_v4()))
                .header("X-API-Key", KEY_ADMIN_A)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        }
    };
    put(json!({"subject": "organization", "organization_id": org, "metric": "messages", "period": "week",
               "time_zone": "Europe/Berlin", "max_value": 1000}))
    .await;
    put(json!({"subject": "user", "organization_id": org, "user_id": u1, "metric": "tokens", "period": "day", "max_value": 5000})).await;
    let (total_w, weekly) = until(&app, KEY_A, &history, |v| v[0]["usage_metadata"]["period"] == "week").await;
    let weekly = weekly.as_array().unwrap().clone();
    assert_records(&weekly, &events_a, org, None);
    assert_eq!(total_w, Some(weekly.len() as u64));
    assert!(weekly.len() >= 11, "75 days are at least 11 weeks: {}", weekly.len());
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    for r in &weekly {
        let local = time(r, "period_start").with_timezone(&berlin);
        assert_eq!((local.weekday(), local.time()), (chrono::Weekday::Mon, chrono::NaiveTime::MIN), "{r}");
        assert_eq!(r["usage_metadata"]["time_zone"], "Europe/Berlin");
    }
    let current = app.ok(KEY_A, &format!("/v1/api/usage/current?organization_id={org}")).await;
    assert_eq!(current["period_start"], weekly[0]["period_start"]);

    // The plan_usages row of a user: the current period, organization from
    // the parameter or the X-Organization-Id header.
    let row_path = format!("/v1/subscriptions/users/{u1}/usage");
    let (s, _, row) = get(&app, KEY_A, &format!("{row_path}?organization_id={org}"), &[]).await;
    assert_eq!(s, 200, "{row}");
    assert_eq!(row["user_id"], u1.to_string());
    assert_eq!((row["period_start"].clone(), row["plan_id"].clone()), (weekly[0]["period_start"].clone(), Value::Null));
    let (start, end) = (time(&row, "period_start"), time(&row, "period_end"));
    assert_eq!(figures(&row), sums(&events_a, org, Some(u1), start, end), "{row}");
    assert!(row["usage_metadata"].is_object() && row["created_at"].is_string() && row["updated_at"].is_string());
    let (s, _, by_header) = get(&app, KEY_A, &row_path, &[("X-Organization-Id", org.to_string())]).await;
    assert_eq!((s, by_header["tokens_count"].clone(), by_header["id"].clone()), (200, row["tokens_count"].clone(), row["id"].clone()));
    let (s, _, v) = get(&app, KEY_A, &row_path, &[]).await;
    assert_eq!((s, v["detail"][0]["loc"].clone()), (422, json!(["query", "organization_id"])), "{v}");
    for (q, header) in
        [("", "nope".to_owned()), ("?organization_id=", org.to_string()), (&format!("?organization_id={org}"), Uuid::new_v4().to_string())]
    {
        let (s, _, v) = get(&app, KEY_A, &format!("{row_path}{q}"), &[("X-Organization-Id", header)]).await;
        assert_eq!(s, 422, "{q}: {v}");
    }
    let (s, _, _) = get(&app, KEY_A, &format!("{row_path}?organization_id={org}"), &[("X-Organization-Id", "nope".into())]).await;
    assert_eq!(s, 422, "a malformed header is refused even beside the parameter");
    // Tenant B's row of the same ids holds B's usage only.
    let (_, _, row_b) = get(&app, KEY_B, &format!("{row_path}?organization_id={org}"), &[]).await;
    assert_eq!(row_b["tokens_count"], 7777, "{row_b}");

    // The limits of a user: the organization's messages limit and the
    // user's tokens limit, with current figures; none for tenant B.
    let limits_path = format!("/v1/subscriptions/users/{u1}/usage/limits?organization_id={org}");
    let (s, _, limits) = get(&app, KEY_A, &limits_path, &[]).await;
    assert_eq!(s, 200, "{limits}");
    let metrics: BTreeSet<&str> = limits["limits"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(metrics, BTreeSet::from(["messages", "tokens"]), "{limits}");
    let msgs = &limits["limits"]["messages"][0];
    assert_eq!((msgs["subject"].clone(), msgs["max_limit"].clone()), (json!("organization"), json!(1000)));
    let (ws, we) = (time(msgs, "period_start"), time(msgs, "resets_at"));
    assert_eq!(i128::from(msgs["current_usage"].as_i64().unwrap()), sums(&events_a, org, None, ws, we)[0]);
    let toks = &limits["limits"]["tokens"][0];
    assert_eq!((toks["subject"].clone(), toks["max_limit"].clone()), (json!("user"), json!(5000)));
    let (ds, de) = (time(toks, "period_start"), time(toks, "resets_at"));
    assert_eq!(i128::from(toks["current_usage"].as_i64().unwrap()), sums(&events_a, org, Some(u1), ds, de)[1]);
    let (_, _, limits_b) = get(&app, KEY_B, &limits_path, &[]).await;
    assert_eq!(limits_b["limits"], json!({}), "{limits_b}");

    // 422s name the parameter.
    for (q, loc) in [("limit=0", "limit"), ("limit=101", "limit"), ("offset=-1", "offset"), ("user_id=x", "user_id")] {
        let (s, _, v) = get(&app, KEY_A, &format!("{history}&{q}"), &[]).await;
        assert_eq!((s, v["detail"][0]["loc"].clone()), (422, json!(["query", loc])), "{q}: {v}");
    }
    let (s, _, _) = get(&app, KEY_A, "/v1/api/usage/history", &[]).await;
    assert_eq!(s, 422);

    pipe.stop().await;
    app.drop_db().await;
}
