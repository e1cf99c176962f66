//! The typed answers of the query-log endpoints, named and shaped as the
//! contract's schemas (`Page_QueryLogResponse_`, `GetQueryResponse`,
//! `GetQueryTrace` and their parts), so the OpenAPI document is generated
//! from them. Extra fields beyond the contract are documented in docs/api.md.

use serde::Serialize;
use utoipa::ToSchema;

/// One query of a project's query log.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueryLogResponse {
    #[schema(format = Uuid)]
    pub id: String,
    /// The query's text while it is kept, else `""`.
    pub query: String,
    /// `call_kind = 'tool'` calls.
    pub num_tool_calls: u64,
    /// Distinct server ids of the tool calls, first called first.
    pub servers_invoked: Vec<String>,
    /// One `null` per server (events carry no logos).
    pub server_logo_urls: Vec<Option<String>>,
    /// The query's first event.
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub num_errors: u64,
    #[schema(format = Uuid)]
    pub navigator_instance_id: String,
    pub navigator_name: String,
}

/// Metadata of a cursor page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageMeta {
    pub size: u64,
    pub total: u64,
    /// Opaque cursor of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub has_next: bool,
    pub has_prev: bool,
}

/// A page of query logs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Page_QueryLogResponse_)]
pub struct QueryLogPage {
    pub items: Vec<QueryLogResponse>,
    pub meta: PageMeta,
}

/// One query's details.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GetQueryResponse {
    #[schema(format = Uuid)]
    pub id: String,
    /// Always `null`: events carry no credential.
    pub token: Option<String>,
    pub query: String,
    #[schema(format = Uuid)]
    pub navigator_instance_id: String,
    #[schema(format = Uuid)]
    pub project_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceServerMetadata {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceTool {
    pub server: TraceServerMetadata,
    pub name: String,
}

/// One tool call of a trace group.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceToolCall {
    #[schema(format = Uuid)]
    pub server_instance_id: String,
    pub tool: TraceTool,
    /// Seconds.
    pub latency: Option<f64>,
    pub success: bool,
    pub error_message: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `tool` or `invoke_tools` (extra).
    pub call_kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceToolCallGroup {
    pub tool_calls: Vec<TraceToolCall>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A `get_tool_schemas` call.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceGetSchema {
    #[schema(format = Uuid)]
    pub id: String,
    pub tool: TraceTool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Seconds (extra).
    pub latency: f64,
    pub success: bool,
    pub error_message: Option<String>,
}

/// A `suggest_tools` call.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceSuggestTools {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Seconds (extra).
    pub latency: f64,
    pub success: bool,
    pub error_message: Option<String>,
    pub suggestions_count: u32,
}

/// One query's execution trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct GetQueryTrace {
    pub query: GetQueryResponse,
    pub tool_call_groups: Vec<TraceToolCallGroup>,
    pub tool_schemas: Vec<TraceGetSchema>,
    pub suggest_tools: Vec<TraceSuggestTools>,
}
