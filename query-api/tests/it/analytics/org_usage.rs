//! The organization usage endpoint (`/v1/organizations/{id}/usage`) over
//! periods that hold whole hours and end to the millisecond: the whole
//! hours come from the hourly rollup, the rest from the raw executions.
//! Every field must equal the sums of the organization's billable
//! executions inside the period, its start included and its end excluded,
//! with executions exactly on both ends and around every hour edge.

use agentmeter_schema::rows::AgentExecutionRow;
use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use serde_json::json;
use uuid::Uuid;

use super::fixture::{blank, query_execution};
use super::{App, KEY_A};

#[tokio::test]
async fn organization_usage_is_exact_to_the_millisecond_around_whole_hours() {
    let app = App::start("an_org_usage", &[]).await;
    let (tenant, org) = (app.tenant_a, Uuid::new_v4());
    let base = (Utc::now() - Duration::hours(30)).duration_trunc(Duration::hours(1)).unwrap();
    // An execution every 7 min 13.5 s (and 250 ms) over 26 hours; every
    // fifth not billable, every eleventh without a known cost; a second
    // close to every hour edge; and the same traffic for another
    // organization.
    let execution = |org: Uuid, i: i64, at: DateTime<Utc>| AgentExecutionRow {
        execution_kind: "agent_chat".into(),
        organization_id: org,
        billable: i % 5 != 0,
        input_tokens: 10 + (i % 90) as u64,
        output_tokens: 5 + (i % 40) as u64,
        total_tokens: 15 + (i % 90) as u64 + (i % 40) as u64,
        cost_usd: if i % 11 == 0 { 0 } else { 1_234 * i + 1 },
        cost_known: i % 11 != 0,
        messages_count: 1 + (i % 3) as u32,
        ..query_execution(Uuid::new_v4(), at, &blank(tenant, at))
    };
    let mut rows = Vec::new();
    for (n, o) in [org, Uuid::new_v4()].into_iter().enumerate() {
        for i in 0..216 {
            rows.push(execution(o, i, base + Duration::milliseconds(i * 433_500 + 250 + n as i64)));
        }
        for h in 1..26 {
            let edge = base + Duration::hours(h);
            // Billable (i % 5 != 0).
            rows.push(execution(o, 1001 + 5 * h, edge - Duration::milliseconds(1)));
            rows.push(execution(o, 2002 + 5 * h, edge));
        }
    }
    app.insert_executions(&rows).await;

    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    // Billable executions exactly at the start (counted) and at the end (not).
    let (start, end) = (rows[3].occurred_at, rows[201].occurred_at);
    assert!(rows[3].billable && rows[201].billable);
    let periods = [
        (start, end),
        (base + Duration::hours(2), base + Duration::hours(20)),
        (start, base + Duration::hours(20) + Duration::milliseconds(1)),
        (base + Duration::hours(5) - Duration::milliseconds(1), end),
    ];
    for (from, to) in periods {
        let inside: Vec<&AgentExecutionRow> =
            rows.iter().filter(|r| r.organization_id == org && r.billable && r.occurred_at >= from && r.occurred_at < to).collect();
        assert!(to - from > Duration::hours(2) && inside.len() > 100, "{} executions", inside.len());
        let sum = |f: fn(&AgentExecutionRow) -> u64| inside.iter().map(|r| f(r)).sum::<u64>();
        let micros: i64 = inside.iter().filter(|r| r.cost_known).map(|r| r.cost_usd).sum();
        let path = format!("/v1/organizations/{org}/usage?period_start={}&period_end={}", at(from), at(to));
        let usage = app.ok(KEY_A, &path).await;
        assert_eq!(usage["messages_count"], json!(sum(|r| u64::from(r.messages_count))), "{path}: {usage}");
        assert_eq!(usage["input_tokens_count"], json!(sum(|r| r.input_tokens)), "{path}");
        assert_eq!(usage["output_tokens_count"], json!(sum(|r| r.output_tokens)), "{path}");
        assert_eq!(usage["tokens_count"], json!(sum(|r| r.total_tokens)), "{path}");
        assert_eq!(usage["unpriced_executions"], json!(inside.iter().filter(|r| !r.cost_known).count()), "{path}");
        assert_eq!(usage["cost_usd"], json!(format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)), "{path}");
    }
    app.drop_db().await;
}
