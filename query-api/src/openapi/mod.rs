//! The OpenAPI document of this API, generated from the code, and the two
//! routes that serve it: `/openapi.json` and `/docs` (a self-contained HTML
//! page rendering it, no CDN).
//!
//! Every API route is registered through `utoipa-axum`'s `routes!`, which
//! adds the handler to the router and its `#[utoipa::path]` description
//! to the document in one step: a route cannot exist without its entry, nor
//! an entry without its route. `lib.rs` merges the features' routers and
//! hands them to [`split`], which returns the axum router and the finished
//! document. Response bodies are the handlers' own return types
//! (`ToSchema`), parameters come from `param_docs`, and the error answers
//! every operation can give are added here by one rule set
//! ([`ErrorResponses`]) from what the operation has (authentication, a
//! rate-limit class, parameters, a body), so they follow the code too.
//!
//! `query-api/src/openapi.json` is a copy kept for readers of the
//! repository (dashboards tests, docs); a test fails when it differs from
//! the generated document (`UPDATE_OPENAPI=1 cargo test -p agentmeter-api
//! openapi` rewrites it).

use axum::extract::Extension;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Detail, ValidationErrors};

/// Security requirement names of the document.
pub const API_KEY: &str = "apiKey";
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentmeter-api",
        description = "Analytics (Caylex-compatible, under /api/v1), usage and plan limits, Grafana time series. \
            Authenticate with X-API-Key or Authorization: Bearer (with end-user tokens configured, the key goes in \
            X-API-Key and Authorization: Bearer carries the end user's JWT). Payloads of the /api/v1 analytics endpoints follow \
            the Caylex schemas (shared/spec/caylex-openapi.json) with the extra fields documented in docs/api.md."
    ),
    security(("apiKey" = []), ("bearer" = [])),
    tags(
        (name = "Analytics", description = "Caylex-compatible analytics"),
        (name = "Users", description = "End users of a project"),
        (name = "Grafana", description = "Time series for Grafana"),
        (name = "Usage", description = "Usage checks and current usage"),
        (name = "Limits", description = "Plan limits (admin key)"),
        (name = "Plans", description = "Plans: named sets of limit templates assigned to organizations"),
        (name = "Operations", description = "Health, readiness, metrics, this document"),
    ),
    components(schemas(Detail, ValidationErrors)),
    modifiers(&Security)
)]
struct ApiDoc;

/// The document type.
pub use utoipa::openapi::OpenApi as Document;

/// The axum router and the finished document of `api`, the merged routers
/// of the features (and [`router`]).
pub fn split<S: Clone + Send + Sync + 'static>(api: OpenApiRouter<S>) -> (Router<S>, Document) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(api).split_for_parts();
    (router, finish(doc))
}

/// The document as pretty JSON, as `/openapi.json` serves it.
pub fn to_json(doc: &Document) -> String {
    let mut s = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// The served document, handed to [`openapi`] as a request extension by
/// the app (the document is only complete once every router is merged).
#[derive(Debug, Clone, Copy)]
pub struct ServedDocument(pub &'static str);

/// `/openapi.json` and `/docs`.
pub fn router<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(openapi)).routes(routes!(docs))
}

/// This document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations", summary = "This document", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi(Extension(ServedDocument(json)): Extension<ServedDocument>) -> Response {
    ([(CONTENT_TYPE, "application/json")], json).into_response()
}

/// A plain HTML rendering of the OpenAPI document, built in the browser by
/// a few lines of inline script.
#[utoipa::path(get, path = "/docs", tag = "Operations", summary = "HTML rendering of this document", security(()),
    responses((status = 200, description = "A self-contained HTML page (no CDN)", content_type = "text/html", body = String)))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../docs.html"))
}

/// Modifiers run before `routes!` merges the operations in; what needs the
/// operations runs here, on the finished document.
fn finish(mut doc: Document) -> Document {
    ErrorResponses::apply(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("TimeZone".into(), RefOr::T(crate::param_docs::time_zone_schema()));
    doc
}

/// The two ways to present a key.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(API_KEY, SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components.add_security_scheme(BEARER, SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The error answers of every operation, from what it has:
///
/// * authenticated (no `security: [{}]` override): 401 (missing or
///   invalid key), 500, 503 (ClickHouse saturated or too slow);
/// * tagged `Limits`: 403 (not an admin key); the admin operations of
///   `Plans` list their 403 themselves;
/// * tagged `Usage` and naming a user (a `user_id`, a body): 403 (another
///   user than the end-user token's);
/// * in a rate-limit class ([`crate::rate_limit::Class::of_route`]): 429;
/// * with parameters or a body: 422 (FastAPI-style list of problems);
/// * with a path parameter or an id filter of the tenant: 404, except on
///   the analytics and Grafana endpoints, where an id without events of
///   the caller's tenant answers zeros (only a user unknown in a project
///   is a 404 there);
/// * with a body: 413 (`--max-body-bytes`).
struct ErrorResponses;

impl ErrorResponses {
    fn apply(doc: &mut Document) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head];
            for op in ops.into_iter().flatten() {
                Self::operation(path, op);
            }
        }
    }

    fn operation(path: &str, op: &mut Operation) {
        let authenticated = op.security.as_ref().is_none_or(|s| !s.is_empty() && s.iter().all(|r| r != &Default::default()));
        let params = op.parameters.as_deref().unwrap_or_default();
        let has_body = op.request_body.is_some();
        let id_param = params
            .iter()
            .any(|p| p.parameter_in == ParameterIn::Path || p.name.ends_with("_id") && p.name != "user_id" || p.name == "organization_id");
        let tagged = |t: &str| op.tags.as_ref().is_some_and(|tags| tags.iter().any(|x| x == t));
        let mut add = |status: &str, description: &str, body: RefOr<utoipa::openapi::Schema>| {
            if !op.responses.responses.contains_key(status) {
                let resp = ResponseBuilder::new()
                    .description(description)
                    .content("application/json", ContentBuilder::new().schema(Some(body)).build());
                op.responses.responses.insert(status.to_owned(), RefOr::T(resp.build()));
            }
        };
        let detail = || RefOr::Ref(utoipa::openapi::Ref::from_schema_name(Detail::name()));
        if authenticated {
            add("401", "Missing or invalid API key, or an expired or invalid end-user token (`WWW-Authenticate: Bearer`)", detail());
            add("500", "Internal error (the cause is logged, never sent)", detail());
            add("503", "ClickHouse saturated or too slow; retry later", detail());
        }
        if tagged("Limits") {
            add("403", "The key is not an admin key", detail());
        }
        let names_user = path.contains("{user_id}") || params.iter().any(|p| p.name == "user_id") || has_body;
        if tagged("Usage") && names_user {
            add("403", "The request names another user than the end-user token's", detail());
        }
        if !params.is_empty() || has_body {
            add(
                "422",
                "Invalid parameters or body: every problem, FastAPI style",
                RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ValidationErrors::name())),
            );
        }
        if tagged("Users") && path.contains("{user_id}") {
            add("404", "The user has no event in this project (of the caller's tenant)", detail());
        } else if id_param && !tagged("Analytics") && !tagged("Grafana") && !tagged("Users") {
            add("404", "An id of another tenant, or unknown", detail());
        }
        if has_body {
            add("413", "Request body larger than --max-body-bytes", detail());
        }
        if crate::rate_limit::Class::of_route(path).is_some() && authenticated {
            add(
                "429",
                "Rate limit of the key, or its in-flight cap after its queue was full or the wait bound passed; see Retry-After",
                detail(),
            );
            if let Some(RefOr::T(r)) = op.responses.responses.get_mut("429") {
                r.headers.insert(
                    "Retry-After".into(),
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn src() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
    }

    /// API routes are registered only through `routes!` (route and entry
    /// together): no plain axum route calls outside the web UI's static files.
    #[test]
    fn routes_are_registered_only_with_their_openapi_entry() {
        let mut stack = vec![src()];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.starts_with(src().join("ui")) {
                    files += 1;
                    let text = std::fs::read_to_string(&path).expect("read");
                    assert!(!text.contains(concat!(".route", "(")), "{}: register API routes with routes!", path.display());
                }
            }
        }
        assert!(files > 30);
    }

    /// Every operation of the document: authenticated ones list 401, 429,
    /// 500 and 503; ones with parameters 422.
    #[test]
    fn error_answers_follow_the_operations() {
        let doc = serde_json::to_value(crate::openapi_document()).expect("serialize");
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                n += 1;
                let open = op["security"] == serde_json::json!([{}]);
                let has = |s: &str| op["responses"][s].is_object();
                assert!(has("200") || has("201"), "{method} {path}");
                if !open {
                    for s in ["401", "429", "500", "503"] {
                        assert!(has(s), "{method} {path} lacks {s}");
                    }
                }
                if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) || op["requestBody"].is_object() {
                    assert!(has("422"), "{method} {path} lacks 422");
                }
                if op["requestBody"].is_object() {
                    assert!(has("413"), "{method} {path} lacks 413");
                }
            }
        }
        assert_eq!(n, 61);
    }

    /// `src/openapi.json` is the generated document (rewritten when
    /// `UPDATE_OPENAPI=1`).
    #[test]
    fn committed_copy_is_the_generated_document() {
        let path = src().join("openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, super::to_json(crate::openapi_document())).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(&path).expect("read openapi.json");
        assert!(
            committed == super::to_json(crate::openapi_document()),
            "query-api/src/openapi.json differs from the generated document; run UPDATE_OPENAPI=1 cargo test -p agentmeter-api openapi"
        );
    }
}
