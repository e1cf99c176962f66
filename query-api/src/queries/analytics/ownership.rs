//! Does a filter id belong to the caller's tenant? A cheap existence probe
//! on the rollups (any time within retention): an id that appears in no
//! event of the tenant is "not found", whether it exists elsewhere or not,
//! so the answer reveals nothing about other tenants.

use uuid::Uuid;

use crate::db::Db;
use crate::db::QueryError;
use crate::queries::conditions::Filters;
use crate::queries::sql::Sql;

/// Kinds of ids that can be filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Project,
    NavigatorInstance,
    ServerInstance,
    Tool,
}

impl IdKind {
    /// Human name used in the 404 message.
    pub fn label(self) -> &'static str {
        match self {
            IdKind::Project => "Project",
            IdKind::NavigatorInstance => "Navigator instance",
            IdKind::ServerInstance => "Server instance",
            IdKind::Tool => "Tool",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            IdKind::Project => {
                "SELECT toUInt8(count() > 0) FROM (
                   (SELECT 1 FROM tool_calls_1m WHERE tenant_id = {tenant:UUID} AND project_id = {id:UUID} LIMIT 1)
                   UNION ALL
                   (SELECT 1 FROM agent_executions_1m WHERE tenant_id = {tenant:UUID} AND project_id = {id:UUID} LIMIT 1))"
            }
            IdKind::NavigatorInstance => {
                "SELECT toUInt8(count() > 0) FROM (
                   (SELECT 1 FROM tool_calls_1m WHERE tenant_id = {tenant:UUID} AND navigator_instance_id = {id:UUID} LIMIT 1)
                   UNION ALL
                   (SELECT 1 FROM agent_executions_1m WHERE tenant_id = {tenant:UUID} AND navigator_instance_id = {id:UUID} LIMIT 1))"
            }
            IdKind::ServerInstance => {
                "SELECT toUInt8(count() > 0) FROM (SELECT 1 FROM tool_calls_1m WHERE tenant_id = {tenant:UUID} AND server_instance_id = {id:UUID} LIMIT 1)"
            }
            IdKind::Tool => "SELECT toUInt8(count() > 0) FROM (SELECT 1 FROM tool_calls_1m WHERE tenant_id = {tenant:UUID} AND tool_id = {id:UUID} LIMIT 1)",
        }
    }
}

/// Ok if `id` appears in the tenant's data, else 404 `{detail}`.
pub async fn require(db: &Db, tenant: Uuid, kind: IdKind, id: Uuid) -> Result<(), QueryError> {
    let not_found = || QueryError::NotFound(format!("{} {id} not found or does not belong to this tenant", kind.label()));
    if id.is_nil() {
        return Err(not_found());
    }
    let sql = Sql::new(kind.sql()).bind("tenant", tenant).bind("id", id);
    let found: u8 = db.run("ownership", |c| async move { sql.query(&c).fetch_one::<u8>().await }).await?;
    if found == 1 {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// Checks every supplied filter id.
pub async fn require_filters(db: &Db, tenant: Uuid, f: &Filters) -> Result<(), QueryError> {
    for (kind, id) in [
        (IdKind::Project, f.project_id),
        (IdKind::NavigatorInstance, f.navigator_instance_id),
        (IdKind::ServerInstance, f.server_instance_id),
        (IdKind::Tool, f.tool_id),
    ] {
        if let Some(id) = id {
            require(db, tenant, kind, id).await?;
        }
    }
    Ok(())
}
