//! The latest name of the ids an answer shows, from `dimension_names`
//! (migration 0008: one row per tenant, kind and id, the name of the latest
//! event by event time). A primary-key lookup of the listed ids only,
//! never a scan of the raw events; always within the caller's tenant, so
//! an id another tenant also uses shows this tenant's name.

use std::collections::HashMap;

use uuid::Uuid;

use crate::db::Db;
use crate::db::QueryError;
use crate::queries::sql::Sql;

/// What an id names (the `kind` column of `dimension_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    ServerInstance,
    Navigator,
    NavigatorInstance,
    Tool,
    Project,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::ServerInstance => "server_instance",
            Kind::Navigator => "navigator",
            Kind::NavigatorInstance => "navigator_instance",
            Kind::Tool => "tool",
            Kind::Project => "project",
        }
    }
}

/// Id (as text) to name, for the valid UUIDs among `ids`. An id without a
/// name (never named by an event of this tenant) is absent.
pub async fn latest(db: &Db, tenant: Uuid, kind: Kind, ids: &[String]) -> Result<HashMap<String, String>, QueryError> {
    let mut wanted: Vec<String> = ids.iter().filter(|s| Uuid::parse_str(s).is_ok_and(|u| !u.is_nil())).cloned().collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = Sql::new(
        // Aliases differ from the columns: ClickHouse would put an alias
        // equal to a column name into the WHERE clause.
        "SELECT toString(id) AS id_text, toString(argMaxMerge(name)) AS latest_name FROM dimension_names
         WHERE tenant_id = {tenant:UUID} AND kind = {kind:String} AND id IN {ids:Array(UUID)}
         GROUP BY id",
    )
    .bind("tenant", tenant)
    .bind("kind", kind.as_str())
    .bind_list("ids", wanted);
    let rows = db.run("dimension_names", |c| async move { sql.query(&c).fetch_all::<(String, String)>().await }).await?;
    Ok(rows.into_iter().filter(|(_, name)| !name.is_empty()).collect())
}
