//! Operational endpoints: liveness, readiness, metrics (the OpenAPI
//! document and its HTML page are served by `openapi`); and [`track`], the
//! middleware that counts and times every request. The metrics themselves
//! are declared in `metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::TextEncoder;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::Db;
use crate::error::{ApiError, Detail};
use crate::metrics::Metrics;
use crate::valkey::{readiness, SharedStateView, SharedStore};

/// The operational routes and their OpenAPI entries.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    Arc<Metrics>: FromRef<S>,
    SharedStore: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(render))
}

/// `/health`: the process serves requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `/ready`: the readiness verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (200) or `not_ready` (503).
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: &'static str,
    /// Why the service is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    /// Highest migration applied to ClickHouse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The migration this build expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_schema_version: Option<u32>,
    /// Where reservations and rate limits live; Valkey's state.
    pub shared_state: SharedStateView,
}

impl Readiness {
    fn not_ready(detail: &'static str, shared_state: SharedStateView) -> Self {
        Self { status: "not_ready", detail: Some(detail), schema_version: None, expected_schema_version: None, shared_state }
    }
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/health", tag = "Operations", summary = "Liveness", security(()),
    responses((status = 200, description = "The process serves requests", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: ClickHouse answers and the schema is at the version this build
/// expects. `shared_state` says where reservations and rate limits live and,
/// with Valkey, its state (`ok`, `unreachable`, `fenced`).
#[utoipa::path(get, path = "/ready", tag = "Operations", security(()),
    summary = "Readiness: ClickHouse reachable and schema at the expected version; where shared state lives",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with the reason", body = Readiness),
    ))]
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
            let all_applied = agentmeter_schema::migrations::all().iter().all(|m| versions.contains(&m.version()));
            if all_applied {
                Json(Readiness {
                    status: "ready",
                    detail: None,
                    schema_version: Some(current),
                    expected_schema_version: Some(expected),
                    shared_state: shared,
                })
                .into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(Readiness {
                        status: "not_ready",
                        detail: Some("ClickHouse schema is not migrated to the expected version"),
                        schema_version: Some(current),
                        expected_schema_version: Some(expected),
                        shared_state: shared,
                    }),
                )
                    .into_response()
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness::not_ready("ClickHouse is not reachable", shared))).into_response()
        }
        Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness::not_ready("ClickHouse did not answer in time", shared))).into_response()
        }
    }
}

/// `GET /metrics` in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "Operations", summary = "Prometheus metrics", security(()),
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
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
    (StatusCode::NOT_FOUND, Json(Detail::new("Not Found"))).into_response()
}
