//! [`Path`]: axum's path extractor with its rejection (a path segment that
//! is not valid percent-encoded UTF-8, e.g. `/api/v1/projects/%FF/...`)
//! answered in the API's 422 shape instead of axum's plain-text 400, as
//! every other invalid parameter is.

use axum::extract::{FromRequestParts, Path as AxumPath};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// The path parameters of a route, as strings the handler then validates.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumPath::<T>::from_request_parts(parts, state).await {
            Ok(AxumPath(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::Validation(vec![FieldError::new(&["path"], e.body_text(), "path_parsing")])),
        }
    }
}
