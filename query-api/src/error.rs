//! The one error type of the API and its HTTP shape.
//!
//! Every handler returns `Result<_, ApiError>`; the conversion to a response
//! happens here and only here (query failures, [`QueryError`], become an
//! `ApiError` here too):
//!
//! * 422 `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` for
//!   invalid parameters (the FastAPI shape the Caylex spec uses),
//! * 401 / 403 / 404 / 413 `{"detail": "..."}`,
//! * 503 `{"detail": "..."}` when ClickHouse is saturated or too slow,
//! * 500 `{"detail": "Internal server error"}`: the cause is logged, never
//!   sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::QueryError;

/// One invalid parameter, FastAPI style.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct FieldError {
    /// Where: e.g. `["query", "window"]` or `["path", "project_id"]`.
    pub loc: Vec<String>,
    /// What is wrong, for a human.
    pub msg: String,
    /// Machine-readable kind, e.g. `value_error`, `uuid_parsing`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: impl Into<String>) -> Self {
        Self { loc: loc.iter().map(|s| (*s).to_owned()).collect(), msg: msg.into(), kind: kind.into() }
    }
    /// An invalid query parameter.
    pub fn query(name: &str, msg: impl Into<String>) -> Self {
        Self::new(&["query", name], msg, "value_error")
    }
    /// An invalid path parameter.
    pub fn path(name: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self::new(&["path", name], msg, kind)
    }
}

/// The body of every error but 422: `{"detail": "..."}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Detail {
    /// What went wrong, for a human.
    pub detail: String,
}

impl Detail {
    pub fn new(detail: impl Into<String>) -> Self {
        Self { detail: detail.into() }
    }
}

/// The body of a 422: every invalid parameter of the request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationErrors {
    pub detail: Vec<FieldError>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldError>),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("clickhouse: {0}")]
    ClickHouse(clickhouse::error::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// The 422 of a request: every invalid field at once. The only way the
    /// API builds one (the [`FieldError`] constructors say where).
    pub fn invalid(errors: impl IntoIterator<Item = FieldError>) -> Self {
        Self::Validation(errors.into_iter().collect())
    }
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClickHouse(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The HTTP meaning of a query failure; the only place it is decided.
impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Busy(msg) => Self::Unavailable(msg),
            QueryError::TooExpensive => Self::invalid([FieldError::new(
                &["query"],
                "This request would read or return too many rows; use a shorter window, a coarser frequency or more filters",
                "too_expensive",
            )]),
            QueryError::NotFound(msg) => Self::NotFound(msg),
            QueryError::Unsupported(what) => Self::Internal(what.to_owned()),
            QueryError::Failed(e) => Self::ClickHouse(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match self {
            Self::Validation(errors) => return (status, Json(ValidationErrors { detail: errors })).into_response(),
            Self::Unauthorized(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::Conflict(d)
            | Self::Unavailable(d)
            | Self::PayloadTooLarge(d) => d,
            Self::ClickHouse(e) => {
                tracing::error!(error = %e, "clickhouse query failed");
                "Internal server error".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "Internal server error".to_owned()
            }
        };
        let mut resp = (status, Json(Detail::new(detail))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
