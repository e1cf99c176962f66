//! Validation of responses against the Caylex OpenAPI component schemas.
//!
//! The document is loaded from `shared/spec/caylex-openapi.json` beside the
//! repository; `$ref`s to `#/components/schemas/*` are inlined (the
//! analytics schemas are not recursive). One flattening artefact of the
//! source (`"additionalProperties": "true"`, a string) is read as `true`.

use std::sync::OnceLock;

use serde_json::Value;

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/caylex-openapi.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    })
}

fn inline(v: &Value, depth: usize) -> Value {
    assert!(depth < 32, "schema nesting too deep (recursive $ref?)");
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
                let mut target = inline(&document()["components"]["schemas"][name], depth + 1);
                // Sibling keywords of $ref (description, default) are annotations.
                if let Value::Object(t) = &mut target {
                    for (k, val) in m {
                        if k != "$ref" && !t.contains_key(k) {
                            t.insert(k.clone(), inline(val, depth + 1));
                        }
                    }
                }
                return target;
            }
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let val = if k == "additionalProperties" && *val == Value::String("true".into()) {
                    Value::Bool(true)
                } else {
                    inline(val, depth + 1)
                };
                out.insert(k.clone(), val);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| inline(x, depth + 1)).collect()),
        other => other.clone(),
    }
}

/// Panics with every violation if `instance` does not match the component
/// schema `name`.
pub fn assert_valid(name: &str, instance: &Value) {
    let raw = &document()["components"]["schemas"][name];
    assert!(!raw.is_null(), "no schema {name}");
    let schema = inline(raw, 0);
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "response does not match {name}: {errors:#?}\n{instance:#}");
}
