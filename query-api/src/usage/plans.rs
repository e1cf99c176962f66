//! Plans: a named set of limit templates (SEED_SPEC §2.3), assigned to
//! organizations. The model, its validation and its rows (`plans`,
//! `plan_assignments`, migration 0009).
//!
//! A template is a limit without a subject (metric, period, maximum, soft
//! threshold). An organization on a plan has one organization limit per
//! template, derived when the limits are loaded, never stored on their own:
//! a plan change is one row, and every organization on the plan moves to
//! its new limits in that one step; an assignment is one row too. A derived
//! limit's id is a hash of plan, organization, metric and period (the same
//! id across plan versions, so it reads like a limit whose version rose),
//! and its version is the plan's.
//!
//! A plan holds at most one template per metric and period kind (and
//! rolling length). The contract's `max_messages_per_month`,
//! `max_cost_usd_per_month` and `max_tokens_per_month` are shortcuts for
//! monthly templates (UTC, anchored on the 1st); on the way out they show
//! the plan's monthly template of that metric, whatever its time zone.
//! Price and Stripe fields are not stored: billing is not this service's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::json::Amount;
use super::limits::{json_decimal, period_fields, Limit, LimitInput, Metric, Subject, TemplateInput};
use super::period::PeriodSpec;
use crate::error::FieldError;
use crate::queries::plans::PlanRow;

/// Longest plan name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Most features (display strings) of a plan.
pub const MAX_FEATURES: usize = 100;
/// Most templates of a plan.
pub const MAX_TEMPLATES: usize = 64;

/// One limit of a plan, without its subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub metric: Metric,
    pub period: PeriodSpec,
    /// In the metric's unit (micro-dollars for cost).
    pub max_units: i128,
    pub soft_threshold: Option<f64>,
}

impl Template {
    /// What makes two templates of a plan the same limit.
    fn identity(&self) -> (Metric, &'static str, Option<u32>) {
        let (kind, _, _, hours) = period_fields(&self.period);
        (self.metric, kind, hours)
    }
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tenant_id: Uuid,
    pub plan_id: Uuid,
    pub version: u64,
    pub name: String,
    pub description: Option<String>,
    pub is_active: bool,
    pub is_free: bool,
    pub currency: String,
    pub features: Vec<String>,
    pub templates: Vec<Template>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// The id of the limit `template` of `plan` puts on `org`.
fn derived_limit_id(plan_id: Uuid, org: Uuid, t: &Template) -> Uuid {
    let (metric, kind, hours) = t.identity();
    let mut h = Sha256::new();
    h.update(plan_id.as_bytes());
    h.update(org.as_bytes());
    h.update(metric.as_str().as_bytes());
    h.update([0u8]);
    h.update(kind.as_bytes());
    h.update(hours.unwrap_or(0).to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl Plan {
    /// The organization limits of `org` on this plan, for `metric`.
    pub fn limits_for(&self, org: Uuid, metric: Metric) -> impl Iterator<Item = Limit> + '_ {
        self.templates.iter().filter(move |t| t.metric == metric).map(move |t| Limit {
            tenant_id: self.tenant_id,
            limit_id: derived_limit_id(self.plan_id, org, t),
            version: self.version,
            subject: Subject::Organization { organization_id: org },
            metric: t.metric,
            period: t.period,
            max_units: t.max_units,
            soft_threshold: t.soft_threshold,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
            plan_id: Some(self.plan_id),
        })
    }

    /// The maximum of the plan's monthly template of `metric`, if any.
    fn monthly(&self, metric: Metric) -> Option<Amount> {
        self.templates
            .iter()
            .find(|t| t.metric == metric && matches!(t.period, PeriodSpec::Month { .. }))
            .map(|t| Amount::of(metric, t.max_units))
    }

    pub fn to_row(&self) -> PlanRow {
        let templates: Vec<TemplateView> = self.templates.iter().map(TemplateView::from).collect();
        PlanRow {
            tenant_id: self.tenant_id,
            plan_id: self.plan_id,
            version: self.version,
            deleted: false,
            name: self.name.clone(),
            description: self.description.clone(),
            is_active: self.is_active,
            is_free: self.is_free,
            currency: self.currency.clone(),
            features: self.features.clone(),
            templates: serde_json::to_string(&templates).expect("templates serialize"),
            created_at: self.created_at,
            updated_at: self.updated_at,
            updated_by: self.updated_by.clone(),
        }
    }

    /// The plan a stored row describes (`None` for a deleted row or one
    /// this version of the code cannot read).
    pub fn from_row(row: &PlanRow) -> Option<Plan> {
        if row.deleted {
            return None;
        }
        let inputs: Vec<TemplateInput> = serde_json::from_str(&row.templates).ok()?;
        let templates = inputs.iter().map(|t| t.validate().ok()).collect::<Option<Vec<_>>>()?;
        Some(Plan {
            tenant_id: row.tenant_id,
            plan_id: row.plan_id,
            version: row.version,
            name: row.name.clone(),
            description: row.description.clone(),
            is_active: row.is_active,
            is_free: row.is_free,
            currency: row.currency.clone(),
            features: row.features.clone(),
            templates,
            created_at: row.created_at,
            updated_at: row.updated_at,
            updated_by: row.updated_by.clone(),
        })
    }
}

/// Any organization id: templates are validated as organization limits.
const PLACEHOLDER_ORG: Uuid = Uuid::from_u128(1);

impl TemplateInput {
    /// The template, or each problem as `(field, msg, kind)`.
    fn validate(&self) -> Result<Template, Vec<super::limits::Issue>> {
        let as_limit = LimitInput {
            subject: Some("organization".into()),
            organization_id: Some(PLACEHOLDER_ORG.to_string()),
            template: self.clone(),
            ..LimitInput::default()
        };
        Ok(as_limit.validate(Uuid::nil(), Uuid::nil(), "")?.template())
    }
}

/// A template as answered (and as stored in `plans.templates`); a limit's
/// view holds the same fields ([`super::limits::LimitView::template`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    pub metric: &'static str,
    pub period: &'static str,
    pub time_zone: Option<String>,
    pub anchor_day: Option<u32>,
    pub rolling_hours: Option<u32>,
    /// Exact decimal as a string ("1000", "12.500000").
    pub max_value: String,
    pub soft_threshold: Option<f64>,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        let (period, tz, anchor_day, rolling_hours) = period_fields(&t.period);
        TemplateView {
            metric: t.metric.as_str(),
            period,
            time_zone: tz.map(|z| z.name().to_owned()),
            anchor_day,
            rolling_hours,
            max_value: t.metric.decimal(t.max_units).to_string(),
            soft_threshold: t.soft_threshold,
        }
    }
}

/// The body of `POST /v1/plans` and `PUT /v1/plans/{plan_id}`: the whole
/// plan (a `PUT` replaces every field). Price and Stripe fields of the
/// contract are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PlanInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Default `true`. An inactive plan is not listed unless asked for and
    /// cannot be newly assigned; organizations already on it keep it.
    pub is_active: Option<bool>,
    /// Default `false`.
    pub is_free: Option<bool>,
    /// ISO 4217 code, default `USD`.
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Display strings, at most 100.
    pub features: Option<Vec<String>>,
    /// Shortcut for a `messages` template per calendar month (UTC, from the
    /// 1st); `null` or absent: none.
    #[schema(schema_with = crate::usage::json::max_value_schema, nullable)]
    pub max_messages_per_month: Option<serde_json::Value>,
    /// Shortcut for a `cost_usd` template per calendar month (dollars).
    #[schema(schema_with = crate::usage::json::max_value_schema, nullable)]
    pub max_cost_usd_per_month: Option<serde_json::Value>,
    /// Shortcut for a `tokens` template per calendar month.
    #[schema(schema_with = crate::usage::json::max_value_schema, nullable)]
    pub max_tokens_per_month: Option<serde_json::Value>,
    /// Any other templates (any metric and period a limit supports).
    pub limits: Option<Vec<TemplateInput>>,
    /// The version the write expects (0: must not exist yet); `If-Match` wins.
    pub expected_version: Option<u64>,
}

fn err(loc: &[&str], msg: impl Into<String>, kind: &str) -> FieldError {
    FieldError::new(loc, msg, kind)
}

impl PlanInput {
    /// Checks every field and reports every problem at once. The version
    /// and `created_at` are the caller's to set.
    pub fn validate(&self, tenant_id: Uuid, plan_id: Uuid, updated_by: &str) -> Result<Plan, Vec<FieldError>> {
        let mut errs = Vec::new();
        let name = match self.name.as_deref().map(str::trim) {
            None => {
                errs.push(err(&["body", "name"], "Field required", "missing"));
                String::new()
            }
            Some(n) if n.is_empty() || n.chars().count() > MAX_NAME_CHARS => {
                errs.push(err(&["body", "name"], format!("Input should have 1 to {MAX_NAME_CHARS} characters"), "string_too_long"));
                String::new()
            }
            Some(n) => n.to_owned(),
        };
        if self.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
            errs.push(err(&["body", "description"], format!("At most {MAX_DESCRIPTION_CHARS} characters"), "string_too_long"));
        }
        let currency = self.currency.as_deref().unwrap_or("USD").trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errs.push(err(&["body", "currency"], "Input should be an ISO 4217 code such as USD", "value_error"));
        }
        let features = self.features.clone().unwrap_or_default();
        if features.len() > MAX_FEATURES || features.iter().any(|f| f.chars().count() > MAX_NAME_CHARS) {
            errs.push(err(
                &["body", "features"],
                format!("At most {MAX_FEATURES} features of at most {MAX_NAME_CHARS} characters"),
                "too_long",
            ));
        }
        let mut templates: Vec<Template> = Vec::new();
        let shortcuts = [
            ("max_messages_per_month", Metric::Messages, &self.max_messages_per_month),
            ("max_cost_usd_per_month", Metric::CostUsd, &self.max_cost_usd_per_month),
            ("max_tokens_per_month", Metric::Tokens, &self.max_tokens_per_month),
        ];
        for (field, metric, value) in shortcuts {
            let Some(v) = value.as_ref().filter(|v| !v.is_null()) else { continue };
            if json_decimal(v).is_none() {
                errs.push(err(&["body", field], "Input should be a number, a decimal string or null", "decimal_parsing"));
                continue;
            }
            let t = TemplateInput {
                metric: Some(metric.as_str().into()),
                period: Some("month".into()),
                max_value: Some(v.clone()),
                ..TemplateInput::default()
            };
            match t.validate() {
                Ok(t) => templates.push(t),
                Err(issues) => errs.extend(issues.into_iter().map(|i| err(&["body", field], i.msg, i.kind))),
            }
        }
        let listed = self.limits.as_deref().unwrap_or_default();
        if listed.len() > MAX_TEMPLATES {
            errs.push(err(&["body", "limits"], format!("At most {MAX_TEMPLATES} templates"), "too_long"));
        }
        for (i, t) in listed.iter().enumerate() {
            let index = i.to_string();
            match t.validate() {
                Ok(t) => {
                    if templates.iter().any(|o| o.identity() == t.identity()) {
                        errs.push(err(
                            &["body", "limits", &index],
                            format!("The plan already has a {} limit per {}", t.metric.as_str(), period_fields(&t.period).0),
                            "value_error",
                        ));
                    } else {
                        templates.push(t);
                    }
                }
                Err(issues) => errs.extend(issues.into_iter().map(|is| err(&["body", "limits", &index, is.field], is.msg, is.kind))),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let now = Utc::now();
        Ok(Plan {
            tenant_id,
            plan_id,
            version: 0,
            name,
            description: self.description.clone(),
            is_active: self.is_active.unwrap_or(true),
            is_free: self.is_free.unwrap_or(false),
            currency,
            features,
            templates,
            created_at: now,
            updated_at: now,
            updated_by: updated_by.to_owned(),
        })
    }
}

/// A plan as answered: the contract's `PlanResponse` (§2.3; price and
/// Stripe fields always `null`), plus its version and templates.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// Always `null`: billing is not this service's.
    pub price_monthly: Option<f64>,
    /// Always `null`.
    pub price_yearly: Option<f64>,
    pub currency: String,
    pub features: Vec<String>,
    pub is_active: bool,
    pub is_free: bool,
    /// The monthly `cost_usd` template's maximum (dollars); `null`: none.
    #[schema(value_type = Option<f64>)]
    pub max_cost_usd_per_month: Option<Amount>,
    /// The monthly `messages` template's maximum; `null`: none.
    #[schema(value_type = Option<i64>)]
    pub max_messages_per_month: Option<Amount>,
    /// The monthly `tokens` template's maximum; `null`: none.
    #[schema(value_type = Option<i64>)]
    pub max_tokens_per_month: Option<Amount>,
    /// Always `null`.
    pub stripe_product_id: Option<String>,
    /// Always `null`.
    pub stripe_price_id_monthly: Option<String>,
    /// Always `null`.
    pub stripe_price_id_yearly: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Raised by every change (also the `ETag`).
    pub version: u64,
    /// Every template of the plan (the monthly shortcuts included).
    pub limits: Vec<TemplateView>,
    pub updated_by: String,
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        PlanView {
            id: p.plan_id,
            name: p.name.clone(),
            description: p.description.clone(),
            price_monthly: None,
            price_yearly: None,
            currency: p.currency.clone(),
            features: p.features.clone(),
            is_active: p.is_active,
            is_free: p.is_free,
            max_cost_usd_per_month: p.monthly(Metric::CostUsd),
            max_messages_per_month: p.monthly(Metric::Messages),
            max_tokens_per_month: p.monthly(Metric::Tokens),
            stripe_product_id: None,
            stripe_price_id_monthly: None,
            stripe_price_id_yearly: None,
            created_at: p.created_at,
            updated_at: p.updated_at,
            version: p.version,
            limits: p.templates.iter().map(TemplateView::from).collect(),
            updated_by: p.updated_by.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> PlanInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn shortcuts_and_templates_round_trip_through_rows() {
        let t = Uuid::new_v4();
        let p = input(serde_json::json!({"name":" Pro ","max_messages_per_month":1000,"max_cost_usd_per_month":"100.25",
            "max_tokens_per_month":null,"price_monthly":29.99,
            "limits":[{"metric":"tool_calls","period":"day","time_zone":"Europe/Berlin","max_value":50,"soft_threshold":0.5}]}));
        let mut plan = p.validate(t, Uuid::new_v4(), "k").unwrap();
        plan.version = 2;
        assert_eq!(plan.name, "Pro");
        assert_eq!(plan.templates.len(), 3);
        let back = Plan::from_row(&plan.to_row()).unwrap();
        assert_eq!(back, plan);
        let v = PlanView::from(&back);
        assert_eq!(v.max_messages_per_month, Some(Amount::Count(1000)));
        assert_eq!(v.max_cost_usd_per_month, Some(Amount::Micros(100_250_000)));
        assert_eq!(v.max_tokens_per_month, None);
        assert_eq!(v.price_monthly, None);
    }

    #[test]
    fn derived_limits_are_stable_per_template_and_organization() {
        let plan =
            input(serde_json::json!({"name":"P","max_messages_per_month":10})).validate(Uuid::new_v4(), Uuid::new_v4(), "k").unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let la: Vec<Limit> = plan.limits_for(a, Metric::Messages).collect();
        let lb: Vec<Limit> = plan.limits_for(b, Metric::Messages).collect();
        assert_eq!(la.len(), 1);
        assert_ne!(la[0].limit_id, lb[0].limit_id);
        assert_eq!(la[0].subject, Subject::Organization { organization_id: a });
        assert_eq!(la[0].plan_id, Some(plan.plan_id));
        let mut changed =
            input(serde_json::json!({"name":"P","max_messages_per_month":20})).validate(plan.tenant_id, plan.plan_id, "k").unwrap();
        changed.version = 2;
        let again: Vec<Limit> = changed.limits_for(a, Metric::Messages).collect();
        assert_eq!(again[0].limit_id, la[0].limit_id, "same template, same limit id");
        assert_eq!(again[0].max_units, 20);
        assert_eq!(plan.limits_for(a, Metric::Tokens).count(), 0);
    }

    #[test]
    fn every_problem_is_reported() {
        let p = input(serde_json::json!({"name":"","currency":"dollars","max_messages_per_month":1.5,
            "max_cost_usd_per_month":"x",
            "limits":[{"metric":"messages","period":"month","max_value":5},{"metric":"nope","period":"day","max_value":1}]}));
        let errs = p.validate(Uuid::new_v4(), Uuid::new_v4(), "k").unwrap_err();
        let locs: Vec<String> = errs.iter().map(|e| e.loc.join(".")).collect();
        for want in ["body.name", "body.currency", "body.max_messages_per_month", "body.max_cost_usd_per_month", "body.limits.1.metric"] {
            assert!(locs.iter().any(|l| l == want), "{want} missing from {locs:?}");
        }
        // The listed monthly messages template is not a duplicate: the
        // shortcut was invalid, so only one monthly messages template exists.
        assert!(!locs.contains(&"body.limits.0".to_owned()), "{locs:?}");
        let dup = input(serde_json::json!({"name":"P","max_messages_per_month":1,
            "limits":[{"metric":"messages","period":"month","time_zone":"Europe/Berlin","max_value":5}]}));
        let errs = dup.validate(Uuid::new_v4(), Uuid::new_v4(), "k").unwrap_err();
        assert_eq!(errs[0].loc, ["body", "limits", "0"]);
    }
}
