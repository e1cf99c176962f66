//! List and top-N endpoints: connections, tools, servers, top servers /
//! projects / navigators, users.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AnalyticsState;
use super::{envelope, merge, ts, Base};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Accepts, Checker, Params, RawParams, SortOrder};
use crate::queries::analytics::raw;
use crate::queries::analytics::tool_calls::{self, Dim, GroupCount};
use crate::queries::CallKinds;

/// `GET /api/v1/analytics/navigator-tool-connections`: one item per
/// (navigator instance, tool id) used in the window, most used first.
pub async fn navigator_tool_connections(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    base.authorize(&state, &caller).await?;
    let rows = tool_calls::connections(&state.db, &base.scope(&caller, CallKinds::Tool)).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "navigator_instance_id": r.navigator_instance_id,
                "tool_id": r.tool_id,
                "connection_status": "active",
                "last_used": chrono::DateTime::from_timestamp_millis(r.last_used_ms).map(ts),
                "usage_count": r.usage_count,
                "window": base.res.window_str,
                "filters": base.echo(),
                "timestamp": ts(base.now),
            })
        })
        .collect();
    Ok(envelope(Value::Array(items), base.now))
}

/// `GET /api/v1/analytics/tools`: distinct tool names, sorted by name;
/// `total_count` counts all of them (before `limit`).
pub async fn tools(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let req = ListRequest::parse(&state, &caller, &p, Accepts::PNS, SortOrder::Asc).await?;
    let mut groups = tool_calls::group_counts(&state.db, &req.base.scope(&caller, CallKinds::Tool), Dim::ToolName, false).await?;
    let total = groups.len();
    if req.order == SortOrder::Desc {
        groups.reverse();
    }
    let names: Vec<&str> = groups.iter().take(req.limit as usize).map(|g| g.key.as_str()).collect();
    Ok(req.answer(json!({ "tools": names, "total_count": total })))
}

/// The parameters every sorted list shares (window and filters, sort
/// order, limit 1–1000 defaulting to 100) and the fields of its answer.
struct ListRequest {
    base: Base,
    order: SortOrder,
    limit: u32,
}

impl ListRequest {
    /// Parses and authorizes the request (404 for another tenant's filter ids).
    async fn parse(
        state: &AnalyticsState,
        caller: &Caller,
        p: &RawParams,
        accepts: Accepts,
        default_order: SortOrder,
    ) -> Result<Self, ApiError> {
        let mut c = Checker::new();
        let base = Base::parse(&mut c, p, "1w", accepts);
        let order = c.sort_order(&p.sort_order, default_order);
        let limit = c.int("limit", &p.limit, 100, 1, 1000);
        c.finish()?;
        base.authorize(state, caller).await?;
        Ok(Self { base, order, limit })
    }

    /// `items` (the list and its `total_count`) with the echoed request and
    /// freshness fields, in the response envelope.
    fn answer(&self, items: Value) -> Json<Value> {
        let data = merge(
            items,
            json!({
                "window": self.base.res.window_str,
                "filters": self.base.echo(),
                "sort_order": self.order.as_str(),
                "limit": self.limit,
                "timestamp": ts(self.base.now),
            }),
        );
        envelope(merge(data, self.base.freshness(self.base.res.range)), self.base.now)
    }
}

/// Sorts groups by `count` in `order`, ties by key ascending.
fn sort_by_count(groups: &mut [GroupCount], count: impl Fn(&GroupCount) -> u64, order: SortOrder) {
    groups.sort_by(|a, b| {
        let c = count(a).cmp(&count(b));
        let c = if order == SortOrder::Desc { c.reverse() } else { c };
        c.then_with(|| a.key.cmp(&b.key))
    });
}

/// `GET /api/v1/analytics/servers`: calls per server name.
pub async fn servers(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let req = ListRequest::parse(&state, &caller, &p, Accepts::PN, SortOrder::Desc).await?;
    let mut groups = tool_calls::group_counts(&state.db, &req.base.scope(&caller, CallKinds::Tool), Dim::ServerName, false).await?;
    let total = groups.len();
    sort_by_count(&mut groups, |g| g.calls, req.order);
    let servers: Vec<Value> =
        groups.iter().take(req.limit as usize).map(|g| json!({ "server_name": g.key, "tool_count": g.calls })).collect();
    Ok(req.answer(json!({ "servers": servers, "total_count": total })))
}

/// The two maps of a top-N endpoint: by tool calls and by distinct
/// queries, each most first and cut to `limit` (queries: non-zero only).
async fn top(
    state: &AnalyticsState,
    caller: &Caller,
    p: &RawParams,
    accepts: Accepts,
    dim: Dim,
    names: (&str, &str, &str),
) -> Result<Json<Value>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, p, "1w", accepts);
    let limit = c.int("limit", &p.limit, 5, 1, 100);
    c.finish()?;
    base.authorize(state, caller).await?;
    let mut groups = tool_calls::group_counts(&state.db, &base.scope(caller, CallKinds::Tool), dim, true).await?;
    let (count_key, list_key, id_key) = names;
    let map = |groups: &[GroupCount], count: &dyn Fn(&GroupCount) -> u64| {
        let items: Vec<Value> = groups
            .iter()
            .filter(|g| count(g) > 0)
            .take(limit as usize)
            .map(|g| {
                let mut v = json!({ "count": count(g) });
                v[id_key] = json!(g.key);
                v
            })
            .collect();
        let mut m = json!({});
        m[count_key] = json!(items.len());
        m[list_key] = Value::Array(items);
        m
    };
    sort_by_count(&mut groups, |g| g.calls, SortOrder::Desc);
    let by_calls = map(&groups, &|g| g.calls);
    sort_by_count(&mut groups, |g| g.queries, SortOrder::Desc);
    let by_queries = map(&groups, &|g| g.queries);
    let data = json!({
        "tool_calls": by_calls,
        "queries_processed": by_queries,
        "window": base.res.window_str,
        "filters": base.echo(),
        "limit": limit,
    });
    Ok(envelope(merge(data, base.freshness(base.res.range)), base.now))
}

/// `GET /api/v1/analytics/top-servers` (by `server_id`).
pub async fn top_servers(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    top(&state, &caller, &p, Accepts::PN, Dim::ServerId, ("server_count", "servers", "server_id")).await
}

/// `GET /api/v1/analytics/top-projects` (by `project_id`, no filters).
pub async fn top_projects(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    top(&state, &caller, &p, Accepts::NONE, Dim::ProjectId, ("project_count", "projects", "project_id")).await
}

/// `GET /api/v1/analytics/top-navigators` (by navigator identity `navigator_id`).
pub async fn top_navigators(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    top(&state, &caller, &p, Accepts::P, Dim::NavigatorId, ("navigator_count", "navigators", "navigator_id")).await
}

/// `GET /api/v1/analytics/users`: tool calls per user e-mail (raw table:
/// the rollups carry no user). `total_count` counts all users.
pub async fn users(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Value>, ApiError> {
    let req = ListRequest::parse(&state, &caller, &p, Accepts::PN, SortOrder::Desc).await?;
    let rows = raw::users_by_email(&state.db, &req.base.scope(&caller, CallKinds::Tool), req.order.into(), req.limit).await?;
    let total = rows.first().map(|r| r.total).unwrap_or(0);
    let users: Vec<Value> = rows.iter().map(|r| json!({ "user_email": r.user_email, "tool_count": r.tool_count })).collect();
    Ok(req.answer(json!({ "users": users, "total_count": total })))
}
