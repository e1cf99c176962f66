//! The generated OpenAPI document against the running API:
//!
//! * the document is a valid OpenAPI 3.1 document (the OAI schema of
//!   3.1 documents, `tests/data/oas-3.1-schema.json`, from the
//!   `openapi-spec-validator` distribution) and every schema in it compiles
//!   as JSON Schema 2020-12;
//! * every documented operation is served (no 404 from the fallback, no
//!   405), and the router serves no API path the document lacks;
//! * [`assert_documented`]: the harnesses of the analytics and usage tests
//!   pass every answer through it, so each status they see must be
//!   documented for the operation and each JSON body must match its schema
//!   (formats checked).

use std::sync::OnceLock;

use serde_json::Value;

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(agentmeter_api::openapi_document()).expect("document serializes"))
}

/// The path template of the document matching `path` (literal segments
/// preferred over parameters, as axum does).
fn template_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut hits: Vec<&str> = document()["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len() && ts.iter().zip(&segs).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
        .collect();
    hits.sort_by_key(|t| t.matches('{').count());
    hits.first().copied()
}

/// A validator of `schema` that resolves `#/components/...` in the document.
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Value::Object(m) = &mut root {
        m.insert("components".into(), document()["components"].clone());
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

/// Panics unless `status` is documented for `method path_and_query` and
/// `body` (when JSON) matches the documented schema of that status.
pub fn assert_documented(method: &str, path_and_query: &str, status: u16, body: &Value) {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let Some(template) = template_of(path) else {
        // Unknown paths answer the fallback 404, which is not an operation.
        assert_eq!(status, 404, "{method} {path}: undocumented path answered {status}");
        return;
    };
    let op = &document()["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {template} is not in the OpenAPI document");
    let response = &op["responses"][status.to_string()];
    assert!(response.is_object(), "{method} {template} answered {status}, which its OpenAPI entry does not list: {body}");
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() || body.is_null() {
        return;
    }
    let errors: Vec<String> = validator(schema).iter_errors(body).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{method} {template} {status} does not match its documented schema: {errors:#?}\n{body:#}");
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let meta: Value = serde_json::from_str(include_str!("../data/oas-3.1-schema.json")).unwrap();
    let v = jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&meta).expect("OAS 3.1 schema compiles");
    let errors: Vec<String> = v.iter_errors(document()).map(|e| format!("{e} at {}", e.instance_path)).collect();
    assert!(errors.is_empty(), "not a valid OpenAPI 3.1 document: {errors:#?}");
    assert!(document()["openapi"].as_str().unwrap().starts_with("3.1."));
    let schemas = document()["components"]["schemas"].as_object().unwrap();
    assert!(schemas.len() > 50, "{} schemas", schemas.len());
    for s in schemas.values() {
        validator(s);
    }
    let schemes = &document()["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"], serde_json::json!({"type": "apiKey", "in": "header", "name": "X-API-Key"}));
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
}

/// Every documented operation is routed: a request without a key gets
/// the handler's answer (401 for authenticated operations), never the
/// fallback's 404 or a 405; and a path the document lacks is the fallback's.
#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else() {
    let app = crate::analytics::App::start("oa_routes", &[]).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut n = 0;
    for (template, item) in document()["paths"].as_object().unwrap() {
        let path: String = template.split('/').map(|s| if s.starts_with('{') { id.as_str() } else { s }).collect::<Vec<_>>().join("/");
        for (method, op) in item.as_object().unwrap() {
            let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let resp = app.http.request(m, format!("{}{path}", app.base)).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {template} is documented but not routed");
            assert_ne!(body, serde_json::json!({"detail": "Not Found"}), "{method} {template} is documented but not routed");
            let authenticated = op.get("security").is_none_or(|s| s.as_array().unwrap().iter().any(|r| r != &serde_json::json!({})));
            if authenticated {
                assert_eq!(status, 401, "{method} {template} without a key: {body}");
            }
            assert_documented(&method.to_ascii_uppercase(), &path, status, &body);
            n += 1;
        }
    }
    assert!(n >= 43, "only {n} operations");
    let (status, body) = app.get(None, "/api/v1/analytics/not-an-endpoint").await;
    assert_eq!((status, body), (404, serde_json::json!({"detail": "Not Found"})));
    app.drop_db().await;
}
