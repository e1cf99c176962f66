//! The `plans` and `plan_assignments` tables (migration 0009): append-only
//! logs of plan versions and of which plan each organization is on. As in
//! `plan_limits`, the latest row of a key wins (`LIMIT 1 BY` over `version
//! DESC`, `updated_at` breaking a tie), so readers never depend on merges.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::{Db, QueryError};

/// A row of `plans`. `templates` is the JSON array of the plan's limit
/// templates (the fields of a limit without its subject).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct PlanRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub plan_id: Uuid,
    pub version: u64,
    pub deleted: bool,
    pub name: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub is_free: bool,
    pub currency: String,
    pub features: Vec<String>,
    pub templates: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// A row of `plan_assignments`: organization `organization_id` is on plan
/// `plan_id` (the nil id: on no plan) from this version on.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct AssignmentRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub tenant_id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    pub version: u64,
    #[serde(with = "clickhouse::serde::uuid")]
    pub plan_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

const PLANS_SQL: &str = "SELECT ?fields FROM plans";
const PLANS_ORDER: &str = "ORDER BY tenant_id, plan_id, version DESC, updated_at DESC LIMIT 1 BY tenant_id, plan_id";
const ASSIGN_SQL: &str = "SELECT ?fields FROM plan_assignments";
const ASSIGN_ORDER: &str = "ORDER BY tenant_id, organization_id, version DESC, updated_at DESC LIMIT 1 BY tenant_id, organization_id";

/// Latest rows of every plan and every assignment of every tenant (for the
/// limits loop, on its own client).
pub async fn load_all(db: &clickhouse::Client) -> clickhouse::error::Result<(Vec<PlanRow>, Vec<AssignmentRow>)> {
    let plans = db.query(&format!("{PLANS_SQL} {PLANS_ORDER}")).fetch_all().await?;
    let assignments = db.query(&format!("{ASSIGN_SQL} {ASSIGN_ORDER}")).fetch_all().await?;
    Ok((plans, assignments))
}

/// Latest rows of every plan of one tenant, ordered by plan id.
pub async fn load_tenant(db: &Db, tenant: Uuid) -> Result<Vec<PlanRow>, QueryError> {
    let sql = format!("{PLANS_SQL} WHERE tenant_id = {{t:UUID}} {PLANS_ORDER}");
    db.run("plans_list", |c| async move { c.query(&sql).param("t", tenant.to_string()).fetch_all().await }).await
}

/// Latest row of one plan of one tenant.
pub async fn load_one(db: &Db, tenant: Uuid, plan_id: Uuid) -> Result<Option<PlanRow>, QueryError> {
    let sql = format!("{PLANS_SQL} WHERE tenant_id = {{t:UUID}} AND plan_id = {{p:UUID}} {PLANS_ORDER}");
    let rows: Vec<PlanRow> = db
        .run(
            "plans_read",
            |c| async move { c.query(&sql).param("t", tenant.to_string()).param("p", plan_id.to_string()).fetch_all().await },
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// Latest assignment row of one organization.
pub async fn load_assignment(db: &Db, tenant: Uuid, org: Uuid) -> Result<Option<AssignmentRow>, QueryError> {
    let sql = format!("{ASSIGN_SQL} WHERE tenant_id = {{t:UUID}} AND organization_id = {{o:UUID}} {ASSIGN_ORDER}");
    let rows: Vec<AssignmentRow> = db
        .run("plan_assignment_read", |c| async move {
            c.query(&sql).param("t", tenant.to_string()).param("o", org.to_string()).fetch_all().await
        })
        .await?;
    Ok(rows.into_iter().next())
}

/// Organizations currently on one plan, by organization id.
pub async fn load_plan_organizations(db: &Db, tenant: Uuid, plan_id: Uuid) -> Result<Vec<AssignmentRow>, QueryError> {
    let sql = format!(
        "SELECT * FROM ({ASSIGN_SQL} WHERE tenant_id = {{t:UUID}} {ASSIGN_ORDER}) WHERE plan_id = {{p:UUID}} ORDER BY organization_id"
    );
    db.run("plan_organizations", |c| async move {
        c.query(&sql).param("t", tenant.to_string()).param("p", plan_id.to_string()).fetch_all().await
    })
    .await
}

/// Appends one plan row.
pub async fn write_plan(db: &Db, row: &PlanRow) -> Result<(), QueryError> {
    db.run("plans_write", |c| async move {
        let mut insert = c.insert::<PlanRow>("plans").await?;
        insert.write(row).await?;
        insert.end().await
    })
    .await
}

/// Appends one assignment row.
pub async fn write_assignment(db: &Db, row: &AssignmentRow) -> Result<(), QueryError> {
    db.run("plan_assignment_write", |c| async move {
        let mut insert = c.insert::<AssignmentRow>("plan_assignments").await?;
        insert.write(row).await?;
        insert.end().await
    })
    .await
}
