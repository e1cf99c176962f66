//! The typed answers of the project-user endpoints, named and shaped as the
//! contract's schemas (`Page_UserSummary_`, `UserSummary`, `UserAuthDetails`,
//! `UserAuthServerItem`, `ServerAuthMethod`), so the OpenAPI document is
//! generated from them. Fields beyond the contract are marked "extra" and
//! documented in docs/api.md.

use serde::Serialize;
use utoipa::ToSchema;

use crate::query_logs::responses::PageMeta;

/// One user of a project's users table.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    /// The latest e-mail the user's events carried (`""` when none did).
    pub user_email: String,
    /// The end user's id (`user_token_id` of the events).
    #[schema(format = Uuid)]
    pub user_token_id: String,
    /// Always 0: events carry no server authentication.
    pub authenticated_servers_count: u64,
    /// Distinct server instances the project's tool calls reached (within retention).
    pub total_project_server_instances: u64,
    /// Always `[]`: events carry no logos.
    pub server_logos: Vec<Option<String>>,
    /// Always `null`: events carry no authentication.
    #[schema(format = DateTime)]
    pub last_authentication_at: Option<String>,
    /// Queries in the past 7 days: the user's `navigator_query`
    /// executions (zero-call queries included; tool calls whose query sent
    /// no execution are not queries).
    pub weekly_queries: u64,
    /// `tool` calls in the past 7 days.
    pub weekly_tool_calls: u64,
    /// The user's first event in the project (extra; the page order).
    #[schema(format = DateTime)]
    pub first_seen_at: String,
    /// The user's latest event in the project (extra).
    #[schema(format = DateTime)]
    pub last_seen_at: String,
}

/// A page of project users.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Page_UserSummary_)]
pub struct UsersPage {
    pub items: Vec<UserSummary>,
    pub meta: PageMeta,
}

/// How a user authenticated to a server (the contract's enum).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerAuthMethod {
    Header,
    Oauth,
    Path,
    None,
}

/// One server a user authenticated to (never produced: events carry no
/// authentication; kept so the document has the contract's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserAuthServerItem {
    #[schema(format = Uuid)]
    pub server_instance_id: String,
    pub server_name: String,
    pub logo_url: Option<String>,
    pub auth_method: ServerAuthMethod,
    #[schema(format = DateTime)]
    pub authenticated_at: String,
}

/// A server instance the user's tool calls reached (extra).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsedServerItem {
    #[schema(format = Uuid)]
    pub server_instance_id: String,
    #[schema(format = Uuid)]
    pub server_id: String,
    pub server_name: String,
    /// `tool` calls to it (proxy calls are not counted).
    pub tool_calls: u64,
    #[schema(format = DateTime)]
    pub first_used_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: String,
}

/// One user's details.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserAuthDetails {
    /// The latest e-mail the user's events carried (`""` when none did).
    pub user_email: String,
    /// Always `[]`: events carry no server authentication (see `servers_used`).
    pub servers: Vec<UserAuthServerItem>,
    /// Extra.
    #[schema(format = Uuid)]
    pub user_token_id: String,
    /// Extra: the first and latest event of the user in the project.
    #[schema(format = DateTime)]
    pub first_seen_at: String,
    #[schema(format = DateTime)]
    pub last_seen_at: String,
    /// Extra: queries (`navigator_query` executions) and `tool` calls in
    /// the past 7 days.
    pub weekly_queries: u64,
    pub weekly_tool_calls: u64,
    /// Extra: the server instances the user's tool calls reached, most
    /// recently used first.
    pub servers_used: Vec<UsedServerItem>,
}
