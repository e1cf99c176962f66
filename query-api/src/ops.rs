//! Operational endpoints: liveness, readiness, metrics, the OpenAPI
//! document of this API and a small HTML page rendering it (no CDN: the page
//! is self-contained so it works offline); and [`track`], the middleware
//! that counts and times every request. The metrics themselves are declared
//! in `metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::TextEncoder;
use serde_json::json;

use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::valkey::{readiness, SharedStore};

/// The OpenAPI document of this API, maintained by hand next to the code;
/// a test checks that every route of [`crate::app`] is in it.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    Arc<Metrics>: FromRef<S>,
    SharedStore: FromRef<S>,
{
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs))
}

/// Liveness: the process serves requests.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: ClickHouse answers and the schema is at the version this build
/// expects. `shared_state` says where reservations and rate limits live and,
/// with Valkey, its state (`ok`, `unreachable`, `fenced`).
pub async fn ready(State(db): State<Db>, State(store): State<SharedStore>) -> Response {
    let expected = agentmeter_schema::migrations::latest_version();
    let shared = readiness(&store);
    let client = db.client().clone();
    let check =
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            async move { agentmeter_schema::migrations::applied_versions(&client).await },
        )
        .await;
    match check {
        Ok(Ok(versions)) => {
            let current = versions.iter().copied().max().unwrap_or(0);
            let all_applied = (1..=expected).all(|v| versions.contains(&v));
            if all_applied {
                Json(json!({ "status": "ready", "schema_version": current, "expected_schema_version": expected, "shared_state": shared }))
                    .into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "status": "not_ready", "detail": "ClickHouse schema is not migrated to the expected version", "schema_version": current, "expected_schema_version": expected, "shared_state": shared })),
                )
                    .into_response()
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "detail": "ClickHouse is not reachable", "shared_state": shared })),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "detail": "ClickHouse did not answer in time", "shared_state": shared })),
        )
            .into_response(),
    }
}

pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// A plain HTML rendering of the OpenAPI document, built in the browser by
/// a few lines of inline script.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(metrics): State<Arc<Metrics>>) -> Response {
    let families = metrics.registry.gather();
    match TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// Middleware counting and timing every request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.request_duration_seconds.with_label_values(&[&route, &method]).observe(started.elapsed().as_secs_f64());
    metrics.requests_total.with_label_values(&[&route, &method, resp.status().as_str()]).inc();
    resp
}

/// 404 for unknown paths, in the API's error shape.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "detail": "Not Found" }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::OPENAPI_JSON;

    /// Every route path registered in the crate's source is documented, except the
    /// static files of the web UI (`/`, `/ui/*`), which are not API.
    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut found = 0;
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                for part in text.split(".route(\"").skip(1) {
                    let route = &part[..part.find('"').expect("closing quote")];
                    if !route.starts_with('/') || route == "/" || route.starts_with("/ui/") {
                        continue;
                    }
                    found += 1;
                    assert!(paths.contains_key(route), "route {route} ({}) is missing from openapi.json", path.display());
                }
            }
        }
        assert!(found > 30, "found only {found} routes");
    }
}
