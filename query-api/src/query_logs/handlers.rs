//! The three handlers: parse and validate, call [`crate::queries::query_logs`],
//! shape the contract's answer (`Page_QueryLogResponse_`, `GetQueryResponse`,
//! `GetQueryTrace`; no envelope, as in the contract).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::cursor;
use super::responses::{GetQueryResponse, GetQueryTrace, PageMeta, QueryLogPage, QueryLogResponse};
use super::trace::{shape, ts_ms};
use crate::auth::Caller;
use crate::db::Db;
use crate::error::{ApiError, FieldError};
use crate::params::{path_uuid, Checker};
use crate::path::Path;
use crate::queries::query_logs::{self, LogFilter, Position, QuerySummary};

/// Query parameters of the list, unparsed (so a bad one is a 422 naming it).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Filter by navigator instance ID.
    #[param(value_type = Option<uuid::Uuid>)]
    pub navigator_instance_id: Option<String>,
    /// Queries with a tool call to this server instance.
    #[param(value_type = Option<uuid::Uuid>)]
    pub server_instance_id: Option<String>,
    /// Start timestamp (inclusive, RFC 3339 or epoch ms), on the query's first event.
    #[serde(rename = "timestamp__gte")]
    #[param(rename = "timestamp__gte", schema_with = crate::param_docs::query_logs_from)]
    pub timestamp_gte: Option<String>,
    /// End timestamp (inclusive, RFC 3339 or epoch ms), on the query's first event.
    #[serde(rename = "timestamp__lte")]
    #[param(rename = "timestamp__lte", schema_with = crate::param_docs::query_logs_to)]
    pub timestamp_lte: Option<String>,
    /// Items per page.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    pub size: Option<String>,
    /// Pagination cursor (`meta.next_cursor` of the previous page).
    pub cursor: Option<String>,
}

/// Extractor of [`ListParams`]; a malformed query string is a 422.
pub struct ListQuery(ListParams);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Query::<ListParams>::try_from_uri(&parts.uri) {
            Ok(Query(p)) => Ok(ListQuery(p)),
            Err(e) => Err(ApiError::invalid([FieldError::new(&["query"], e.body_text(), "query_parsing")])),
        }
    }
}

/// Default and bounds of `size`, as in the contract.
const SIZE_DEFAULT: u32 = 20;
const SIZE_MAX: u32 = 100;

fn nil_if_empty(id: &str) -> String {
    if id.is_empty() {
        Uuid::nil().to_string()
    } else {
        id.to_owned()
    }
}

fn log_item(q: &QuerySummary, text: Option<&String>) -> QueryLogResponse {
    QueryLogResponse {
        id: q.id.clone(),
        query: text.cloned().unwrap_or_default(),
        num_tool_calls: q.tool_calls,
        servers_invoked: q.servers.clone(),
        // The events carry no logo: one null per server, as the schema allows.
        server_logo_urls: vec![None; q.servers.len()],
        timestamp: ts_ms(q.first_ms),
        num_errors: q.errors,
        navigator_instance_id: nil_if_empty(&q.navigator_instance),
        navigator_name: q.navigator.clone(),
    }
}

fn query_response(q: &QuerySummary, text: Option<String>) -> GetQueryResponse {
    GetQueryResponse {
        id: q.id.clone(),
        // The events carry no credential.
        token: None,
        query: text.unwrap_or_default(),
        navigator_instance_id: nil_if_empty(&q.navigator_instance),
        project_id: Some(q.project.clone()).filter(|p| !p.is_empty()),
        created_at: ts_ms(q.first_ms),
        updated_at: ts_ms(q.last_ms),
    }
}

/// `GET /api/v1/projects/{project_id}/query-logs`.
#[utoipa::path(
    get,
    path = "/api/v1/projects/{project_id}/query-logs",
    extensions(("x-caylex-schema" = json!("Page_QueryLogResponse_"))),
    tag = "Query logs",
    summary = "Query logs of a project, newest first, in cursor pages",
    params(("project_id" = uuid::Uuid, Path, description = "Project of the caller's tenant (another tenant's answers an empty page)"), ListParams),
    responses((status = 200, description = "A page of query logs", body = QueryLogPage))
)]
pub async fn list(
    State(db): State<Db>,
    caller: Caller,
    Path(project): Path<String>,
    ListQuery(p): ListQuery,
) -> Result<Json<QueryLogPage>, ApiError> {
    let project = path_uuid("project_id", &project)?;
    let mut c = Checker::new();
    let navigator_instance = c.uuid("navigator_instance_id", &p.navigator_instance_id);
    let server_instance = c.uuid("server_instance_id", &p.server_instance_id);
    let gte = c.instant("timestamp__gte", &p.timestamp_gte);
    let lte = c.instant("timestamp__lte", &p.timestamp_lte);
    let size = c.int("size", &p.size, SIZE_DEFAULT, 1, SIZE_MAX) as usize;
    let after = match p.cursor.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => cursor::decode(s).map_err(|msg| c.push("cursor", msg)).ok(),
        None => None,
    };
    c.finish()?;
    let filter = LogFilter {
        tenant: caller.tenant_id,
        project,
        navigator_instance,
        server_instance,
        gte_ms: gte.map(|t| t.timestamp_millis()),
        lte_ms: lte.map(|t| t.timestamp_millis()),
    };
    // The page and then its texts, while the exact total counts every
    // query of the project (the costly part of a first page). The total
    // is counted once per listing: later pages reuse the count their
    // cursor carries.
    let page_with_texts = async {
        let mut items = query_logs::page(&db, &filter, after.map(|a| a.position), size).await?;
        let has_next = items.len() > size;
        items.truncate(size);
        let ids = items.iter().map(|q| q.id.clone()).collect();
        let texts: HashMap<String, String> = query_logs::texts(&db, caller.tenant_id, ids).await?.into_iter().collect();
        Ok::<_, crate::db::QueryError>((items, has_next, texts))
    };
    let ((items, has_next, texts), total) = match after.and_then(|a| a.total_for(&filter)) {
        Some(n) => (page_with_texts.await?, n),
        None => tokio::try_join!(page_with_texts, query_logs::total(&db, &filter))?,
    };
    let next_cursor = match items.last() {
        Some(last) if has_next => {
            let query_id = Uuid::parse_str(&last.id).map_err(|e| ApiError::Internal(format!("query id from ClickHouse: {e}")))?;
            Some(cursor::encode(Position { first_ms: last.first_ms, query_id }, total, &filter))
        }
        _ => None,
    };
    Ok(Json(QueryLogPage {
        items: items.iter().map(|q| log_item(q, texts.get(&q.id))).collect(),
        meta: PageMeta { size: size as u64, total, next_cursor, has_next, has_prev: after.is_some() },
    }))
}

fn not_found() -> ApiError {
    ApiError::NotFound("Query not found".into())
}

async fn find(db: &Db, caller: &Caller, query_id: &str) -> Result<(Uuid, GetQueryResponse), ApiError> {
    let id = path_uuid("query_id", query_id)?;
    let (q, texts) =
        tokio::try_join!(query_logs::query(db, caller.tenant_id, id), query_logs::texts(db, caller.tenant_id, vec![id.to_string()]))?;
    let q = q.ok_or_else(not_found)?;
    Ok((id, query_response(&q, texts.into_iter().next().map(|(_, t)| t))))
}

/// `GET /api/v1/queries/query-logs/{query_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/queries/query-logs/{query_id}",
    extensions(("x-caylex-schema" = json!("GetQueryResponse"))),
    tag = "Query logs",
    summary = "One query's details (404 when the caller's tenant has no event of it)",
    params(("query_id" = uuid::Uuid, Path, description = "The query (execution_id of its navigator_query, query_id of its tool calls)")),
    responses((status = 200, description = "The query", body = GetQueryResponse))
)]
pub async fn detail(State(db): State<Db>, caller: Caller, Path(query_id): Path<String>) -> Result<Json<GetQueryResponse>, ApiError> {
    Ok(Json(find(&db, &caller, &query_id).await?.1))
}

/// `GET /api/v1/queries/query-logs/{query_id}/trace`.
#[utoipa::path(
    get,
    path = "/api/v1/queries/query-logs/{query_id}/trace",
    extensions(("x-caylex-schema" = json!("GetQueryTrace"))),
    tag = "Query logs",
    summary = "One query's execution trace: tool-call groups in order, schemas fetched, suggestions",
    params(("query_id" = uuid::Uuid, Path, description = "The query (execution_id of its navigator_query, query_id of its tool calls)")),
    responses((status = 200, description = "The trace", body = GetQueryTrace))
)]
pub async fn trace(State(db): State<Db>, caller: Caller, Path(query_id): Path<String>) -> Result<Json<GetQueryTrace>, ApiError> {
    let (id, query) = find(&db, &caller, &query_id).await?;
    let events = query_logs::trace_events(&db, caller.tenant_id, id).await?;
    let (groups, schemas, suggestions) = shape(&events);
    Ok(Json(GetQueryTrace { query, tool_call_groups: groups, tool_schemas: schemas, suggest_tools: suggestions }))
}
