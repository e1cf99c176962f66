//! What dashboards need from the API (docs/api.md), with events produced
//! to Kafka and carried by the ingest worker: a burst of panel requests
//! with one key is answered in full (one replica, and two sharing Valkey),
//! every window/frequency pair of the contract is served, ids a tenant
//! has no data for answer zeros, every panel of the shipped Grafana
//! dashboard loads with data, ids show their latest names, queries
//! without tool calls are counted for a user and in Grafana, and every
//! figure counts queries by the one rule (at their execution), on two
//! tenants.

mod buckets;
mod bursts;
mod grafana_dashboard;
mod names;
mod one_query_rule;
mod unknown_ids;
mod zero_call_queries;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::analytics::App;
use crate::kafka::{tool_call, Kind, Pipeline};

/// The ids of one tenant's world.
pub struct Ids {
    pub projects: Vec<Uuid>,
    pub navigators: Vec<Uuid>,
    pub servers: Vec<Uuid>,
    pub tools: Vec<Uuid>,
    pub organizations: Vec<Uuid>,
}

/// `calls` tool calls and `calls / 4` agent executions of `tenant` spread
/// over the last 23 hours, with every dimension a dashboard groups by. The
/// executions are the `navigator_query` executions of a quarter of the
/// queries (so those are counted as queries); the other queries show only
/// their tool calls.
pub fn events(tenant: Uuid, calls: usize, label: &str, now: DateTime<Utc>) -> (Ids, Vec<Value>, Vec<Value>) {
    let ids = Ids {
        projects: (0..2).map(|_| Uuid::new_v4()).collect(),
        navigators: (0..2).map(|_| Uuid::new_v4()).collect(),
        servers: (0..2).map(|_| Uuid::new_v4()).collect(),
        tools: (0..3).map(|_| Uuid::new_v4()).collect(),
        organizations: (0..2).map(|_| Uuid::new_v4()).collect(),
    };
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut tool_calls = Vec::new();
    let mut executions = Vec::new();
    for i in 0..calls {
        let at = now - Duration::minutes(((i * 83) % (23 * 60)) as i64 + 1);
        let query = Uuid::new_v4();
        let (p, n, s, t, u) = (i % 2, (i / 2) % 2, i % 2, i % 3, i % 3);
        let failed = i % 5 == 0;
        tool_calls.push(tool_call(
            tenant,
            at,
            &format!("{label}_tool_{t}"),
            json!({
                "project_id": ids.projects[p], "navigator_instance_id": ids.navigators[n], "navigator_id": ids.navigators[n],
                "server_instance_id": ids.servers[s], "server_id": ids.servers[s], "server_name": format!("{label}_server_{s}"),
                "tool_id": ids.tools[t], "user_token_id": users[u], "user_email": format!("{label}{u}@example.com"),
                "organization_id": ids.organizations[i % 2], "query_id": query, "latency_ms": 50 + (i % 17) * 10,
                "runtime_ms": 80 + (i % 13) * 10, "success": !failed, "error_type": if failed { json!("timeout") } else { Value::Null },
            }),
        ));
        if i % 4 == 0 {
            executions.push(json!({
                "event_id": Uuid::new_v4(), "execution_id": query, "execution_kind": "navigator_query",
                "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "tenant_id": tenant, "organization_id": ids.organizations[i % 2], "user_id": users[u], "user_token_id": users[u],
                "user_email": format!("{label}{u}@example.com"), "project_id": ids.projects[p], "navigator_instance_id": ids.navigators[n],
                "model": format!("{label}-model-{}", i % 2), "input_tokens": 100 + i, "output_tokens": 40, "cost_usd": "0.002",
                "messages_count": 2,
            }));
        }
    }
    (ids, tool_calls, executions)
}

/// Produces the events through Kafka and waits until the worker wrote them.
pub async fn deliver(app: &App, what: &str, tool_calls: &[Value], executions: &[Value]) {
    let pipeline = Pipeline::start(what, &app.db_name).await;
    pipeline.produce(Kind::ToolCall, tool_calls).await;
    pipeline.produce(Kind::AgentExecution, executions).await;
    pipeline.wait_rows(&app.db, "tool_calls", tool_calls.len() as u64).await;
    pipeline.wait_rows(&app.db, "agent_executions", executions.len() as u64).await;
    pipeline.stop().await;
}
