//! [`Body`]: the raw request body for the handlers that parse JSON
//! themselves (their validation errors name each field), with the
//! `--max-body-bytes` rejection answered in the API's error shape
//! (413 `{"detail": "..."}`) rather than axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use crate::error::{ApiError, FieldError};
use crate::state::AppState;

/// The whole request body.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Body).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("Request body larger than {} bytes", state.max_body_bytes))
            } else {
                let msg = rejection.body_text();
                ApiError::Validation(vec![FieldError::new(&["body"], format!("Cannot read the request body: {msg}"), "body_unreadable")])
            }
        })
    }
}
