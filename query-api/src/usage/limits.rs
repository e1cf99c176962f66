//! Plan limits: the model, its validation, and its durable storage in the
//! ClickHouse table `plan_limits` (migration 0003).
//!
//! Every write appends a row with the next `version` of that limit; a delete
//! appends a row with `deleted = 1`. Readers take the row with the highest
//! version per limit (`argMax`), so they never depend on background merges.
//! Writes of one process are serialised by a mutex so versions are dense
//! and an expected version (`If-Match`) is checked without a race inside a
//! process; ClickHouse has no compare-and-set, so two API processes writing
//! the same limit at the same instant could both win (the higher `updated_at`
//! is then kept by readers as a tie-break).
//!
//! Amounts are exact: a limit's maximum is held as an integer in its metric's
//! unit (micro-dollars for `cost_usd`) and stored as `Decimal(38, 6)`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::counters::SubjectKey;
use super::period::{weekday_from_iso, PeriodSpec, MAX_ROLLING_HOURS};
use super::plans::{Plan, Template, TemplateView};
use crate::queries::limits::LimitRow;
use crate::queries::plans::{AssignmentRow, PlanRow};

/// What a limit counts. Only billable agent executions count, except
/// `tool_calls`, which counts every tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Tokens,
    InputTokens,
    OutputTokens,
    Messages,
    CostUsd,
    Executions,
    ToolCalls,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Tokens,
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::Messages,
        Metric::CostUsd,
        Metric::Executions,
        Metric::ToolCalls,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Tokens => "tokens",
            Metric::InputTokens => "input_tokens",
            Metric::OutputTokens => "output_tokens",
            Metric::Messages => "messages",
            Metric::CostUsd => "cost_usd",
            Metric::Executions => "executions",
            Metric::ToolCalls => "tool_calls",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Decimal places of the metric's amounts (6 for dollars, 0 for counts).
    pub fn scale(self) -> u32 {
        if self == Metric::CostUsd {
            6
        } else {
            0
        }
    }

    /// An amount in the metric's integer unit, or why not.
    pub fn units(self, d: Decimal) -> Result<i128, String> {
        let d = d.normalize();
        if d.scale() > self.scale() {
            return Err(if self.scale() == 0 {
                format!("{} is counted in whole units", self.as_str())
            } else {
                "cost_usd has at most 6 decimal places".to_owned()
            });
        }
        let mut d = d;
        d.rescale(self.scale());
        Ok(d.mantissa())
    }

    /// The decimal value of an amount in the metric's integer unit.
    pub fn decimal(self, units: i128) -> Decimal {
        Decimal::from_i128_with_scale(units, self.scale())
    }
}

/// Whom a limit applies to (always within the caller's tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Tenant,
    Organization { organization_id: Uuid },
    User { organization_id: Uuid, user_id: Uuid },
}

impl Subject {
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Tenant => "tenant",
            Subject::Organization { .. } => "organization",
            Subject::User { .. } => "user",
        }
    }

    pub fn key(&self, tenant: Uuid) -> SubjectKey {
        match *self {
            Subject::Tenant => SubjectKey::Tenant(tenant),
            Subject::Organization { organization_id } => SubjectKey::Organization(tenant, organization_id),
            Subject::User { organization_id, user_id } => SubjectKey::User(tenant, organization_id, user_id),
        }
    }

    /// Narrower subjects rank higher (user 2, organization 1, tenant 0).
    pub fn rank(&self) -> u8 {
        match self {
            Subject::Tenant => 0,
            Subject::Organization { .. } => 1,
            Subject::User { .. } => 2,
        }
    }
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub tenant_id: Uuid,
    pub limit_id: Uuid,
    pub version: u64,
    pub subject: Subject,
    pub metric: Metric,
    pub period: PeriodSpec,
    /// In the metric's unit (micro-dollars for cost).
    pub max_units: i128,
    pub soft_threshold: Option<f64>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// The plan this limit comes from (`None`: a limit of its own, written
    /// through `/v1/limits`).
    pub plan_id: Option<Uuid>,
}

impl Limit {
    /// What the limit counts, over which period, up to what (a plan's
    /// template holds the same).
    pub fn template(&self) -> Template {
        Template { metric: self.metric, period: self.period, max_units: self.max_units, soft_threshold: self.soft_threshold }
    }
}

/// One reason a limit definition was rejected (becomes a 422 item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub field: &'static str,
    pub msg: String,
    pub kind: &'static str,
}

fn issue(field: &'static str, kind: &'static str, msg: impl Into<String>) -> Issue {
    Issue { field, msg: msg.into(), kind }
}

/// The body of `PUT /v1/limits/{limit_id}` and `POST /v1/limits`, as
/// received; [`LimitInput::validate`] turns it into a [`Limit`].
///
/// The schema attributes describe the body for the OpenAPI document; the
/// fields stay loose (`Option<String>`) so that [`LimitInput::validate`]
/// can name every problem.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct LimitInput {
    /// Whom the limit applies to; `organization` needs `organization_id`,
    /// `user` both ids (not with metric `tool_calls`).
    #[schema(value_type = String, required = true, pattern = "^(tenant|organization|user)$")]
    pub subject: Option<String>,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub organization_id: Option<String>,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub user_id: Option<String>,
    /// What the limit counts, over which period, up to what: the fields a
    /// plan template has too.
    #[serde(flatten)]
    pub template: TemplateInput,
    /// The version the write expects (0: must not exist yet); `If-Match` wins.
    pub expected_version: Option<u64>,
}

/// One template in a plan's body, as received (the fields of a limit
/// without `subject`, `organization_id` and `user_id`); a limit's body
/// holds the same fields ([`LimitInput::template`]).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct TemplateInput {
    #[schema(value_type = String, required = true, pattern = "^(tokens|input_tokens|output_tokens|messages|cost_usd|executions|tool_calls)$")]
    pub metric: Option<String>,
    /// Calendar periods take `time_zone` (default UTC) and `anchor_day`
    /// (week: 1–7 from Monday, month: 1–28); `rolling_hours` takes
    /// `rolling_hours`.
    #[schema(value_type = String, required = true, pattern = "^(day|week|month|rolling_hours)$")]
    pub period: Option<String>,
    /// An IANA time zone name.
    pub time_zone: Option<String>,
    pub anchor_day: Option<i64>,
    #[schema(minimum = 1, maximum = 744)]
    pub rolling_hours: Option<i64>,
    /// A number or a decimal string, 0 ≤ value < 10^18; dollars for `cost_usd`.
    #[schema(schema_with = crate::usage::json::max_value_schema, required = true)]
    pub max_value: Option<serde_json::Value>,
    /// Fraction 0–1 of `max_value` at which `soft_limit_reached` turns true.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub soft_threshold: Option<f64>,
}

fn parse_id(field: &'static str, v: &Option<String>, issues: &mut Vec<Issue>) -> Option<Uuid> {
    match v.as_deref() {
        None => {
            issues.push(issue(field, "missing", "Field required"));
            None
        }
        Some(s) => match Uuid::parse_str(s) {
            Ok(id) if !id.is_nil() => Some(id),
            _ => {
                issues.push(issue(field, "uuid_parsing", "Input should be a valid, non-nil UUID"));
                None
            }
        },
    }
}

/// A JSON number or a decimal string as an exact decimal.
pub fn json_decimal(v: &serde_json::Value) -> Option<Decimal> {
    match v {
        // Without arbitrary precision a JSON number is parsed as f64; its
        // shortest text round-trips every decimal of up to 15 digits.
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(Decimal::from(i))
            } else {
                Decimal::from_str(&n.to_string()).or_else(|_| Decimal::from_scientific(&n.to_string())).ok()
            }
        }
        serde_json::Value::String(s) => Decimal::from_str(s.trim()).ok(),
        _ => None,
    }
}

impl LimitInput {
    /// Checks every field and reports every problem at once.
    pub fn validate(&self, tenant_id: Uuid, limit_id: Uuid, updated_by: &str) -> Result<Limit, Vec<Issue>> {
        let mut issues = Vec::new();
        let subject = match self.subject.as_deref() {
            None => {
                issues.push(issue("subject", "missing", "Field required"));
                None
            }
            Some("tenant") => {
                if self.organization_id.is_some() || self.user_id.is_some() {
                    issues.push(issue("subject", "value_error", "a tenant limit takes no organization_id or user_id"));
                }
                Some(Subject::Tenant)
            }
            Some("organization") => {
                if self.user_id.is_some() {
                    issues.push(issue("user_id", "value_error", "an organization limit takes no user_id"));
                }
                parse_id("organization_id", &self.organization_id, &mut issues)
                    .map(|organization_id| Subject::Organization { organization_id })
            }
            Some("user") => {
                let o = parse_id("organization_id", &self.organization_id, &mut issues);
                let u = parse_id("user_id", &self.user_id, &mut issues);
                match (o, u) {
                    (Some(organization_id), Some(user_id)) => Some(Subject::User { organization_id, user_id }),
                    _ => None,
                }
            }
            Some(_) => {
                issues.push(issue("subject", "enum", "Input should be 'tenant', 'organization' or 'user'"));
                None
            }
        };
        let metric = match self.template.metric.as_deref() {
            None => {
                issues.push(issue("metric", "missing", "Field required"));
                None
            }
            Some(s) => match Metric::parse(s) {
                Some(m) => Some(m),
                None => {
                    issues.push(issue(
                        "metric",
                        "enum",
                        "Input should be one of tokens, input_tokens, output_tokens, messages, cost_usd, executions, tool_calls",
                    ));
                    None
                }
            },
        };
        if metric == Some(Metric::ToolCalls) && self.subject.as_deref() == Some("user") {
            issues.push(issue(
                "subject",
                "value_error",
                "tool_calls can be limited per organization or tenant only: tool-call events carry no user",
            ));
        }
        let period = self.template.period(&mut issues);
        let max_units = match (&self.template.max_value, metric) {
            (None, _) => {
                issues.push(issue("max_value", "missing", "Field required"));
                None
            }
            (Some(v), m) => match json_decimal(v) {
                None => {
                    issues.push(issue("max_value", "decimal_parsing", "Input should be a number or a decimal string"));
                    None
                }
                Some(d) if d.is_sign_negative() => {
                    issues.push(issue("max_value", "greater_than_equal", "Input should be greater than or equal to 0"));
                    None
                }
                Some(d) if d >= Decimal::from(10u64.pow(18)) => {
                    issues.push(issue("max_value", "less_than", "Input should be less than 10^18"));
                    None
                }
                Some(d) => match m.map(|m| m.units(d)) {
                    Some(Ok(u)) => Some(u),
                    Some(Err(msg)) => {
                        issues.push(issue("max_value", "value_error", msg));
                        None
                    }
                    None => None,
                },
            },
        };
        if let Some(t) = self.template.soft_threshold {
            if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
                issues.push(issue("soft_threshold", "value_error", "Input should be a fraction between 0 and 1"));
            }
        }
        match (subject, metric, period, max_units) {
            (Some(subject), Some(metric), Some(period), Some(max_units)) if issues.is_empty() => Ok(Limit {
                tenant_id,
                limit_id,
                version: 0,
                subject,
                metric,
                period,
                max_units,
                soft_threshold: self.template.soft_threshold,
                updated_at: Utc::now(),
                updated_by: updated_by.to_owned(),
                plan_id: None,
            }),
            _ => Err(issues),
        }
    }
}

impl TemplateInput {
    /// The period the fields describe; each problem goes to `issues`.
    fn period(&self, issues: &mut Vec<Issue>) -> Option<PeriodSpec> {
        let kind = match self.period.as_deref() {
            None => {
                issues.push(issue("period", "missing", "Field required"));
                return None;
            }
            Some(k) => k,
        };
        if kind == "rolling_hours" {
            if self.time_zone.is_some() || self.anchor_day.is_some() {
                issues.push(issue("period", "value_error", "a rolling period takes no time_zone or anchor_day"));
            }
            return match self.rolling_hours {
                None => {
                    issues.push(issue("rolling_hours", "missing", "Field required for period 'rolling_hours'"));
                    None
                }
                Some(h) if h >= 1 && h <= i64::from(MAX_ROLLING_HOURS) => Some(PeriodSpec::Rolling { hours: h as u32 }),
                Some(_) => {
                    issues.push(issue("rolling_hours", "value_error", format!("Input should be between 1 and {MAX_ROLLING_HOURS}")));
                    None
                }
            };
        }
        if self.rolling_hours.is_some() {
            issues.push(issue("rolling_hours", "value_error", "rolling_hours is only for period 'rolling_hours'"));
        }
        let tz = match self.time_zone.as_deref().unwrap_or("UTC").parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                issues.push(issue("time_zone", "value_error", "Input should be an IANA time zone name such as Europe/Berlin"));
                None
            }
        };
        match kind {
            "day" => {
                if self.anchor_day.is_some() {
                    issues.push(issue("anchor_day", "value_error", "a day period takes no anchor_day"));
                }
                tz.map(|tz| PeriodSpec::Day { tz })
            }
            "week" => {
                let a = self.anchor_day.unwrap_or(1);
                match u32::try_from(a).ok().and_then(weekday_from_iso) {
                    Some(anchor) => tz.map(|tz| PeriodSpec::Week { tz, anchor }),
                    None => {
                        issues.push(issue("anchor_day", "value_error", "week anchor is an ISO weekday, 1 (Monday) to 7 (Sunday)"));
                        None
                    }
                }
            }
            "month" => {
                let a = self.anchor_day.unwrap_or(1);
                if (1..=28).contains(&a) {
                    tz.map(|tz| PeriodSpec::Month { tz, anchor_day: a as u32 })
                } else {
                    issues.push(issue("anchor_day", "value_error", "month anchor is a day of month, 1 to 28"));
                    None
                }
            }
            _ => {
                issues.push(issue("period", "enum", "Input should be 'day', 'week', 'month' or 'rolling_hours'"));
                None
            }
        }
    }
}

/// The JSON view of a limit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LimitView {
    pub limit_id: Uuid,
    pub version: u64,
    pub subject: &'static str,
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// What the limit counts, over which period, up to what: the fields a
    /// plan template shows too.
    #[serde(flatten)]
    pub template: TemplateView,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// The plan the limit comes from (its organization is on that plan);
    /// `null`: a limit of its own.
    pub plan_id: Option<Uuid>,
}

impl From<&Limit> for LimitView {
    fn from(l: &Limit) -> Self {
        let (organization_id, user_id) = match l.subject {
            Subject::Tenant => (None, None),
            Subject::Organization { organization_id } => (Some(organization_id), None),
            Subject::User { organization_id, user_id } => (Some(organization_id), Some(user_id)),
        };
        LimitView {
            limit_id: l.limit_id,
            version: l.version,
            subject: l.subject.kind(),
            organization_id,
            user_id,
            template: TemplateView::from(&l.template()),
            updated_at: l.updated_at,
            updated_by: l.updated_by.clone(),
            plan_id: l.plan_id,
        }
    }
}

pub(crate) fn period_fields(p: &PeriodSpec) -> (&'static str, Option<Tz>, Option<u32>, Option<u32>) {
    match *p {
        PeriodSpec::Day { tz } => ("day", Some(tz), None, None),
        PeriodSpec::Week { tz, anchor } => ("week", Some(tz), Some(anchor.number_from_monday()), None),
        PeriodSpec::Month { tz, anchor_day } => ("month", Some(tz), Some(anchor_day), None),
        PeriodSpec::Rolling { hours } => ("rolling_hours", None, None, Some(hours)),
    }
}

const MICROS: i128 = 1_000_000;

impl LimitRow {
    pub fn from_limit(l: &Limit, deleted: bool) -> LimitRow {
        let (organization_id, user_id) = match l.subject {
            Subject::Tenant => (Uuid::nil(), Uuid::nil()),
            Subject::Organization { organization_id } => (organization_id, Uuid::nil()),
            Subject::User { organization_id, user_id } => (organization_id, user_id),
        };
        let (period, tz, anchor, hours) = period_fields(&l.period);
        LimitRow {
            tenant_id: l.tenant_id,
            limit_id: l.limit_id,
            version: l.version,
            deleted,
            subject_kind: l.subject.kind().to_owned(),
            organization_id,
            user_id,
            metric: l.metric.as_str().to_owned(),
            period_kind: period.to_owned(),
            period_tz: tz.map(|t| t.name().to_owned()).unwrap_or_default(),
            anchor_day: anchor.unwrap_or(0) as u8,
            rolling_hours: hours.unwrap_or(0),
            max_value: if l.metric.scale() == 6 { l.max_units } else { l.max_units * MICROS },
            soft_threshold: l.soft_threshold,
            updated_at: l.updated_at,
            updated_by: l.updated_by.clone(),
        }
    }

    /// The limit a stored row describes (`None` for a tombstone or a row
    /// this version of the code cannot read).
    pub fn to_limit(&self) -> Option<Limit> {
        if self.deleted {
            return None;
        }
        let metric = Metric::parse(&self.metric)?;
        let subject = match self.subject_kind.as_str() {
            "tenant" => Subject::Tenant,
            "organization" => Subject::Organization { organization_id: self.organization_id },
            "user" => Subject::User { organization_id: self.organization_id, user_id: self.user_id },
            _ => return None,
        };
        let tz = || self.period_tz.parse::<Tz>().ok();
        let period = match self.period_kind.as_str() {
            "day" => PeriodSpec::Day { tz: tz()? },
            "week" => PeriodSpec::Week { tz: tz()?, anchor: weekday_from_iso(u32::from(self.anchor_day))? },
            "month" => PeriodSpec::Month { tz: tz()?, anchor_day: u32::from(self.anchor_day) },
            "rolling_hours" => PeriodSpec::Rolling { hours: self.rolling_hours },
            _ => return None,
        };
        Some(Limit {
            tenant_id: self.tenant_id,
            limit_id: self.limit_id,
            version: self.version,
            subject,
            metric,
            period,
            max_units: if metric.scale() == 6 { self.max_value } else { self.max_value / MICROS },
            soft_threshold: self.soft_threshold,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
            plan_id: None,
        })
    }
}

/// The current limits of every tenant, in memory, for the check path: the
/// limits of their own, and the plans with the organizations on them (whose
/// limits are derived from the plan's templates when asked for).
#[derive(Debug, Default)]
pub struct LimitSet {
    by_tenant: HashMap<Uuid, Vec<Limit>>,
    /// `(tenant, plan_id)` → plan.
    plans: HashMap<(Uuid, Uuid), Arc<Plan>>,
    /// `(tenant, organization_id)` → the plan the organization is on.
    assignments: HashMap<(Uuid, Uuid), Uuid>,
}

impl LimitSet {
    pub fn from_rows(rows: &[LimitRow]) -> LimitSet {
        let mut s = LimitSet::default();
        for r in rows {
            if let Some(l) = r.to_limit() {
                s.by_tenant.entry(l.tenant_id).or_default().push(l);
            }
        }
        for v in s.by_tenant.values_mut() {
            v.sort_by_key(|l| l.limit_id);
        }
        s
    }

    /// Adds the plans and the assignments (nil plan id: on no plan).
    pub fn with_plans(mut self, plans: &[PlanRow], assignments: &[AssignmentRow]) -> LimitSet {
        for p in plans.iter().filter_map(Plan::from_row) {
            self.plans.insert((p.tenant_id, p.plan_id), Arc::new(p));
        }
        for a in assignments.iter().filter(|a| !a.plan_id.is_nil()) {
            self.assignments.insert((a.tenant_id, a.organization_id), a.plan_id);
        }
        self
    }

    /// Replaces (or removes, with `None`) one limit.
    pub fn upsert(&mut self, tenant: Uuid, limit_id: Uuid, limit: Option<Limit>) {
        let v = self.by_tenant.entry(tenant).or_default();
        v.retain(|l| l.limit_id != limit_id);
        if let Some(l) = limit {
            v.push(l);
            v.sort_by_key(|l| l.limit_id);
        }
    }

    /// Replaces one plan (every organization on it follows).
    pub fn upsert_plan(&mut self, plan: Plan) {
        self.plans.insert((plan.tenant_id, plan.plan_id), Arc::new(plan));
    }

    /// Puts an organization on a plan (`None`: on no plan).
    pub fn assign(&mut self, tenant: Uuid, org: Uuid, plan_id: Option<Uuid>) {
        match plan_id {
            Some(p) => self.assignments.insert((tenant, org), p),
            None => self.assignments.remove(&(tenant, org)),
        };
    }

    /// The plan an organization is on, if any.
    pub fn plan_of(&self, tenant: Uuid, org: Uuid) -> Option<Arc<Plan>> {
        let plan_id = self.assignments.get(&(tenant, org))?;
        self.plans.get(&(tenant, *plan_id)).cloned()
    }

    /// The limits of a tenant's own (not those derived from plans).
    pub fn tenant(&self, tenant: Uuid) -> &[Limit] {
        self.by_tenant.get(&tenant).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Limits on `metric` that apply to a call by `user` in `org`: the
    /// tenant's, the organization's (its own and its plan's) and the user's.
    pub fn applicable(&self, tenant: Uuid, metric: Metric, org: Option<Uuid>, user: Option<Uuid>) -> Vec<Limit> {
        let mut out: Vec<Limit> = self
            .tenant(tenant)
            .iter()
            .filter(|l| l.metric == metric)
            .filter(|l| match l.subject {
                Subject::Tenant => true,
                Subject::Organization { organization_id } => Some(organization_id) == org,
                Subject::User { organization_id, user_id } => Some(organization_id) == org && Some(user_id) == user,
            })
            .cloned()
            .collect();
        if let Some(org) = org {
            if let Some(plan) = self.plan_of(tenant, org) {
                out.extend(plan.limits_for(org, metric));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> LimitInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn valid_limits_round_trip_through_rows() {
        let t = Uuid::new_v4();
        let org = Uuid::new_v4().to_string();
        let i = input(serde_json::json!({"subject":"organization","organization_id":org,"metric":"cost_usd",
            "period":"month","time_zone":"Europe/Berlin","anchor_day":5,"max_value":"12.5","soft_threshold":0.8}));
        let mut l = i.validate(t, Uuid::new_v4(), "k").unwrap();
        l.version = 3;
        assert_eq!(l.max_units, 12_500_000);
        let row = LimitRow::from_limit(&l, false);
        assert_eq!(row.max_value, 12_500_000);
        let back = row.to_limit().unwrap();
        assert_eq!(back.period, l.period);
        assert_eq!(back.max_units, l.max_units);
        assert_eq!(LimitView::from(&back).template.max_value, "12.500000");

        let i =
            input(serde_json::json!({"subject":"tenant","metric":"tokens","period":"rolling_hours","rolling_hours":5,"max_value":1000}));
        let l = i.validate(t, Uuid::new_v4(), "k").unwrap();
        assert_eq!(LimitRow::from_limit(&l, false).max_value, 1_000_000_000);
        assert_eq!(LimitRow::from_limit(&l, false).to_limit().unwrap().max_units, 1000);
    }

    /// The template fields sit in a limit's body as they sit in a plan's
    /// template (flattened): read alike, and a field of the wrong type is
    /// refused as it would be at the top level.
    #[test]
    fn a_limit_body_holds_the_template_fields() {
        let body = serde_json::json!({"subject":"tenant","metric":"tokens","period":"week","time_zone":"Asia/Tokyo",
            "anchor_day":3,"max_value":"12.5","soft_threshold":0.5,"expected_version":2});
        let limit = input(body.clone());
        let template: TemplateInput = serde_json::from_value(body).unwrap();
        assert_eq!(format!("{:?}", limit.template), format!("{template:?}"));
        assert_eq!((limit.subject.as_deref(), limit.expected_version), (Some("tenant"), Some(2)));
        for bad in [serde_json::json!({"anchor_day": "3"}), serde_json::json!({"soft_threshold": "x"}), serde_json::json!({"metric": 1})] {
            assert!(serde_json::from_value::<LimitInput>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let i = input(serde_json::json!({"subject":"user","organization_id":"nope","metric":"tool_calls",
            "period":"month","anchor_day":29,"time_zone":"Mars/Base","max_value":1.5,"soft_threshold":2.0}));
        let fields: Vec<&str> = i.validate(Uuid::new_v4(), Uuid::new_v4(), "k").unwrap_err().iter().map(|i| i.field).collect();
        for f in ["organization_id", "user_id", "time_zone", "anchor_day", "max_value", "soft_threshold"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }
}
