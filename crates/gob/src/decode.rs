//! The decoder: a per-stream table of type definitions and a recursive reader of values.
//!
//! Go's decoder compiles a decoding engine per (wire type, local type) pair; we have no local
//! types, so every value is read generically into [`Value`] by walking the sender's wire
//! definition. The walk is bounded three ways: each composite value consumes at least one
//! byte, every count is checked against the bytes left before it is believed, and nesting
//! stops at [`Limits::max_depth`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::wire::{Msg, uint_to_float};
use crate::{Error, Limits, Struct, Value};

pub(crate) const BOOL: i64 = 1;
pub(crate) const INT: i64 = 2;
pub(crate) const UINT: i64 = 3;
pub(crate) const FLOAT: i64 = 4;
pub(crate) const BYTES: i64 = 5;
pub(crate) const STRING: i64 = 6;
pub(crate) const COMPLEX: i64 = 7;
const INTERFACE: i64 = 8;
const WIRE_TYPE: i64 = 16;
/// Go's first id for user types (`firstUserId`); lower ids are predefined and may not be
/// (re)defined by a stream.
pub(crate) const FIRST_USER_ID: i64 = 64;

/// Go refuses interface type names longer than this (`decodeInterface`).
const MAX_INTERFACE_NAME: usize = 1024;

/// How many times one value may continue into a further message. Go's encoder splits a value
/// only where an interface field needs a new type definition, and every split makes us
/// decode the value again from its start (see [`Decoder::decode_message`]); this cap keeps
/// that repeated work within a small multiple of [`Limits::max_message_len`].
const MAX_CONTINUATIONS: usize = 16;

/// Elements reserved up front for a slice, array or map. The count on the wire has already
/// been checked against the bytes left, but a decoded [`Value`] is larger than the byte it
/// came from, so capacity beyond this grows only as elements actually decode.
const MAX_PREALLOC: usize = 1024;

/// A type definition received from the peer (a `wireType`), reduced to what decoding needs.
#[derive(Debug)]
enum Wire {
    Array {
        elem: i64,
        len: u64,
    },
    Slice {
        elem: i64,
    },
    Struct {
        name: String,
        fields: Vec<(String, i64)>,
    },
    Map {
        key: i64,
        elem: i64,
    },
    /// GobEncoder, BinaryMarshaler and TextMarshaler values: all `uint(len)` + bytes.
    Encoded,
}

const COMMON: (&str, i64) = ("CommonType", 18);

/// Field names and type ids of a predefined struct.
type Fields = &'static [(&'static str, i64)];

/// The types Go predefines for describing types (ids 16..=24 in `type.go`'s bootstrap).
/// Type definitions are values of type 16, so the decoder reads them with the same code as
/// any other struct, then converts the result with [`wire_from_value`]. Id 22 is
/// `[]*fieldType`, a slice, added in [`bootstrap_types`].
const BOOTSTRAP_STRUCTS: [(i64, &str, Fields); 8] = [
    (
        16,
        "wireType",
        &[
            ("ArrayT", 17),
            ("SliceT", 19),
            ("StructT", 20),
            ("MapT", 23),
            ("GobEncoderT", 24),
            ("BinaryMarshalerT", 24),
            ("TextMarshalerT", 24),
        ],
    ),
    (17, "arrayType", &[COMMON, ("Elem", INT), ("Len", INT)]),
    (18, "CommonType", &[("Name", STRING), ("Id", INT)]),
    (19, "sliceType", &[COMMON, ("Elem", INT)]),
    (20, "structType", &[COMMON, ("Field", 22)]),
    (21, "fieldType", &[("Name", STRING), ("Id", INT)]),
    (23, "mapType", &[COMMON, ("Key", INT), ("Elem", INT)]),
    (24, "gobEncoderType", &[COMMON]),
];

fn bootstrap_types() -> HashMap<i64, Arc<Wire>> {
    let mut types: HashMap<i64, Arc<Wire>> = BOOTSTRAP_STRUCTS
        .into_iter()
        .map(|(id, name, fields)| {
            let fields = fields.iter().map(|&(n, t)| (n.to_owned(), t)).collect();
            (
                id,
                Arc::new(Wire::Struct {
                    name: name.to_owned(),
                    fields,
                }),
            )
        })
        .collect();
    types.insert(22, Arc::new(Wire::Slice { elem: 21 }));
    types
}

/// Decoding state for one stream direction (type definitions accumulate per stream).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    types: HashMap<i64, Arc<Wire>>,
    user_types: usize,
    /// Messages of a value that is still incomplete: it stopped where an interface field's
    /// type definitions end one message and the value goes on in the next one.
    pending: Vec<Vec<u8>>,
    pending_len: usize,
    continuations: usize,
}

impl Decoder {
    /// A decoder for a fresh stream: only the predefined types known, bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            types: bootstrap_types(),
            user_types: 0,
            pending: Vec::new(),
            pending_len: 0,
            continuations: 0,
        }
    }

    /// Decodes one message payload (without its length prefix).
    /// Ok(None): it was a type definition (stored); Ok(Some(v)): a value.
    ///
    /// Ok(None) is also the answer for the first messages of a value that Go's encoder split
    /// across several messages (an interface field holding a type not yet sent on this
    /// stream: the definitions are flushed mid-value); the value comes with its last message.
    /// After an error the stream is out of step and should be closed.
    pub fn decode_message(&mut self, payload: &[u8]) -> Result<Option<Value>, Error> {
        let limit = self.limits.max_message_len;
        if payload.len() > limit {
            self.clear_pending();
            return Err(Error::MessageTooLong {
                len: payload.len() as u64,
                limit,
            });
        }
        if self.pending.is_empty() {
            return match self.run(&[payload]) {
                Ok(value) => Ok(value),
                Err(Fail::NeedMore) => {
                    self.pending.push(payload.to_vec());
                    self.pending_len = payload.len();
                    Ok(None)
                }
                Err(Fail::Gob(e)) => Err(e),
            };
        }

        let total = self.pending_len + payload.len();
        if total > limit {
            self.clear_pending();
            return Err(Error::MessageTooLong {
                len: total as u64,
                limit,
            });
        }
        // A message holding nothing but one definition (how Go sends the nested types of an
        // interface's concrete type) cannot finish the value: it is only collected, and the
        // value is decoded again when a message arrives that can.
        let lone_definition = self.is_lone_definition(payload);
        self.pending.push(payload.to_vec());
        self.pending_len = total;
        if lone_definition {
            if self.pending.len() > self.limits.max_types + MAX_CONTINUATIONS + 1 {
                self.clear_pending();
                return Err(Error::TooManyTypes(self.limits.max_types));
            }
            return Ok(None);
        }
        self.continuations += 1;
        if self.continuations > MAX_CONTINUATIONS {
            self.clear_pending();
            return Err(Error::Corrupt(format!(
                "value continues over more than {MAX_CONTINUATIONS} messages"
            )));
        }
        let messages = std::mem::take(&mut self.pending);
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let result = self.run(&slices);
        self.pending = messages;
        match result {
            Ok(value) => {
                self.clear_pending();
                Ok(value)
            }
            Err(Fail::NeedMore) => Ok(None),
            Err(Fail::Gob(e)) => {
                self.clear_pending();
                Err(e)
            }
        }
    }

    /// Whether `payload` is exactly one well-formed type definition. Nothing is stored: the
    /// definition is read for real when the value it belongs to is decoded.
    fn is_lone_definition(&self, payload: &[u8]) -> bool {
        let mut pass = Pass {
            limits: self.limits,
            types: &self.types,
            user_types: self.user_types,
            new_types: HashMap::new(),
            rest: &[],
            cur: Msg::new(payload),
        };
        match pass.cur.read_int("type id") {
            Ok(id) if id < 0 => pass.define(id).is_ok() && pass.cur.is_exhausted(),
            _ => false,
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_len = 0;
        self.continuations = 0;
    }

    /// Decodes the item that starts at the first of `messages`. Definitions read on the way
    /// are kept only if the item is complete, so a value that must wait for its next message
    /// can be decoded again from its start without tripping over "duplicate type".
    fn run(&mut self, messages: &[&[u8]]) -> Result<Option<Value>, Fail> {
        let (first, rest) = messages.split_first().ok_or(Error::EmptyMessage)?;
        let mut pass = Pass {
            limits: self.limits,
            types: &self.types,
            user_types: self.user_types,
            new_types: HashMap::new(),
            rest,
            cur: Msg::new(first),
        };
        let item = pass.item()?;
        let new_types = pass.new_types;
        self.user_types += new_types.len();
        self.types.extend(new_types);
        Ok(item)
    }
}

enum Fail {
    Gob(Error),
    /// The value goes on in a message that has not arrived yet.
    NeedMore,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Gob(e)
    }
}

/// One attempt at decoding one item (a definition or a value).
struct Pass<'d, 'm> {
    limits: Limits,
    types: &'d HashMap<i64, Arc<Wire>>,
    user_types: usize,
    /// Definitions read in this pass, kept apart until the item is complete. A map, not a
    /// list: every composite value looks its type up here.
    new_types: HashMap<i64, Arc<Wire>>,
    /// Messages after the current one, for values that continue.
    rest: &'m [&'m [u8]],
    cur: Msg<'m>,
}

impl Pass<'_, '_> {
    fn lookup(&self, id: i64) -> Option<Arc<Wire>> {
        self.new_types
            .get(&id)
            .or_else(|| self.types.get(&id))
            .cloned()
    }

    /// `int(-id) wireType` (a definition, alone in its message) or `int(id) value`.
    fn item(&mut self) -> Result<Option<Value>, Fail> {
        if self.cur.is_exhausted() {
            return Err(Error::EmptyMessage.into());
        }
        let id = self.cur.read_int("type id")?;
        if id < 0 {
            self.define(id)?;
            if !self.cur.is_exhausted() {
                return Err(Error::ExtraData(self.cur.remaining()).into());
            }
            return Ok(None);
        }
        let value = self.top_value(id, 0)?;
        let left = self.cur.remaining() + self.rest.iter().map(|m| m.len()).sum::<usize>();
        if left != 0 {
            return Err(Error::TrailingData(left).into());
        }
        Ok(Some(value))
    }

    /// Reads the `wireType` for `-neg_id` and records it.
    fn define(&mut self, neg_id: i64) -> Result<(), Fail> {
        let id = neg_id
            .checked_neg()
            .ok_or(Error::TypeIdOutOfRange(neg_id))?;
        // Go's type ids are int32.
        if id > i64::from(i32::MAX) {
            return Err(Error::TypeIdOutOfRange(id).into());
        }
        if id < FIRST_USER_ID {
            return Err(Error::ReservedTypeId(id).into());
        }
        if self.lookup(id).is_some() {
            return Err(Error::DuplicateType(id).into());
        }
        if self.user_types + self.new_types.len() >= self.limits.max_types {
            return Err(Error::TooManyTypes(self.limits.max_types).into());
        }
        let definition = self.value(WIRE_TYPE, 0)?;
        let wire = wire_from_value(id, definition)?;
        self.new_types.insert(id, Arc::new(wire));
        Ok(())
    }

    /// A value as sent at top level or inside an interface: structs as they are, anything
    /// else as a "singleton", preceded by a zero field delta.
    fn top_value(&mut self, id: i64, depth: usize) -> Result<Value, Fail> {
        if let Some(wire) = self.lookup(id)
            && let Wire::Struct { name, fields } = &*wire
        {
            return self.struct_value(name, fields, depth);
        }
        let delta = self.cur.read_uint("singleton field delta")?;
        if delta != 0 {
            return Err(Error::Corrupt(format!("non-zero delta {delta} for singleton")).into());
        }
        self.value(id, depth)
    }

    /// Counts one more level of nesting; `depth` is the parent's level (0 at top level).
    fn enter(&self, depth: usize) -> Result<usize, Error> {
        let level = depth + 1;
        if level > self.limits.max_depth {
            return Err(Error::TooDeep(self.limits.max_depth));
        }
        Ok(level)
    }

    fn value(&mut self, id: i64, depth: usize) -> Result<Value, Fail> {
        let cur = &mut self.cur;
        Ok(match id {
            BOOL => Value::Bool(cur.read_uint("bool")? != 0),
            INT => Value::Int(cur.read_int("int")?),
            UINT => Value::Uint(cur.read_uint("uint")?),
            FLOAT => Value::Float(uint_to_float(cur.read_uint("float")?)),
            COMPLEX => {
                let re = uint_to_float(cur.read_uint("complex real part")?);
                let im = uint_to_float(cur.read_uint("complex imaginary part")?);
                Value::Complex(re, im)
            }
            BYTES => Value::Bytes(cur.read_counted("bytes length")?.to_vec()),
            STRING => Value::String(lossy(cur.read_counted("string length")?)),
            INTERFACE => self.interface(depth)?,
            _ => {
                let wire = self.lookup(id).ok_or(Error::UnknownType(id))?;
                match &*wire {
                    Wire::Struct { name, fields } => self.struct_value(name, fields, depth)?,
                    Wire::Slice { elem } => {
                        let level = self.enter(depth)?;
                        let n = self.cur.read_uint("slice length")?;
                        let n = self.cur.check_count(n, 1, "slice length")?;
                        Value::Slice(self.elements(n, *elem, level)?)
                    }
                    Wire::Array { elem, len } => {
                        let level = self.enter(depth)?;
                        let n = self.cur.read_uint("array length")?;
                        if n != *len {
                            return Err(Error::Corrupt(format!(
                                "array of {n} elements for a type of length {len}"
                            ))
                            .into());
                        }
                        let n = self.cur.check_count(n, 1, "array length")?;
                        Value::Array(self.elements(n, *elem, level)?)
                    }
                    Wire::Map { key, elem } => {
                        let level = self.enter(depth)?;
                        let n = self.cur.read_uint("map length")?;
                        let n = self.cur.check_count(n, 2, "map length")?;
                        let mut pairs = Vec::with_capacity(n.min(MAX_PREALLOC));
                        for _ in 0..n {
                            let k = self.value(*key, level)?;
                            let v = self.value(*elem, level)?;
                            pairs.push((k, v));
                        }
                        Value::Map(pairs)
                    }
                    Wire::Encoded => {
                        Value::Encoded(self.cur.read_counted("encoded length")?.to_vec())
                    }
                }
            }
        })
    }

    fn elements(&mut self, n: usize, elem: i64, level: usize) -> Result<Vec<Value>, Fail> {
        let mut items = Vec::with_capacity(n.min(MAX_PREALLOC));
        for _ in 0..n {
            items.push(self.value(elem, level)?);
        }
        Ok(items)
    }

    /// Field deltas until a zero delta or the end of the message (Go accepts both).
    fn struct_value(
        &mut self,
        name: &str,
        fields: &[(String, i64)],
        depth: usize,
    ) -> Result<Value, Fail> {
        let level = self.enter(depth)?;
        let mut present = Vec::new();
        let mut next_index: u64 = 0;
        while !self.cur.is_exhausted() {
            let delta = self.cur.read_uint("field delta")?;
            if delta == 0 {
                break;
            }
            let index = next_index
                .checked_add(delta - 1)
                .filter(|&i| i < fields.len() as u64)
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "field delta {delta} leads past the {} fields of struct {name:?}",
                        fields.len()
                    ))
                })?;
            let (field_name, field_type) = &fields[index as usize];
            let value = self.value(*field_type, level)?;
            present.push((field_name.clone(), value));
            next_index = index + 1;
        }
        Ok(Value::Struct(Struct {
            name: name.to_owned(),
            fields: present,
        }))
    }

    /// `uint(len(name)) name`, then (unless nil) type definitions, `int(id)`, `uint(len)`
    /// and the value as at top level.
    fn interface(&mut self, depth: usize) -> Result<Value, Fail> {
        let level = self.enter(depth)?;
        let name = self.cur.read_counted("interface type name length")?;
        if name.is_empty() {
            return Ok(Value::Interface(None));
        }
        if name.len() > MAX_INTERFACE_NAME {
            return Err(Error::Corrupt(format!(
                "interface type name of {} bytes (at most {MAX_INTERFACE_NAME})",
                name.len()
            ))
            .into());
        }
        let name = lossy(name);
        let id = self.concrete_type_id()?;
        // The byte count lets Go skip values of unregistered types; we decode them anyway.
        self.cur.read_uint("interface value length")?;
        let value = self.top_value(id, level)?;
        Ok(Value::Interface(Some((name, Box::new(value)))))
    }

    /// Go's `decodeTypeSequence(isInterface=true)`: definitions may precede the concrete
    /// type id, either in the current message (each followed by a delimiting count) or in
    /// following messages.
    fn concrete_type_id(&mut self) -> Result<i64, Fail> {
        loop {
            if self.cur.is_exhausted() {
                let (next, rest) = self.rest.split_first().ok_or(Fail::NeedMore)?;
                self.rest = rest;
                self.cur = Msg::new(next);
                if self.cur.is_exhausted() {
                    return Err(Error::EmptyMessage.into());
                }
            }
            let id = self.cur.read_int("interface concrete type id")?;
            if id >= 0 {
                return Ok(id);
            }
            self.define(id)?;
            if !self.cur.is_exhausted() {
                self.cur.read_uint("count after type definition")?;
            }
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Converts a decoded `wireType` value into the definition the decoder keeps.
fn wire_from_value(id: i64, definition: Value) -> Result<Wire, Error> {
    let bad = |reason: String| Error::BadTypeDefinition { id, reason };
    let Value::Struct(wire_type) = definition else {
        return Err(bad("not a wireType struct".into()));
    };
    let [(kind, body)] = <[_; 1]>::try_from(wire_type.fields).map_err(|fields: Vec<_>| {
        bad(format!(
            "{} of the wireType fields are set, expected exactly one",
            fields.len()
        ))
    })?;
    let int = |name: &str| -> Result<i64, Error> {
        match body.field(name) {
            None => Ok(0),
            Some(Value::Int(i)) => Ok(*i),
            Some(other) => Err(bad(format!("{kind}.{name} is a {}", other.kind()))),
        }
    };
    Ok(match kind.as_str() {
        "ArrayT" => {
            let len = int("Len")?;
            let len =
                u64::try_from(len).map_err(|_| bad(format!("negative array length {len}")))?;
            Wire::Array {
                elem: int("Elem")?,
                len,
            }
        }
        "SliceT" => Wire::Slice { elem: int("Elem")? },
        "MapT" => Wire::Map {
            key: int("Key")?,
            elem: int("Elem")?,
        },
        "StructT" => {
            let name = body
                .field("CommonType")
                .and_then(|c| c.field("Name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let fields = match body.field("Field") {
                None => Vec::new(),
                Some(Value::Slice(items)) => items
                    .iter()
                    .map(|f| {
                        let field_name =
                            f.field("Name").and_then(Value::as_str).unwrap_or_default();
                        match f.field("Id") {
                            Some(Value::Int(t)) => Ok((field_name.to_owned(), *t)),
                            _ => Err(bad(format!("field {field_name:?} has no type id"))),
                        }
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(bad(format!("StructT.Field is a {}", other.kind()))),
            };
            Wire::Struct { name, fields }
        }
        "GobEncoderT" | "BinaryMarshalerT" | "TextMarshalerT" => Wire::Encoded,
        other => return Err(bad(format!("unknown wireType field {other}"))),
    })
}
