//! List and top-N endpoints: connections, tools, servers, top servers /
//! projects / navigators, users. Ids are shown with their latest names
//! (`*_name`, from `dimension_names`: [`names::latest`]).

use axum::extract::State;
use axum::Json;

use super::responses::{
    Connection, Envelope, ListEcho, NavigatorCount, ProjectCount, ServerCalls, ServerCount, ServerList, ToolList, Top, TopNavigatorList,
    TopProjectList, TopServerList, UserCalls, UserList,
};
use super::AnalyticsState;
use super::{envelope, ts, Base};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Accepts, Checker, Params, RawParams, SortOrder};
use crate::params::{LIST_LIMIT, TOP_LIMIT};
use crate::queries::analytics::names::{self, Kind};
use crate::queries::analytics::raw;
use crate::queries::analytics::tool_calls::{self, Dim, GroupCount};
use crate::queries::CallKinds;

/// `GET /api/v1/analytics/navigator-tool-connections`: one item per
/// (navigator instance, tool id) used in the window, most used first.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/navigator-tool-connections",
    extensions(("x-caylex-schema" = json!("NavigatorToolConnectionsResponse"))),
    tag = "Analytics",
    summary = "Navigator-tool connection matrix",
    params(crate::param_docs::Connections),
    responses((status = 200, description = "Navigator-tool connection matrix", body = Envelope<Vec<Connection>>))
)]
pub async fn navigator_tool_connections(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Vec<Connection>>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, &p, "24h", Accepts::PNS);
    c.finish()?;
    let rows = tool_calls::connections(&state.db, &base.scope(&caller, CallKinds::Tool)).await?;
    let nav_ids: Vec<String> = rows.iter().map(|r| r.navigator_instance_id.clone()).collect();
    let tool_ids: Vec<String> = rows.iter().map(|r| r.tool_id.clone()).collect();
    let (nav_names, tool_names) = tokio::try_join!(
        names::latest(&state.db, caller.tenant_id, Kind::NavigatorInstance, &nav_ids),
        names::latest(&state.db, caller.tenant_id, Kind::Tool, &tool_ids),
    )?;
    let items: Vec<Connection> = rows
        .into_iter()
        .map(|r| Connection {
            navigator_name: nav_names.get(&r.navigator_instance_id).cloned(),
            navigator_instance_id: r.navigator_instance_id,
            tool_name: tool_names.get(&r.tool_id).cloned(),
            tool_id: r.tool_id,
            connection_status: "active",
            last_used: chrono::DateTime::from_timestamp_millis(r.last_used_ms).map(ts),
            usage_count: r.usage_count,
            echo: base.echo_all(),
        })
        .collect();
    Ok(envelope(items, base.now))
}

/// `GET /api/v1/analytics/tools`: distinct tool names, sorted by name;
/// `total_count` counts all of them (before `limit`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/tools",
    extensions(("x-caylex-schema" = json!("ToolActivityResponse"))),
    tag = "Analytics",
    summary = "Distinct tool names",
    params(crate::param_docs::ToolsParams),
    responses((status = 200, description = "Distinct tool names", body = Envelope<ToolList>))
)]
pub async fn tools(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Envelope<ToolList>>, ApiError> {
    let req = ListRequest::parse(&p, Accepts::PNS, SortOrder::Asc)?;
    let mut groups = tool_calls::group_counts(&state.db, &req.base.scope(&caller, CallKinds::Tool), Dim::ToolName, false).await?;
    let total = groups.len();
    if req.order == SortOrder::Desc {
        groups.reverse();
    }
    let tools = groups.into_iter().take(req.limit as usize).map(|g| g.key).collect();
    Ok(envelope(ToolList { tools, list: req.echo(total as u64) }, req.base.now))
}

/// The parameters every sorted list shares (window and filters, sort
/// order, limit 1–1000 defaulting to 100) and the fields of its answer.
struct ListRequest {
    base: Base,
    order: SortOrder,
    limit: u32,
}

impl ListRequest {
    /// Parses the request.
    fn parse(p: &RawParams, accepts: Accepts, default_order: SortOrder) -> Result<Self, ApiError> {
        let mut c = Checker::new();
        let base = Base::parse(&mut c, p, "1w", accepts);
        let order = c.sort_order(&p.sort_order, default_order);
        let (default, min, max) = LIST_LIMIT;
        let limit = c.int("limit", &p.limit, default, min, max);
        c.finish()?;
        Ok(Self { base, order, limit })
    }

    /// `total_count` with the echoed request and freshness fields.
    fn echo(&self, total_count: u64) -> ListEcho {
        ListEcho {
            total_count,
            sort_order: self.order.as_str(),
            limit: self.limit,
            echo: self.base.echo_all(),
            freshness: self.base.freshness(self.base.res.range),
        }
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
#[utoipa::path(
    get,
    path = "/api/v1/analytics/servers",
    extensions(("x-caylex-schema" = json!("ServerActivityResponse"))),
    tag = "Analytics",
    summary = "Tool calls per server name",
    params(crate::param_docs::CountList),
    responses((status = 200, description = "Tool calls per server name", body = Envelope<ServerList>))
)]
pub async fn servers(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<ServerList>>, ApiError> {
    let req = ListRequest::parse(&p, Accepts::PN, SortOrder::Desc)?;
    let mut groups = tool_calls::group_counts(&state.db, &req.base.scope(&caller, CallKinds::Tool), Dim::ServerName, false).await?;
    let total = groups.len();
    sort_by_count(&mut groups, |g| g.calls, req.order);
    let servers = groups.into_iter().take(req.limit as usize).map(|g| ServerCalls { server_name: g.key, tool_count: g.calls }).collect();
    Ok(envelope(ServerList { servers, list: req.echo(total as u64) }, req.base.now))
}

/// An entry of a top-N list: the id, its latest name, the count.
type Entry = (String, Option<String>, u64);

/// The two lists of a top-N endpoint: by tool calls and by distinct
/// queries, each most first and cut to `limit` (non-zero counts only);
/// `list` shapes one of them from its entries, named from `dimension_names`.
async fn top<L: serde::Serialize>(
    state: &AnalyticsState,
    caller: &Caller,
    p: &RawParams,
    accepts: Accepts,
    (dim, kind): (Dim, Kind),
    list: fn(Vec<Entry>) -> L,
) -> Result<Json<Envelope<Top<L>>>, ApiError> {
    let mut c = Checker::new();
    let base = Base::parse(&mut c, p, "1w", accepts);
    let (default, min, max) = TOP_LIMIT;
    let limit = c.int("limit", &p.limit, default, min, max);
    c.finish()?;
    let mut groups = tool_calls::group_counts(&state.db, &base.scope(caller, CallKinds::Tool), dim, true).await?;
    let pick = |groups: &[GroupCount], count: &dyn Fn(&GroupCount) -> u64| -> Vec<(String, u64)> {
        groups.iter().filter(|g| count(g) > 0).take(limit as usize).map(|g| (g.key.clone(), count(g))).collect()
    };
    sort_by_count(&mut groups, |g| g.calls, SortOrder::Desc);
    let by_calls = pick(&groups, &|g| g.calls);
    sort_by_count(&mut groups, |g| g.queries, SortOrder::Desc);
    let by_queries = pick(&groups, &|g| g.queries);
    let ids: Vec<String> = by_calls.iter().chain(&by_queries).map(|(k, _)| k.clone()).collect();
    let found = names::latest(&state.db, caller.tenant_id, kind, &ids).await?;
    let named = |items: Vec<(String, u64)>| {
        list(
            items
                .into_iter()
                .map(|(k, n)| {
                    let name = found.get(&k).cloned();
                    (k, name, n)
                })
                .collect(),
        )
    };
    let data = Top {
        tool_calls: named(by_calls),
        queries_processed: named(by_queries),
        window: base.res.window_str.clone(),
        filters: base.echo(),
        limit,
        freshness: base.freshness(base.res.range),
    };
    Ok(envelope(data, base.now))
}

/// `GET /api/v1/analytics/top-servers` (by `server_id`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/top-servers",
    extensions(("x-caylex-schema" = json!("TopServersActivityResponse"))),
    tag = "Analytics",
    summary = "Top servers by tool calls and by queries",
    params(crate::param_docs::TopServersParams),
    responses((status = 200, description = "Top servers by tool calls and by queries", body = Envelope<Top<TopServerList>>))
)]
pub async fn top_servers(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Top<TopServerList>>>, ApiError> {
    top(&state, &caller, &p, Accepts::PN, (Dim::ServerId, Kind::Server), |items| TopServerList {
        server_count: items.len(),
        servers: items.into_iter().map(|(server_id, server_name, count)| ServerCount { server_id, server_name, count }).collect(),
    })
    .await
}

/// `GET /api/v1/analytics/top-projects` (by `project_id`, no filters).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/top-projects",
    extensions(("x-caylex-schema" = json!("TopProjectsActivityResponse"))),
    tag = "Analytics",
    summary = "Top projects by tool calls and by queries",
    params(crate::param_docs::TopProjectsParams),
    responses((status = 200, description = "Top projects by tool calls and by queries", body = Envelope<Top<TopProjectList>>))
)]
pub async fn top_projects(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Top<TopProjectList>>>, ApiError> {
    top(&state, &caller, &p, Accepts::NONE, (Dim::ProjectId, Kind::Project), |items| TopProjectList {
        project_count: items.len(),
        projects: items.into_iter().map(|(project_id, project_name, count)| ProjectCount { project_id, project_name, count }).collect(),
    })
    .await
}

/// `GET /api/v1/analytics/top-navigators` (by navigator identity `navigator_id`).
#[utoipa::path(
    get,
    path = "/api/v1/analytics/top-navigators",
    extensions(("x-caylex-schema" = json!("TopNavigatorsActivityResponse"))),
    tag = "Analytics",
    summary = "Top navigators (identity) by tool calls and by queries",
    params(crate::param_docs::TopNavigatorsParams),
    responses((status = 200, description = "Top navigators (identity) by tool calls and by queries", body = Envelope<Top<TopNavigatorList>>))
)]
pub async fn top_navigators(
    State(state): State<AnalyticsState>,
    caller: Caller,
    Params(p): Params,
) -> Result<Json<Envelope<Top<TopNavigatorList>>>, ApiError> {
    top(&state, &caller, &p, Accepts::P, (Dim::NavigatorId, Kind::Navigator), |items| TopNavigatorList {
        navigator_count: items.len(),
        navigators: items
            .into_iter()
            .map(|(navigator_id, navigator_name, count)| NavigatorCount { navigator_id, navigator_name, count })
            .collect(),
    })
    .await
}

/// `GET /api/v1/analytics/users`: tool calls per user e-mail (the per-user
/// rollup for the whole hours, the raw calls for the minutes at either
/// end). `total_count` counts all users.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/users",
    extensions(("x-caylex-schema" = json!("UsersActivityResponse"))),
    tag = "Analytics",
    summary = "Tool calls per user e-mail",
    params(crate::param_docs::CountList),
    responses((status = 200, description = "Tool calls per user e-mail", body = Envelope<UserList>))
)]
pub async fn users(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Envelope<UserList>>, ApiError> {
    let req = ListRequest::parse(&p, Accepts::PN, SortOrder::Desc)?;
    let rows = raw::users_by_email(&state.db, &req.base.scope(&caller, CallKinds::Tool), req.order.into(), req.limit).await?;
    let total = rows.first().map(|r| r.total).unwrap_or(0);
    let users = rows.into_iter().map(|r| UserCalls { user_email: r.user_email, tool_count: r.tool_count }).collect();
    Ok(envelope(UserList { users, list: req.echo(total) }, req.base.now))
}
