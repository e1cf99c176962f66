//! Query-string parameters shared by the analytics endpoints and their
//! validation into typed values.
//!
//! Every parameter arrives as an optional string ([`RawParams`]) so that a
//! bad value becomes a FastAPI-style 422 naming the parameter (`loc:
//! ["query", "<name>"]`) rather than a generic deserialisation error, and
//! all problems of a request are reported together. Parameters an endpoint
//! does not use are ignored, as FastAPI does.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use uuid::Uuid;

use crate::calendar;
use crate::error::{ApiError, FieldError};
use crate::queries;
use crate::window::{Span, TimeRange};

/// Every query parameter any analytics endpoint reads, unparsed.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawParams {
    pub window: Option<String>,
    pub frequency: Option<String>,
    pub view: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub project_id: Option<String>,
    pub navigator_instance_id: Option<String>,
    pub server_instance_id: Option<String>,
    pub server_id: Option<String>,
    pub tool_id: Option<String>,
    pub tool_name: Option<String>,
    pub user_email: Option<String>,
    pub sort_order: Option<String>,
    pub limit: Option<String>,
    pub comparison_period: Option<String>,
    // Grafana endpoint.
    pub metric: Option<String>,
    pub step: Option<String>,
    pub max_points: Option<String>,
    pub group_by: Option<String>,
    pub top: Option<String>,
    pub format: Option<String>,
    pub model: Option<String>,
    pub error_type: Option<String>,
}

/// Extractor of [`RawParams`]; a malformed query string (e.g. a repeated
/// parameter) is a 422.
#[derive(Debug, Clone)]
pub struct Params(pub RawParams);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        RawParams::from_uri(&parts.uri).map(Params)
    }
}

impl RawParams {
    /// The parameters of a request URI; a malformed query string (e.g. a
    /// repeated parameter) is a 422.
    pub fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        match Query::<RawParams>::try_from_uri(uri) {
            Ok(Query(p)) => Ok(p),
            Err(e) => Err(ApiError::invalid([FieldError::new(&["query"], e.body_text(), "query_parsing")])),
        }
    }

    /// [`RawParams::from_uri`] of a path and query given as text (for the
    /// fuzzer, which has no `Uri` type of its own).
    pub fn from_path_and_query(s: &str) -> Result<Self, ApiError> {
        let uri: Uri = s.parse().map_err(|_| ApiError::invalid([FieldError::new(&["query"], "Invalid URI", "query_parsing")]))?;
        Self::from_uri(&uri)
    }
}

/// `limit` of the sorted lists: (default, min, max).
pub const LIST_LIMIT: (u32, u32, u32) = (100, 1, 1000);
/// `limit` of the top-N endpoints: (default, min, max).
pub const TOP_LIMIT: (u32, u32, u32) = (5, 1, 100);
/// `top` of `query/timeseries`: (default, min, max).
pub const SERIES_TOP: (u32, u32, u32) = (10, 1, 100);
/// `max_points` of `query/timeseries` by default (at most `--max-buckets`).
pub const MAX_POINTS_DEFAULT: u32 = 500;

/// A UUID path parameter, or the FastAPI-style 422 naming it.
pub fn path_uuid(name: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| {
        ApiError::invalid([FieldError::path(
            name,
            format!("Input should be a valid UUID, got '{}'", s.chars().take(40).collect::<String>()),
            "uuid_parsing",
        )])
    })
}

/// Collects validation errors so that all of them are reported at once.
#[derive(Debug, Default)]
pub struct Checker {
    pub errors: Vec<FieldError>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: &str, msg: impl Into<String>) {
        self.errors.push(FieldError::query(name, msg));
    }

    /// Ok if nothing was pushed, else the 422.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }

    /// A `window` (default `default`), strict or not.
    pub fn window(&mut self, raw: &Option<String>, default: &str, strict: bool) -> (String, Span) {
        let s = raw.clone().unwrap_or_else(|| default.to_owned());
        let parsed = if strict { Span::parse_window_strict(&s) } else { Span::parse_window(&s) };
        match parsed {
            Ok(span) => (s, span),
            Err(msg) => {
                self.push("window", msg);
                (default.to_owned(), Span::parse_window(default).expect("valid default window"))
            }
        }
    }

    /// A `frequency` (default `default`).
    pub fn frequency(&mut self, raw: &Option<String>, default: &str, strict: bool) -> Span {
        let s = raw.clone().unwrap_or_else(|| default.to_owned());
        let parsed = if strict { Span::parse_frequency_strict(&s) } else { Span::parse_frequency(&s) };
        parsed.unwrap_or_else(|msg| {
            self.push("frequency", msg);
            Span::parse_frequency(default).expect("valid default frequency")
        })
    }

    /// The `tz` parameter (default UTC).
    pub fn tz(&mut self, raw: &Option<String>) -> Tz {
        match raw {
            None => Tz::UTC,
            Some(s) => calendar::parse_tz(s).unwrap_or_else(|msg| {
                self.push("tz", msg);
                Tz::UTC
            }),
        }
    }

    /// An optional instant (`from`, `to`).
    pub fn instant(&mut self, name: &str, raw: &Option<String>) -> Option<DateTime<Utc>> {
        let s = raw.as_ref()?;
        calendar::parse_instant(s).map_err(|msg| self.push(name, msg)).ok()
    }

    /// An optional UUID filter.
    pub fn uuid(&mut self, name: &str, raw: &Option<String>) -> Option<Uuid> {
        let s = raw.as_ref()?;
        match Uuid::parse_str(s.trim()) {
            Ok(u) => Some(u),
            Err(_) => {
                self.errors.push(FieldError::new(
                    &["query", name],
                    format!("Input should be a valid UUID, got '{}'", s.chars().take(40).collect::<String>()),
                    "uuid_parsing",
                ));
                None
            }
        }
    }

    /// An optional non-empty name (tool name, model) of at most 256 bytes.
    pub fn name(&mut self, name: &str, raw: &Option<String>) -> Option<String> {
        let s = raw.as_ref()?;
        if s.is_empty() || s.len() > agentmeter_schema::event::MAX_NAME_BYTES {
            self.push(name, format!("{name} must be 1 to {} bytes", agentmeter_schema::event::MAX_NAME_BYTES));
            return None;
        }
        Some(s.clone())
    }

    /// An integer in `[min, max]` (default `default`).
    pub fn int(&mut self, name: &str, raw: &Option<String>, default: u32, min: u32, max: u32) -> u32 {
        let Some(s) = raw else { return default };
        match s.trim().parse::<i64>() {
            Ok(v) if v >= i64::from(min) && v <= i64::from(max) => v as u32,
            Ok(v) if v < i64::from(min) => {
                self.errors.push(FieldError::new(
                    &["query", name],
                    format!("Input should be greater than or equal to {min}"),
                    "greater_than_equal",
                ));
                default
            }
            Ok(_) => {
                self.errors.push(FieldError::new(
                    &["query", name],
                    format!("Input should be less than or equal to {max}"),
                    "less_than_equal",
                ));
                default
            }
            Err(_) => {
                self.errors.push(FieldError::new(&["query", name], "Input should be a valid integer", "int_parsing"));
                default
            }
        }
    }

    /// `asc` or `desc` (default `default`).
    pub fn sort_order(&mut self, raw: &Option<String>, default: SortOrder) -> SortOrder {
        match raw.as_deref() {
            None => default,
            Some(s) if s.eq_ignore_ascii_case("asc") => SortOrder::Asc,
            Some(s) if s.eq_ignore_ascii_case("desc") => SortOrder::Desc,
            Some(_) => {
                self.push("sort_order", "sort_order must be 'asc' or 'desc'");
                default
            }
        }
    }

    /// The graph `view` (`timeseries`, `bar`, `pie`, `heatmap`).
    pub fn view(&mut self, raw: &Option<String>) -> &'static str {
        match raw.as_deref() {
            None | Some("timeseries") => "timeseries",
            Some("bar") => "bar",
            Some("pie") => "pie",
            Some("heatmap") => "heatmap",
            Some(_) => {
                self.errors.push(FieldError::new(&["query", "view"], "Input should be 'timeseries', 'bar', 'pie' or 'heatmap'", "enum"));
                "timeseries"
            }
        }
    }
}

/// Sort direction of the list endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

impl From<SortOrder> for queries::Order {
    fn from(o: SortOrder) -> Self {
        match o {
            SortOrder::Asc => Self::Asc,
            SortOrder::Desc => Self::Desc,
        }
    }
}

/// Filters of the analytics endpoints (SEED_SPEC §1.2 table): the query
/// layer's own (it knows nothing of parameters; [`Checker::filters`] reads
/// them from the parameters, [`Filters::echo`] names them back). `server_id`
/// and `user_email` extend the Caylex filters; `user_token_id` (the end
/// user) is never a parameter nor echoed.
pub use crate::queries::Filters;

/// Which filters an endpoint accepts.
#[derive(Debug, Clone, Copy)]
pub struct Accepts {
    pub project: bool,
    pub navigator_instance: bool,
    pub server_instance: bool,
    pub tool_id: bool,
    pub tool_name: bool,
    /// `user_email`: every endpoint that takes a project filter.
    pub user: bool,
}

impl Accepts {
    pub const NONE: Self =
        Self { project: false, navigator_instance: false, server_instance: false, tool_id: false, tool_name: false, user: false };
    pub const P: Self = Self { project: true, user: true, ..Self::NONE };
    pub const PN: Self = Self { navigator_instance: true, ..Self::P };
    pub const PNS: Self = Self { server_instance: true, ..Self::PN };
    pub const PNS_TOOL_ID: Self = Self { tool_id: true, ..Self::PNS };
    pub const PNS_TOOL_NAME: Self = Self { tool_name: true, ..Self::PNS };
}

impl Checker {
    /// The filters an endpoint accepts; others are ignored.
    pub fn filters(&mut self, p: &RawParams, accepts: Accepts) -> Filters {
        Filters {
            project_id: if accepts.project { self.uuid("project_id", &p.project_id) } else { None },
            navigator_instance_id: if accepts.navigator_instance {
                self.uuid("navigator_instance_id", &p.navigator_instance_id)
            } else {
                None
            },
            server_instance_id: if accepts.server_instance { self.uuid("server_instance_id", &p.server_instance_id) } else { None },
            server_id: if accepts.server_instance { self.uuid("server_id", &p.server_id) } else { None },
            tool_id: if accepts.tool_id { self.uuid("tool_id", &p.tool_id) } else { None },
            tool_name: if accepts.tool_name { self.name("tool_name", &p.tool_name) } else { None },
            user_token_id: None,
            user_email: if accepts.user { self.name("user_email", &p.user_email) } else { None },
        }
    }

    /// Window, `from`/`to`, `tz` resolved into a range.
    pub fn range(&mut self, p: &RawParams, default_window: &str, strict: bool, now: DateTime<Utc>) -> Resolved {
        let (window_str, window) = self.window(&p.window, default_window, strict);
        let tz = self.tz(&p.tz);
        let from = self.instant("from", &p.from);
        let to = self.instant("to", &p.to);
        let range = match TimeRange::resolve(window, from, to, now, tz) {
            Ok(r) => r,
            Err(msg) => {
                self.push(if from.is_some() { "from" } else { "window" }, msg);
                TimeRange { start: now, end: now }
            }
        };
        Resolved { window_str, window, tz, range }
    }
}

/// The resolved time parameters of a request.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `window` as given (echoed in responses).
    pub window_str: String,
    pub window: Span,
    pub tz: Tz,
    pub range: TimeRange,
}

impl Filters {
    /// The filters that were supplied, as the `filters` echo of responses.
    pub fn echo(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(v) = self.project_id {
            m.insert("project_id".into(), v.to_string());
        }
        if let Some(v) = self.navigator_instance_id {
            m.insert("navigator_instance_id".into(), v.to_string());
        }
        if let Some(v) = self.server_instance_id {
            m.insert("server_instance_id".into(), v.to_string());
        }
        if let Some(v) = self.server_id {
            m.insert("server_id".into(), v.to_string());
        }
        if let Some(v) = self.tool_id {
            m.insert("tool_id".into(), v.to_string());
        }
        if let Some(v) = &self.tool_name {
            m.insert("tool_name".into(), v.clone());
        }
        if let Some(v) = &self.user_email {
            m.insert("user_email".into(), v.clone());
        }
        m
    }
}
