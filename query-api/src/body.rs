//! [`Body`]: the raw request body for the handlers that parse JSON
//! themselves (their validation errors name each field), with the
//! `--max-body-bytes` rejection answered in the API's error shape
//! (413 `{"detail": "..."}`) rather than axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;

use crate::error::{ApiError, FieldError};

/// The whole request body.
pub struct Body(pub Bytes);

/// The `--max-body-bytes` limit, as a substate (`FromRef`) for the message of
/// the 413.
#[derive(Debug, Clone, Copy)]
pub struct MaxBodyBytes(pub usize);

impl<S> FromRequest<S> for Body
where
    S: Send + Sync,
    MaxBodyBytes: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Body).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("Request body larger than {} bytes", MaxBodyBytes::from_ref(state).0))
            } else {
                let msg = rejection.body_text();
                ApiError::invalid([FieldError::new(&["body"], format!("Cannot read the request body: {msg}"), "body_unreadable")])
            }
        })
    }
}
