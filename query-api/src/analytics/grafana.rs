//! `GET /api/v1/query/timeseries`: one metric over an absolute range, for
//! Grafana (Infinity / JSON data sources).
//!
//! Parameters: `metric` (required), `from` / `to` (epoch ms or RFC 3339;
//! default the last `window`, 24h), `step` (`1m`, `5m`, `1h`, `1d`, ...) or
//! `max_points` (the finest "nice" step giving at most that many points;
//! default 500), `tz`, `group_by` with `top` (default 10, the rest summed
//! into `other`), filters `project_id`, `navigator_instance_id`,
//! `server_instance_id`, `tool_id`, `tool_name` (the last three only for
//! tool-call metrics), `format=series|table`. Grouped by `project` or
//! `navigator` (instance ids), each series also carries the group's latest
//! name as `label`.
//!
//! Latencies are in milliseconds, `error_rate` a fraction 0–1, `cost_usd`
//! dollars. Counts are zero in an empty bucket; ratios and latencies are
//! `null` there (no data is not zero latency).

use axum::extract::State;
use axum::Json;

use super::responses::{NamedSeries, Timeseries, TimeseriesAnswer, TimeseriesRow};
use super::AnalyticsState;
use super::{now, ts};
use crate::auth::Caller;
use crate::buckets::Buckets;
use crate::error::{ApiError, FieldError};
use crate::params::{Accepts, Checker, Params};
use crate::params::{MAX_POINTS_DEFAULT, SERIES_TOP};
use crate::queries::analytics::names::{self, Kind};
use crate::queries::analytics::timeseries::{self, GroupBy, Metric, Table, GROUP_BY_NAMES, METRIC_NAMES};
use crate::queries::{CallKinds, Scope};
use crate::window::{Span, TimeRange, Unit};

/// Steps `max_points` chooses from, finest first.
const NICE_STEPS: &[(u32, Unit)] = &[
    (1, Unit::Minute),
    (5, Unit::Minute),
    (10, Unit::Minute),
    (15, Unit::Minute),
    (30, Unit::Minute),
    (1, Unit::Hour),
    (3, Unit::Hour),
    (6, Unit::Hour),
    (12, Unit::Hour),
    (1, Unit::Day),
    (1, Unit::Week),
    (1, Unit::Month),
];

#[utoipa::path(
    get,
    path = "/api/v1/query/timeseries",
    tag = "Grafana",
    summary = "One metric as time series for Grafana",
    params(crate::param_docs::TimeseriesParams),
    responses((status = 200, description = "One metric as time series for Grafana", body = Timeseries))
)]
pub async fn timeseries(State(state): State<AnalyticsState>, caller: Caller, Params(p): Params) -> Result<Json<Timeseries>, ApiError> {
    let mut c = Checker::new();
    let metric = match p.metric.as_deref() {
        None => {
            c.errors.push(FieldError::new(&["query", "metric"], "Field required", "missing"));
            None
        }
        Some(m) => Metric::parse(m).or_else(|| {
            c.errors.push(FieldError::new(&["query", "metric"], format!("metric must be one of: {METRIC_NAMES}"), "enum"));
            None
        }),
    };
    let res = c.range(&p, "24h", false, now());
    let table = metric.map(|m| m.table()).unwrap_or(Table::ToolCalls);
    let accepts = if table == Table::ToolCalls { Accepts { tool_id: true, tool_name: true, ..Accepts::PNS } } else { Accepts::PN };
    if table == Table::Executions {
        for (name, v) in [
            ("server_instance_id", &p.server_instance_id),
            ("server_id", &p.server_id),
            ("tool_id", &p.tool_id),
            ("tool_name", &p.tool_name),
        ] {
            if v.is_some() {
                c.push(name, format!("{name} filters tool-call metrics only"));
            }
        }
    }
    let filters = c.filters(&p, accepts);
    let group = match p.group_by.as_deref() {
        None => None,
        Some(g) => match GroupBy::parse(g) {
            Some(g) if g.key_sql(table).is_some() => Some(g),
            Some(_) => {
                c.push("group_by", format!("group_by={g} is not available for metric {}", p.metric.as_deref().unwrap_or("")));
                None
            }
            None => {
                c.errors.push(FieldError::new(&["query", "group_by"], format!("group_by must be one of: {GROUP_BY_NAMES}"), "enum"));
                None
            }
        },
    };
    let (default, min, max) = SERIES_TOP;
    let top = c.int("top", &p.top, default, min, max);
    let max_points = c.int("max_points", &p.max_points, MAX_POINTS_DEFAULT, 1, state.max_buckets as u32);
    let step = p.step.as_ref().map(|s| Span::parse_frequency(s).map_err(|m| c.push("step", m)).ok()).unwrap_or(None);
    let table_format = match p.format.as_deref() {
        None | Some("series") => false,
        Some("table") => true,
        Some(_) => {
            c.push("format", "format must be 'series' or 'table'");
            false
        }
    };
    c.finish()?;
    let metric = metric.ok_or_else(|| ApiError::Internal("metric checked".into()))?;
    let step = match step {
        Some(s) => s,
        None => {
            let secs = (res.range.end - res.range.start).num_seconds();
            let (n, u) = NICE_STEPS
                .iter()
                .copied()
                .find(|(n, u)| secs / Span::new(*n, *u).approx_seconds() < i64::from(max_points))
                .unwrap_or((1, Unit::Month));
            Span::new(n, u)
        }
    };
    let buckets =
        Buckets::plan(res.range, step, res.tz, state.max_buckets).map_err(|m| ApiError::invalid([FieldError::query("step", m)]))?;
    let scope = Scope {
        tenant: caller.tenant_id,
        range: TimeRange { start: buckets.first_start(), end: res.range.end },
        filters,
        kinds: CallKinds::Tool,
    };
    let metric_name = p.metric.clone().unwrap_or_default();
    let (names, points) = match group {
        None => {
            let pts = timeseries::points(&state.db, &scope, metric, &buckets, None, &metric_name).await?;
            (vec![metric_name.clone()], pts)
        }
        Some(g) => timeseries::grouped(&state.db, &scope, metric, &buckets, g, top, timeseries::ONE_READ_MAX_ROWS).await?,
    };
    let fill = if metric.zero_filled() { Some(0.0) } else { None };
    let mut grid: Vec<Vec<Option<f64>>> = vec![vec![fill; buckets.len()]; names.len()];
    for pt in points {
        let Some(si) = names.iter().position(|n| *n == pt.series) else { continue };
        if let Some(slot) = grid[si].get_mut(pt.bucket as usize) {
            *slot = pt.value.is_finite().then_some(pt.value);
        }
    }
    let as_of = now();
    if table_format {
        let mut rows = Vec::new();
        for (si, name) in names.iter().enumerate() {
            for (i, v) in grid[si].iter().enumerate() {
                rows.push(TimeseriesRow { time: buckets.start(i).timestamp_millis(), series: name.clone(), value: *v });
            }
        }
        return Ok(Json(Timeseries::Table(rows)));
    }
    let kind = match group {
        Some(GroupBy::Project) => Some(Kind::Project),
        Some(GroupBy::Navigator) => Some(Kind::NavigatorInstance),
        _ => None,
    };
    let labels = match kind {
        Some(kind) => names::latest(&state.db, caller.tenant_id, kind, &names).await?,
        None => Default::default(),
    };
    let series = names
        .into_iter()
        .zip(grid)
        .map(|(name, values)| NamedSeries {
            label: labels.get(&name).cloned(),
            name,
            points: values.into_iter().enumerate().map(|(i, v)| (buckets.start(i).timestamp_millis(), v)).collect(),
        })
        .collect();
    let open = buckets.open_bucket(as_of);
    Ok(Json(Timeseries::Series(TimeseriesAnswer {
        metric: metric_name,
        step: step.frequency_string(),
        from: scope.range.start.timestamp_millis(),
        to: scope.range.end.timestamp_millis(),
        tz: res.tz.name().to_owned(),
        group_by: p.group_by,
        as_of: ts(as_of),
        open_bucket: open.map(|i| buckets.start(i).timestamp_millis()),
        series,
    })))
}
