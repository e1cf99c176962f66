//! Reading OTLP attributes: a span's own attributes first, then its
//! resource's (the DESIGN rule "span attribute wins over resource
//! attribute"), with the value types OTLP allows turned into the few the
//! mapping needs. Attribute lists are short (tens of entries), so a linear
//! scan beats building a map per span.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The attributes visible to one span.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    pub span: &'a [KeyValue],
    pub resource: &'a [KeyValue],
}

fn find<'a>(list: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    list.iter().rev().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

impl<'a> Attributes<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        find(self.span, key).or_else(|| find(self.resource, key))
    }

    /// The value as text: strings as they are, numbers and booleans printed.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::DoubleValue(d) => Some(d.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The first of `keys` that is present, as text.
    pub fn first_text(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.text(k))
    }

    /// The value as a JSON value for the event parser, which then applies
    /// its own type and range checks (a string token count is a wrong type
    /// there, as in a JSON event).
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        Some(match self.get(key)? {
            Value::StringValue(s) => serde_json::Value::from(s.as_str()),
            Value::IntValue(i) => serde_json::Value::from(*i),
            Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::BoolValue(b) => serde_json::Value::from(*b),
            _ => return None,
        })
    }

    /// The first of `keys` that is present, as JSON.
    pub fn first_json(&self, keys: &[&str]) -> Option<serde_json::Value> {
        keys.iter().find_map(|k| self.json(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    #[test]
    fn span_wins_over_resource() {
        let span = [kv("agentmeter.tenant_id", Value::StringValue("span".into()))];
        let resource = [kv("agentmeter.tenant_id", Value::StringValue("res".into())), kv("enduser.id", Value::IntValue(7))];
        let a = Attributes { span: &span, resource: &resource };
        assert_eq!(a.text("agentmeter.tenant_id").as_deref(), Some("span"));
        assert_eq!(a.text("enduser.id").as_deref(), Some("7"));
        assert_eq!(a.first_json(&["missing", "enduser.id"]), Some(serde_json::json!(7)));
        assert_eq!(a.text("missing"), None);
    }
}
