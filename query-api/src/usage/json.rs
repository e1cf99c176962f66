//! Exact amounts in JSON, and the RateLimit headers.
//!
//! The Genlobe shapes carry dollars as JSON numbers (`"current": 23.50`).
//! Going through `f64` would be inexact for large sums, and serde_json
//! without `arbitrary_precision` cannot print a decimal verbatim. So usage
//! responses are written with [`ExactFormatter`]: an [`Amount::Micros`]
//! serializes as an `i128` of micro-units, and the formatter prints every
//! `i128` as the exact decimal (`23500000` -> `23.5`). Counts serialize as
//! `i64` and are untouched. Responses written this way must not contain
//! other `i128` values.

use std::io;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};

use super::engine::LimitCheck;
use super::limits::Metric;

/// A figure in a usage response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(i128),
    Micros(i128),
    Unlimited,
}

impl Amount {
    /// An amount of `metric` in its unit.
    pub fn of(metric: Metric, units: i128) -> Amount {
        if metric == Metric::CostUsd {
            Amount::Micros(units)
        } else {
            Amount::Count(units)
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Amount::Count(n) => s.serialize_i64(i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })),
            Amount::Micros(n) => s.serialize_i128(n),
            Amount::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

/// In the OpenAPI document: a number (exact decimal for money), or the
/// string `unlimited` when no limit applies.
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["unlimited"])))
            .description(Some("A count, an exact dollar amount, or `unlimited`"))
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

/// An amount to spend in a request body: a JSON number above 0 or a
/// decimal string.
pub fn amount_schema() -> utoipa::openapi::Schema {
    decimal_schema(ObjectBuilder::new().schema_type(Type::Number).exclusive_minimum(Some(0f64)))
}

/// A limit's `max_value`: a JSON number 0 ≤ n < 10^18 or a decimal string.
pub fn max_value_schema() -> utoipa::openapi::Schema {
    decimal_schema(ObjectBuilder::new().schema_type(Type::Number).minimum(Some(0f64)).exclusive_maximum(Some(1e18)))
}

/// `number` or a string (decimal strings are checked by the handler).
fn decimal_schema(number: ObjectBuilder) -> utoipa::openapi::Schema {
    OneOfBuilder::new().item(number).item(ObjectBuilder::new().schema_type(Type::String)).into()
}

/// Micro-units as exact decimal text, without trailing zeros.
pub fn micros_text(n: i128) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let a = n.unsigned_abs();
    let (int, frac) = (a / 1_000_000, a % 1_000_000);
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let f = format!("{frac:06}");
        format!("{sign}{int}.{}", f.trim_end_matches('0'))
    }
}

/// serde_json formatter printing `i128` values as micro-unit decimals.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExactFormatter;

impl serde_json::ser::Formatter for ExactFormatter {
    fn write_i128<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i128) -> io::Result<()> {
        writer.write_all(micros_text(value).as_bytes())
    }
}

/// JSON written with [`ExactFormatter`].
pub fn exact_bytes<T: Serialize>(body: &T) -> Result<Vec<u8>, crate::error::ApiError> {
    let mut buf = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, ExactFormatter);
    body.serialize(&mut ser).map_err(|e| crate::error::ApiError::Internal(format!("serializing response: {e}")))?;
    Ok(buf)
}

/// A JSON response written with [`ExactFormatter`].
pub fn exact_json<T: Serialize>(status: StatusCode, headers: HeaderMap, body: &T) -> Response {
    let mut buf = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, ExactFormatter);
    if let Err(e) = body.serialize(&mut ser) {
        return crate::error::ApiError::Internal(format!("serializing response: {e}")).into_response();
    }
    let mut resp = (status, headers, buf).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-09,
/// structured fields): one list item per applicable limit, the deciding one
/// first. `q` / `r` are in the metric's unit, micro-dollars for `cost_usd`
/// (the draft requires integers; `qu` says the unit), `w` is the period in
/// seconds and `t` the seconds until it resets.
pub fn ratelimit_headers(checks: &[LimitCheck], now: DateTime<Utc>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if checks.is_empty() {
        return h;
    }
    let mut policy = Vec::new();
    let mut state = Vec::new();
    for c in checks {
        let name = format!("{}-{}-{}", c.limit.subject.kind(), c.limit.metric.as_str(), &c.limit.limit_id.simple().to_string()[..8]);
        let unit = if c.limit.metric == Metric::CostUsd { "usd-micros" } else { c.limit.metric.as_str() };
        policy.push(format!("\"{name}\";q={};qu=\"{unit}\";w={}", c.limit.max_units, c.window.seconds()));
        let t = (c.resets_at - now).num_milliseconds().max(0);
        state.push(format!("\"{name}\";r={};t={}", c.remaining, (t + 999) / 1000));
    }
    if let Ok(v) = HeaderValue::from_str(&policy.join(", ")) {
        h.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.join(", ")) {
        h.insert("ratelimit", v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_printed_exactly() {
        assert_eq!(micros_text(23_500_000), "23.5");
        assert_eq!(micros_text(0), "0");
        assert_eq!(micros_text(-1), "-0.000001");
        assert_eq!(micros_text(123_456_789_012_345_678_901_234_567), "123456789012345678901.234567");
        let v = serde_json::json!(null);
        let _ = v;
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, ExactFormatter);
        #[derive(Serialize)]
        struct B {
            a: Amount,
            b: Amount,
            c: Amount,
        }
        B { a: Amount::Micros(12_345_600), b: Amount::Count(7), c: Amount::Unlimited }.serialize(&mut ser).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), r#"{"a":12.3456,"b":7,"c":"unlimited"}"#);
    }
}
