//! Reads typed fields out of a JSON object, turning the first problem into a
//! [`Rejection`] that names the field. Absent and `null` are the same thing
//! for optional fields.
//!
//! The message is read in one pass straight from its bytes into a short list
//! of `(key, value)` pairs of the top-level object ([`Json`]): strings are
//! borrowed from the message unless they contain escapes, numbers are kept
//! as [`serde_json::Number`], and nested arrays and objects are walked (so
//! they are still validated, depth-limited by serde_json's recursion limit)
//! but only their type is kept. No `serde_json::Value` tree and no key
//! `String`s are built, which was a third of the worker's CPU. The outcome
//! is the same as reading a `serde_json::Value` first: the same JSON is
//! refused with the same message, a repeated key keeps its last value, and
//! unknown fields are ignored.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::str::FromStr;
use uuid::Uuid;

use super::rejection::{Rejection, RejectionKind};
use super::{MAX_EVENT_BYTES, MAX_FUTURE_SKEW_MS};

/// A top-level field's value: scalars as read, containers by type only.
#[derive(Debug)]
enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array,
    Object,
}

/// The top-level fields of one message, in the order read.
pub(crate) struct Fields<'a> {
    pairs: Vec<(Cow<'a, str>, Json<'a>)>,
}

type Result<T> = std::result::Result<T, Rejection>;

fn json_type(v: &Json<'_>) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array => "an array",
        Json::Object => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, got: &Json<'_>) -> Rejection {
    Rejection::new(RejectionKind::WrongType, field, format!("expected {expected}, got {}", json_type(got)))
}

fn invalid(field: &str, message: impl Into<String>) -> Rejection {
    Rejection::new(RejectionKind::InvalidValue, field, message)
}

impl<'a> Fields<'a> {
    /// Parses the message bytes into an object.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Rejection::new(
                RejectionKind::TooLarge,
                "",
                format!("message is {} bytes, the limit is {MAX_EVENT_BYTES}", bytes.len()),
            ));
        }
        let top = match std::str::from_utf8(bytes) {
            Ok(text) => read_top(serde_json::Deserializer::from_str(text)),
            Err(_) => read_top(serde_json::Deserializer::from_slice(bytes)),
        };
        match top {
            Ok(Top::Object(pairs)) => Ok(Self { pairs }),
            Ok(Top::Other(other)) => {
                Err(Rejection::new(RejectionKind::InvalidJson, "", format!("expected a JSON object, got {}", json_type(&other))))
            }
            Err(e) => Err(Rejection::new(RejectionKind::InvalidJson, "", format!("not valid JSON: {e}"))),
        }
    }

    /// The value of `field` (the last one if the key is repeated), unless
    /// absent or `null`.
    fn get(&self, field: &str) -> Option<&Json<'a>> {
        self.pairs.iter().rev().find(|(key, _)| key == field).map(|(_, v)| v).filter(|v| !matches!(v, Json::Null))
    }

    fn required(&self, field: &str) -> Result<&Json<'a>> {
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
                Json::String(s) => {
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
                Json::Number(n) => n.as_u64().ok_or_else(|| invalid(field, format!("must be a non-negative integer, got {n}"))),
                other => Err(wrong_type(field, "a non-negative integer", other)),
            })
            .transpose()
    }

    pub fn opt_vocabulary<T>(&self, field: &str, parse: fn(&str) -> Option<T>, expected: fn() -> String) -> Result<Option<T>> {
        self.get(field)
            .map(|v| match v {
                Json::String(s) => parse(s).ok_or_else(|| invalid(field, format!("`{s}` is not one of {}", expected()))),
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
            Json::String(s) => Decimal::from_str(s.trim()).map_err(|_| invalid(field, format!("`{s}` is not a decimal number")))?,
            Json::Number(n) => {
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
            Json::String(s) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| invalid(field, format!("`{s}` is not an RFC 3339 timestamp with offset: {e}")))?
                .with_timezone(&Utc),
            Json::Number(n) => {
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

fn parse_uuid(field: &str, v: &Json<'_>) -> Result<Uuid> {
    match v {
        Json::String(s) => Uuid::parse_str(s).map_err(|_| invalid(field, format!("`{}` is not a UUID", truncate(s)))),
        other => Err(wrong_type(field, "a UUID string", other)),
    }
}

fn parse_string(field: &str, v: &Json<'_>, max_bytes: usize) -> Result<String> {
    match v {
        Json::String(s) if s.len() > max_bytes => Err(invalid(field, format!("is {} bytes long, the limit is {max_bytes}", s.len()))),
        Json::String(s) => Ok(s.clone().into_owned()),
        other => Err(wrong_type(field, "a string", other)),
    }
}

fn parse_bool(field: &str, v: &Json<'_>) -> Result<bool> {
    match v {
        Json::Bool(b) => Ok(*b),
        other => Err(wrong_type(field, "a boolean", other)),
    }
}

fn parse_non_negative(field: &str, v: &Json<'_>) -> Result<f64> {
    match v {
        Json::Number(n) => {
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

/// Reads one top-level value and checks that nothing follows it.
///
/// A message that is valid UTF-8 (every well-formed one) is read as text:
/// its UTF-8 is checked once, in one pass over the whole message, where
/// reading bytes checks each key and string value on its own (a sixth of
/// the parse: 1.48 against 1.25 µs per benchmark event). A message that is
/// not is read as bytes, so the rejection names the position serde_json
/// finds there, as before.
fn read_top<'a, R: serde_json::de::Read<'a>>(mut de: serde_json::Deserializer<R>) -> serde_json::Result<Top<'a>> {
    let top = de.deserialize_any(TopVisitor)?;
    de.end()?;
    Ok(top)
}

/// The whole message: an object's fields, or the type of anything else.
enum Top<'a> {
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
    Other(Json<'a>),
}

/// Reads the top-level value; only an object keeps its fields.
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(32);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            pairs.push((key, map.next_value_seed(JsonSeed)?));
        }
        Ok(Top::Object(pairs))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        JsonVisitor.visit_seq(seq).map(Top::Other)
    }

    fn visit_bool<E>(self, b: bool) -> std::result::Result<Self::Value, E> {
        Ok(Top::Other(Json::Bool(b)))
    }

    fn visit_u64<E>(self, n: u64) -> std::result::Result<Self::Value, E> {
        Ok(Top::Other(Json::Number(n.into())))
    }

    fn visit_i64<E>(self, n: i64) -> std::result::Result<Self::Value, E> {
        Ok(Top::Other(Json::Number(n.into())))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> std::result::Result<Self::Value, E> {
        JsonVisitor.visit_f64(n).map(Top::Other)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(Top::Other(Json::String(Cow::Borrowed(""))))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(Top::Other(Json::Null))
    }
}

/// An object key, borrowed unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// One value: scalars kept, containers walked through `deserialize_any`
/// (never `deserialize_ignored_any`, which skips without checking number
/// ranges or the nesting limit) and kept as their type only.
struct JsonSeed;

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> std::result::Result<Self::Value, E> {
        Ok(Json::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> std::result::Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_i64<E>(self, n: i64) -> std::result::Result<Self::Value, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> std::result::Result<Self::Value, E> {
        // As serde_json::Value does: a non-finite float would be null (the
        // JSON reader never produces one).
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element_seed(JsonSeed)?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        while map.next_key_seed(KeySeed)?.is_some() {
            map.next_value_seed(JsonSeed)?;
        }
        Ok(Json::Object)
    }
}
