//! Encodes a row in ClickHouse's `RowBinary` format when its message is
//! parsed, so that a batch holds each row as the bytes its INSERT sends:
//! about a third of the message and half of the parsed struct with its
//! strings (docs/ingest.md, "Batches in memory"). Bigger batches then fit
//! in the same memory, and ClickHouse's cost per INSERT (a part in the raw
//! table and in every rollup) is paid for more rows.
//!
//! The `clickhouse` crate serializes rows the same way inside `Insert`, but
//! does not expose its serializer; this one follows the row's serde
//! implementation (the same `#[serde(with = "clickhouse::serde::...")]`
//! attributes), so a column added to a row type is encoded without a change
//! here. What a raw-table row uses is supported: integers, floats, `bool`,
//! strings and bytes (LEB128 length + bytes), `Option` (`Nullable`: a 0/1
//! byte, then the value), tuples and structs (fields in order), sequences
//! with a known length (`Array`). Anything else is an error.
//! `rows_decode_as_the_crate_encodes` (tests/it/row_binary.rs) checks the
//! result against the crate's own decoder.

use serde::ser::{self, Impossible, Serialize};

/// A type a row cannot be encoded with (a bug in the row type).
#[derive(Debug, thiserror::Error)]
#[error("RowBinary encoding: {0}")]
pub struct EncodeError(String);

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Appends `row` to `out` as one `RowBinary` row.
pub fn encode<T: Serialize + ?Sized>(row: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    row.serialize(&mut Encoder { out })
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    fn leb128(&mut self, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.out.push(byte);
                return;
            }
            self.out.push(byte | 0x80);
        }
    }

    fn unsupported(what: &str) -> EncodeError {
        EncodeError(format!("{what} is not a RowBinary column type"))
    }
}

macro_rules! little_endian {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<(), EncodeError> {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        })*
    };
}

impl ser::Serializer for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<(), EncodeError>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    little_endian!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64,
    );

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.out.push(u8::from(v));
        Ok(())
    }

    fn serialize_char(self, _: char) -> Result<(), EncodeError> {
        Err(Encoder::unsupported("char"))
    }

    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.serialize_bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.leb128(v.len() as u64);
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), EncodeError> {
        self.out.push(1);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.out.push(0);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), EncodeError> {
        Err(Encoder::unsupported("()"))
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<(), EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn serialize_unit_variant(self, name: &'static str, _: u32, _: &'static str) -> Result<(), EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or_else(|| Encoder::unsupported("a sequence of unknown length"))?;
        self.leb128(len as u64);
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Err(Encoder::unsupported("a map"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(Encoder::unsupported(name))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), EncodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out).unwrap();
        out
    }

    #[test]
    fn scalars_are_little_endian_and_strings_length_prefixed() {
        assert_eq!(bytes(&(1u32, -2i64, true)), [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(bytes(&1.5f64), 1.5f64.to_le_bytes());
        assert_eq!(bytes(&"ab"), [2, b'a', b'b']);
        // LEB128: 300 = 0b1_0010_1100 -> 0xac 0x02.
        let long = "x".repeat(300);
        assert_eq!(bytes(&long.as_str())[..2], [0xac, 0x02]);
        assert_eq!(bytes(&long.as_str()).len(), 302);
    }

    #[test]
    fn nullable_is_a_flag_then_the_value() {
        assert_eq!(bytes(&None::<f64>), [1]);
        let mut some = vec![0];
        some.extend_from_slice(&2.0f64.to_le_bytes());
        assert_eq!(bytes(&Some(2.0f64)), some);
    }

    #[test]
    fn arrays_carry_their_length_and_maps_are_refused() {
        assert_eq!(bytes(&vec![7u8, 8]), [2, 7, 8]);
        let mut out = Vec::new();
        assert!(encode(&std::collections::BTreeMap::from([(1u8, 2u8)]), &mut out).is_err());
        assert!(encode(&'c', &mut out).is_err());
    }
}
