//! Reads typed fields out of a JSON object, turning the first problem into a
//! [`Rejection`] that names the field. Absent and `null` are the same thing
//! for optional fields.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;
use uuid::Uuid;

use super::rejection::{Rejection, RejectionKind};
use super::{MAX_EVENT_BYTES, MAX_FUTURE_SKEW_MS};

/// The JSON object of one message.
pub(crate) struct Fields {
    map: Map<String, Value>,
}

type Result<T> = std::result::Result<T, Rejection>;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new(RejectionKind::WrongType, field, format!("expected {expected}, got {}", json_type(got)))
}

fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::InvalidValue, field, message)
}

impl Fields {
    /// Parses the message bytes into an object.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Rejection::new(
                RejectionKind::TooLarge,
                "",
                format!("message is {} bytes, the limit is {MAX_EVENT_BYTES}", bytes.len()),
            ));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self { map }),
            Ok(other) => Err(Rejection::new(RejectionKind::InvalidJson, "", format!("expected a JSON object, got {}", json_type(&other)))),
            Err(e) => Err(Rejection::new(RejectionKind::InvalidJson, "", format!("not valid JSON: {e}"))),
        }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn required<'a>(&'a self, field: &str) -> Result<&'a Value> {
        self.get(field).ok_or_else(|| Rejection::new(RejectionKind::MissingField, field, "required field is missing"))
    }

    pub fn uuid(&self, field: &str) -> Result<Uuid> {
        parse_uuid(field, self.required(field)?)
    }

    pub fn opt_uuid(&self, field: &str) -> Result<Option<Uuid>> {
        self.get(field).map(|v| parse_uuid(field, v)).transpose()
    }

    pub fn string(&self, field: &str, max_bytes: usize) -> Result<String> {
        let s = parse_string(field, self.required(field)?, max_bytes)?;
        if s.trim().is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        Ok(s)
    }

    pub fn opt_string(&self, field: &str, max_bytes: usize) -> Result<Option<String>> {
        self.get(field).map(|v| parse_string(field, v, max_bytes)).transpose()
    }

    /// An optional string cut to at most `max_bytes` bytes at the last
    /// UTF-8 character boundary (for content that must not cost the event).
    pub fn opt_truncated_string(&self, field: &str, max_bytes: usize) -> Result<Option<String>> {
        self.get(field)
            .map(|v| match v {
                Value::String(s) => {
                    let mut end = s.len().min(max_bytes);
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    Ok(s[..end].to_owned())
                }
                other => Err(wrong_type(field, "a string", other)),
            })
            .transpose()
    }

    pub fn bool(&self, field: &str) -> Result<bool> {
        parse_bool(field, self.required(field)?)
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        self.get(field).map(|v| parse_bool(field, v)).transpose()
    }

    /// A finite, non-negative number.
    pub fn non_negative(&self, field: &str) -> Result<f64> {
        parse_non_negative(field, self.required(field)?)
    }

    pub fn opt_non_negative(&self, field: &str) -> Result<Option<f64>> {
        self.get(field).map(|v| parse_non_negative(field, v)).transpose()
    }

    /// A non-negative integer that fits in `u64`.
    pub fn opt_count(&self, field: &str) -> Result<Option<u64>> {
        self.get(field)
            .map(|v| match v {
                Value::Number(n) => n.as_u64().ok_or_else(|| invalid(field, format!("must be a non-negative integer, got {n}"))),
                other => Err(wrong_type(field, "a non-negative integer", other)),
            })
            .transpose()
    }

    pub fn opt_vocabulary<T>(&self, field: &str, parse: fn(&str) -> Option<T>, expected: &str) -> Result<Option<T>> {
        self.get(field)
            .map(|v| match v {
                Value::String(s) => parse(s).ok_or_else(|| invalid(field, format!("`{s}` is not one of {expected}"))),
                other => Err(wrong_type(field, "a string", other)),
            })
            .transpose()
    }

    /// A money amount with at most 6 decimal places, never negative. Strings
    /// are read exactly; JSON numbers are read from their shortest decimal
    /// form, which is exact up to 15 significant digits.
    pub fn opt_money(&self, field: &str) -> Result<Option<Decimal>> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let amount = match v {
            Value::String(s) => Decimal::from_str(s.trim()).map_err(|_| invalid(field, format!("`{s}` is not a decimal number")))?,
            Value::Number(n) => {
                let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| invalid(field, "not a finite number"))?;
                Decimal::from_str(&format!("{f}"))
                    .or_else(|_| Decimal::from_scientific(&format!("{f:e}")))
                    .map_err(|_| invalid(field, format!("{n} cannot be represented as a decimal")))?
            }
            other => return Err(wrong_type(field, "a decimal string or number", other)),
        };
        let amount = amount.normalize();
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(invalid(field, "must not be negative"));
        }
        if amount.scale() > 6 {
            return Err(invalid(field, "has more than 6 decimal places"));
        }
        // Decimal(18, 6) in ClickHouse holds up to 10^12 - 1 before the point.
        if amount >= Decimal::from(1_000_000_000_000i64) {
            return Err(invalid(field, "is larger than 999999999999.999999"));
        }
        Ok(Some(amount))
    }

    /// `occurred_at`: RFC 3339 with an offset, or epoch milliseconds;
    /// truncated to milliseconds, no more than an hour ahead of `now`.
    pub fn timestamp(&self, field: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let at = match self.required(field)? {
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| invalid(field, format!("`{s}` is not an RFC 3339 timestamp with offset: {e}")))?
                .with_timezone(&Utc),
            Value::Number(n) => {
                let ms = n.as_i64().ok_or_else(|| invalid(field, format!("epoch milliseconds must be an integer, got {n}")))?;
                Utc.timestamp_millis_opt(ms).single().ok_or_else(|| invalid(field, "epoch milliseconds out of range"))?
            }
            other => return Err(wrong_type(field, "an RFC 3339 string or epoch milliseconds", other)),
        };
        let ms = at.timestamp_millis();
        if ms < 0 {
            return Err(invalid(field, "is before 1970-01-01"));
        }
        if ms > now.timestamp_millis() + MAX_FUTURE_SKEW_MS {
            return Err(invalid(field, "is more than 1 h in the future"));
        }
        Ok(Utc.timestamp_millis_opt(ms).single().expect("in range"))
    }
}

fn parse_uuid(field: &str, v: &Value) -> Result<Uuid> {
    match v {
        Value::String(s) => Uuid::parse_str(s).map_err(|_| invalid(field, format!("`{}` is not a UUID", truncate(s)))),
        other => Err(wrong_type(field, "a UUID string", other)),
    }
}

fn parse_string(field: &str, v: &Value, max_bytes: usize) -> Result<String> {
    match v {
        Value::String(s) if s.len() > max_bytes => Err(invalid(field, format!("is {} bytes long, the limit is {max_bytes}", s.len()))),
        Value::String(s) => Ok(s.clone()),
        other => Err(wrong_type(field, "a string", other)),
    }
}

fn parse_bool(field: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong_type(field, "a boolean", other)),
    }
}

fn parse_non_negative(field: &str, v: &Value) -> Result<f64> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| invalid(field, "not a finite number"))?;
            if f < 0.0 {
                Err(invalid(field, format!("must not be negative, got {n}")))
            } else {
                Ok(f)
            }
        }
        other => Err(wrong_type(field, "a number", other)),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
