//! The encoder: what Go's `gob.Encoder` writes for scalars and structs of scalars/structs.
//!
//! Byte-for-byte agreement with Go matters less for the peer (any valid gob decodes) than for
//! testing: golden vectors from a real Go process can then be compared exactly. So the
//! encoder follows Go's choices: type ids are assigned from 64 in pre-order (a struct before
//! its field types), definitions are sent in that same order before first use, zero fields are
//! omitted but nested structs are always sent.

use std::collections::HashMap;

use crate::decode::{BOOL, BYTES, COMPLEX, FIRST_USER_ID, FLOAT, INT, STRING, UINT};
use crate::wire::{float_to_uint, put_counted, put_int, put_uint};
use crate::{Error, Struct, Value};

/// A struct type's identity: its name, field names and field types. Two values with the same
/// shape share one definition per stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Shape {
    name: String,
    fields: Vec<(String, FieldType)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FieldType {
    Builtin(i64),
    Struct(Shape),
}

/// Encoding state for one stream direction: sends each type definition once, before first use.
#[derive(Debug)]
pub struct Encoder {
    next_id: i64,
    defined: HashMap<Shape, i64>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// First user type id 64, like a fresh Go >= 1.21 process.
    pub fn new() -> Self {
        Self {
            next_id: FIRST_USER_ID,
            defined: HashMap::new(),
        }
    }

    /// Appends the length-prefixed messages for `value` (any needed type definitions first,
    /// each in its own message, then the value) to `out`.
    ///
    /// Supported: Bool, Int, Uint, Float, Complex, Bytes, String, and Struct whose fields are
    /// those or nested Structs. Anything else is [`Error::Unsupported`], detected before
    /// anything is written or remembered, so a failed call leaves `out` and `self` unchanged.
    pub fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut payload = Vec::new();
        if let Value::Struct(s) = value {
            let shape = shape_of(s)?;
            let mut new = Vec::new();
            self.assign_ids(&shape, &mut new);
            for shape in &new {
                payload.clear();
                self.put_definition(shape, &mut payload);
                put_message(out, &payload);
            }
            payload.clear();
            put_int(&mut payload, self.defined[&shape]);
            self.put_struct(s, &shape, &mut payload);
        } else {
            let id = builtin_id(value)
                .ok_or_else(|| Error::Unsupported(format!("a top-level {} value", value.kind())))?;
            put_int(&mut payload, id);
            // A singleton's value follows a zero field delta, and is sent even when zero.
            payload.push(0);
            put_scalar(value, &mut payload);
        }
        put_message(out, &payload);
        Ok(())
    }

    /// Gives ids to `shape` and the struct types of its fields that this stream has not seen,
    /// in Go's order (pre-order), collecting the new ones in definition order.
    fn assign_ids(&mut self, shape: &Shape, new: &mut Vec<Shape>) {
        if self.defined.contains_key(shape) {
            return;
        }
        self.defined.insert(shape.clone(), self.next_id);
        self.next_id += 1;
        new.push(shape.clone());
        for (_, field_type) in &shape.fields {
            if let FieldType::Struct(inner) = field_type {
                self.assign_ids(inner, new);
            }
        }
    }

    fn type_id(&self, field_type: &FieldType) -> i64 {
        match field_type {
            FieldType::Builtin(id) => *id,
            FieldType::Struct(shape) => self.defined[shape],
        }
    }

    /// `int(-id)` and the `wireType{StructT: &structType{CommonType{Name, Id}, Field}}` value.
    fn put_definition(&self, shape: &Shape, out: &mut Vec<u8>) {
        let id = self.defined[shape];
        put_int(out, -id);
        put_uint(out, 3); // wireType field 2, StructT
        put_uint(out, 1); // structType field 0, CommonType
        let id_delta = if shape.name.is_empty() {
            2
        } else {
            put_uint(out, 1);
            put_counted(out, shape.name.as_bytes());
            1
        };
        put_uint(out, id_delta);
        put_int(out, id);
        out.push(0); // end of CommonType
        if !shape.fields.is_empty() {
            put_uint(out, 1); // structType field 1, Field
            put_uint(out, shape.fields.len() as u64);
            for (name, field_type) in &shape.fields {
                put_uint(out, 1);
                put_counted(out, name.as_bytes());
                put_uint(out, 1);
                put_int(out, self.type_id(field_type));
                out.push(0);
            }
        }
        out.push(0); // end of structType
        out.push(0); // end of wireType
    }

    fn put_struct(&self, value: &Struct, shape: &Shape, out: &mut Vec<u8>) {
        let mut last: i64 = -1;
        for (index, ((_, field), (_, field_type))) in
            value.fields.iter().zip(&shape.fields).enumerate()
        {
            let index = index as i64;
            match (field, field_type) {
                (Value::Struct(inner), FieldType::Struct(inner_shape)) => {
                    put_uint(out, (index - last) as u64);
                    self.put_struct(inner, inner_shape, out);
                }
                _ if is_zero(field) => continue,
                _ => {
                    put_uint(out, (index - last) as u64);
                    put_scalar(field, out);
                }
            }
            last = index;
        }
        out.push(0);
    }
}

/// What [`Encoder::encode`] writes for a top-level `Value::Bytes` of `len` bytes, up to the
/// bytes themselves: a caller can then write a large byte slice (a plugin's reply) straight
/// from its own buffer instead of copying it into the message. A `[]byte` needs no type
/// definition, so this does not depend on the encoder's state.
pub fn bytes_message_prefix(len: usize, out: &mut Vec<u8>) {
    let mut head = Vec::with_capacity(12);
    put_int(&mut head, BYTES);
    head.push(0);
    put_uint(&mut head, len as u64);
    put_uint(out, (head.len() + len) as u64);
    out.extend_from_slice(&head);
}

fn put_message(out: &mut Vec<u8>, payload: &[u8]) {
    put_uint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn builtin_id(value: &Value) -> Option<i64> {
    Some(match value {
        Value::Bool(_) => BOOL,
        Value::Int(_) => INT,
        Value::Uint(_) => UINT,
        Value::Float(_) => FLOAT,
        Value::Complex(..) => COMPLEX,
        Value::Bytes(_) => BYTES,
        Value::String(_) => STRING,
        _ => return None,
    })
}

/// Go omits these struct fields (`encOpFor`'s "if x != 0 || state.sendZero"); note that
/// -0.0 counts as zero and NaN does not, as in Go.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Uint(u) => *u == 0,
        Value::Float(f) => *f == 0.0,
        Value::Complex(re, im) => *re == 0.0 && *im == 0.0,
        Value::Bytes(b) => b.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Only called for values [`builtin_id`] accepts.
fn put_scalar(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => put_uint(out, u64::from(*b)),
        Value::Int(i) => put_int(out, *i),
        Value::Uint(u) => put_uint(out, *u),
        Value::Float(f) => put_uint(out, float_to_uint(*f)),
        Value::Complex(re, im) => {
            put_uint(out, float_to_uint(*re));
            put_uint(out, float_to_uint(*im));
        }
        Value::Bytes(b) => put_counted(out, b),
        Value::String(s) => put_counted(out, s.as_bytes()),
        _ => {}
    }
}

/// The shape of a struct value, refusing what this encoder cannot express.
fn shape_of(value: &Struct) -> Result<Shape, Error> {
    let mut fields: Vec<(String, FieldType)> = Vec::with_capacity(value.fields.len());
    for (name, field) in &value.fields {
        if name.is_empty() {
            return Err(Error::Unsupported(format!(
                "an unnamed field in struct {:?}",
                value.name
            )));
        }
        if fields.iter().any(|(n, _)| n == name) {
            return Err(Error::Unsupported(format!(
                "field {name:?} twice in struct {:?}",
                value.name
            )));
        }
        let field_type = match field {
            Value::Struct(inner) => FieldType::Struct(shape_of(inner)?),
            other => FieldType::Builtin(builtin_id(other).ok_or_else(|| {
                Error::Unsupported(format!(
                    "field {name:?} of struct {:?}: {} values",
                    value.name,
                    other.kind()
                ))
            })?),
        };
        fields.push((name.clone(), field_type));
    }
    Ok(Shape {
        name: value.name.clone(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_prefix_is_what_the_encoder_writes_before_the_bytes() {
        for len in [0, 1, 119, 120, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let bytes = vec![7u8; len];
            let mut expected = Vec::new();
            Encoder::new()
                .encode(&Value::Bytes(bytes.clone()), &mut expected)
                .unwrap();
            let mut got = Vec::new();
            bytes_message_prefix(len, &mut got);
            got.extend_from_slice(&bytes);
            assert_eq!(got, expected, "length {len}");
        }
    }

    #[test]
    fn unsupported_values_leave_the_encoder_untouched() {
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        let bad = Value::Struct(Struct {
            name: "T".into(),
            fields: vec![
                (
                    "A".into(),
                    Value::Struct(Struct {
                        name: "Inner".into(),
                        fields: vec![],
                    }),
                ),
                ("B".into(), Value::Slice(vec![])),
            ],
        });
        assert!(matches!(
            enc.encode(&bad, &mut out),
            Err(Error::Unsupported(_))
        ));
        assert!(out.is_empty());
        assert!(enc.defined.is_empty());
        assert!(matches!(
            enc.encode(&Value::Map(vec![]), &mut out),
            Err(Error::Unsupported(_))
        ));
        let dup = Value::Struct(Struct {
            name: "T".into(),
            fields: vec![("A".into(), Value::Int(1)), ("A".into(), Value::Int(2))],
        });
        assert!(matches!(
            enc.encode(&dup, &mut out),
            Err(Error::Unsupported(_))
        ));
        assert_eq!(enc.next_id, FIRST_USER_ID);
    }

    #[test]
    fn nested_struct_types_get_ids_in_pre_order_and_are_defined_once() {
        let inner = |v| {
            Value::Struct(Struct {
                name: "In".into(),
                fields: vec![("X".into(), Value::Int(v))],
            })
        };
        let outer = Value::Struct(Struct {
            name: "Out".into(),
            fields: vec![("A".into(), inner(0)), ("B".into(), inner(1))],
        });
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        enc.encode(&outer, &mut out).unwrap();
        let out_id = enc
            .defined
            .iter()
            .find(|(s, _)| s.name == "Out")
            .map(|(_, id)| *id);
        let in_id = enc
            .defined
            .iter()
            .find(|(s, _)| s.name == "In")
            .map(|(_, id)| *id);
        assert_eq!((out_id, in_id), (Some(64), Some(65)));
        // Second use: the value message only. Both nested structs are sent, even the zero one.
        let mut again = Vec::new();
        enc.encode(&outer, &mut again).unwrap();
        assert_eq!(
            again,
            [0x09, 0xff, 0x80, 0x01, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00]
        );
    }
}
