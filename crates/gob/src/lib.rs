//! Go's `encoding/gob`, as much of it as `net/rpc` needs, written for hostile input.
//!
//! The Woodpecker server talks to its log-store addon through go-plugin's net/rpc, whose
//! default codec is gob. This crate is that codec, kept separate from the RPC runtime so it
//! can be tested byte for byte against a real Go process and fuzzed on its own.
//!
//! * [`message_len`] splits a byte stream into gob messages (`uint(len)` + payload).
//! * [`Decoder`] reads every kind of value gob can send into a generic [`Value`], keeping the
//!   per-stream table of type definitions. It never panics, never recurses deeper than
//!   [`Limits::max_depth`], and never allocates more than the bytes received justify.
//! * [`Encoder`] writes scalars and structs of scalars/structs the way Go's encoder does
//!   (one definition per type per stream, ids from 64, zero fields omitted), so a Go
//!   `net/rpc` client decodes our replies.
//!
//! Type definitions are per stream and per direction: use one [`Decoder`] and one [`Encoder`]
//! per yamux stream, never shared.
//!
//! ```
//! use gob::{Decoder, Encoder, Limits, Struct, Value, message_len};
//!
//! // A net/rpc response: header, then body. Definitions go out on first use only.
//! let mut enc = Encoder::new();
//! let mut out = Vec::new();
//! let header = Value::Struct(Struct {
//!     name: "Response".into(),
//!     fields: vec![
//!         ("ServiceMethod".into(), Value::String("Plugin.LogFind".into())),
//!         ("Seq".into(), Value::Uint(0)),
//!         ("Error".into(), Value::String(String::new())),
//!     ],
//! });
//! enc.encode(&header, &mut out)?;
//! enc.encode(&Value::Bytes(b"[]".to_vec()), &mut out)?;
//!
//! // Reading a stream: frame, wait for the whole payload, decode.
//! let limits = Limits::default();
//! let mut dec = Decoder::new(limits);
//! let mut buf = &out[..];
//! let mut values = Vec::new();
//! while let Some((prefix, len)) = message_len(buf, limits.max_message_len)? {
//!     if buf.len() < prefix + len {
//!         break; // read more from the stream first
//!     }
//!     if let Some(v) = dec.decode_message(&buf[prefix..prefix + len])? {
//!         values.push(v);
//!     }
//!     buf = &buf[prefix + len..];
//! }
//! assert_eq!(values[0].field("ServiceMethod").and_then(Value::as_str), Some("Plugin.LogFind"));
//! assert_eq!(values[0].field("Seq"), None); // zero, so not sent
//! assert_eq!(values[1].as_bytes(), Some(&b"[]"[..]));
//! # Ok::<(), gob::Error>(())
//! ```

#![forbid(unsafe_code)]

mod decode;
mod encode;
mod wire;

pub use decode::Decoder;
pub use encode::{Encoder, bytes_message_prefix};

/// A decoded or to-be-encoded gob value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `bool` (wire type 1).
    Bool(bool),
    /// Any Go signed integer width (wire type 2).
    Int(i64),
    /// Any Go unsigned integer width, `uintptr` included (wire type 3).
    Uint(u64),
    /// `float32` or `float64` (wire type 4).
    Float(f64),
    /// `complex64` or `complex128`: real part, imaginary part (wire type 7).
    Complex(f64, f64),
    /// `[]byte` (wire type 5), a distinct type from `string` on the wire.
    Bytes(Vec<u8>),
    /// Go strings may hold any bytes; invalid UTF-8 is decoded lossily (U+FFFD) rather than
    /// refused, so a stray byte in, say, an error text does not kill the whole stream.
    String(String),
    /// A struct, fields by name.
    Struct(Struct),
    /// A slice of any element type but `byte`.
    Slice(Vec<Value>),
    /// A fixed-length array.
    Array(Vec<Value>),
    /// A map as key/value pairs in wire order (decode only; see [`Encoder`]).
    Map(Vec<(Value, Value)>),
    /// An interface value: the registered concrete type name and the value; None for nil.
    Interface(Option<(String, Box<Value>)>),
    /// A GobEncoder/BinaryMarshaler/TextMarshaler value: its raw bytes.
    Encoded(Vec<u8>),
}

/// A struct value. On the wire gob matches struct fields by name, so names are what count.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Struct {
    /// The Go type name without its package (`"Request"`); empty for an anonymous struct.
    pub name: String,
    /// Decoding: the fields present on the wire, in field order (gob omits zero fields).
    /// Encoding: all fields of the type; zero-valued ones are declared in the type but not sent.
    pub fields: Vec<(String, Value)>,
}

impl Value {
    /// The value of the struct field `name`, if this is a struct and the field is present.
    /// A field missing from a decoded struct was zero on the sender's side.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(s) => s.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes of a [`Value::Bytes`] (not of a string: they are different gob types).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The number of a [`Value::Uint`].
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(u) => Some(*u),
            _ => None,
        }
    }

    /// The flag of a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The anonymous empty struct (`struct{}`): what net/rpc sends as the body of an error
    /// reply and as the reply of `Control.Ping`/`Control.Quit`.
    pub fn empty_struct() -> Value {
        Value::Struct(Struct::default())
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::Complex(..) => "complex",
            Value::Bytes(_) => "bytes",
            Value::String(_) => "string",
            Value::Struct(_) => "struct",
            Value::Slice(_) => "slice",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Interface(_) => "interface",
            Value::Encoded(_) => "GobEncoder",
        }
    }
}

/// Bounds on what a [`Decoder`] accepts from its peer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message payload (and largest value spread over several messages), in bytes.
    /// Decoded memory is bounded by it too, but not 1:1: strings and bytes cost what they
    /// weigh, while a slice of one-byte scalars costs `size_of::<Value>()` per byte (about
    /// 56×). Choose it with that worst case in mind.
    pub max_message_len: usize,
    /// Deepest nesting of structs, slices, arrays, maps and interfaces in one value. It bounds
    /// the decoder's recursion, so it must stay small enough for the thread's stack.
    pub max_depth: usize,
    /// Most type definitions one stream may send.
    pub max_types: usize,
}

impl Default for Limits {
    /// 256 MiB messages, depth 64, 1024 types: far above what net/rpc headers and the
    /// Woodpecker log calls need, far below what would exhaust the process.
    fn default() -> Self {
        Self {
            max_message_len: 256 << 20,
            max_depth: 64,
            max_types: 1024,
        }
    }
}

/// Why a stream could not be decoded or a value not encoded. Decoding errors describe the
/// peer's bytes; after one, the stream's gob state is unreliable and it should be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A message (or a value spread over several) is over [`Limits::max_message_len`].
    #[error("gob: message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLong {
        /// The announced (or gathered) size.
        len: u64,
        /// The limit it broke.
        limit: usize,
    },
    /// A message of length 0: Go never sends one.
    #[error("gob: empty message")]
    EmptyMessage,
    /// The message ends before `what` is complete.
    #[error("gob: message ends inside {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// An unsigned integer whose first byte announces more than 8 bytes.
    #[error(
        "gob: malformed unsigned integer in {what}: byte {byte:#04x} announces more than 8 bytes"
    )]
    BadUint {
        /// What the integer was.
        what: &'static str,
        /// Its first byte.
        byte: u8,
    },
    /// A length (of a string, slice, map, …) larger than what is left of the message.
    #[error("gob: {what} of {len} exceeds the {remaining} bytes left in the message")]
    LengthBeyondMessage {
        /// What the length was of.
        what: &'static str,
        /// The length announced.
        len: u64,
        /// The bytes left in the message.
        remaining: usize,
    },
    /// A definition for one of the predefined ids.
    #[error("gob: type id {0} cannot be defined: ids below 64 are predefined")]
    ReservedTypeId(i64),
    /// A type id outside the 32-bit range Go uses.
    #[error("gob: type id {0} is out of range")]
    TypeIdOutOfRange(i64),
    /// A second definition of an id on the same stream.
    #[error("gob: duplicate type received: id {0} is already defined on this stream")]
    DuplicateType(i64),
    /// More definitions than [`Limits::max_types`].
    #[error("gob: more than {0} type definitions on one stream")]
    TooManyTypes(usize),
    /// A value or field of a type never defined on this stream.
    #[error("gob: type id {0} is not defined on this stream")]
    UnknownType(i64),
    /// A definition that is not a well-formed `wireType` (a field of the wrong kind, a
    /// negative array length, …).
    #[error("gob: invalid type definition for id {id}: {reason}")]
    BadTypeDefinition {
        /// The id being defined.
        id: i64,
        /// Which rule it breaks.
        reason: String,
    },
    /// A definition message with bytes after the definition.
    #[error("gob: {0} bytes of extra data after a type definition")]
    ExtraData(usize),
    /// A value message with bytes after the value.
    #[error("gob: {0} bytes of extra data after a value")]
    TrailingData(usize),
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("gob: value nested deeper than {0} levels")]
    TooDeep(usize),
    /// Bytes that fit no rule, described.
    #[error("gob: corrupted data: {0}")]
    Corrupt(String),
    /// A value the [`Encoder`] does not write (maps, slices, interfaces, …).
    #[error("gob: cannot encode {0}")]
    Unsupported(String),
}

/// Message framing: gob prefixes every message with uint(len).
/// Ok(None) = need more bytes; Ok(Some((prefix_len, payload_len)));
/// Err if the length is malformed or above `limit`.
///
/// Only the prefix is checked: the payload is complete once `buf` holds
/// `prefix_len + payload_len` bytes. Checking `limit` here, before buffering, is what stops a
/// peer from making the reader allocate for a huge announced length.
pub fn message_len(buf: &[u8], limit: usize) -> Result<Option<(usize, usize)>, Error> {
    let Some((len, prefix)) = wire::decode_uint(buf, "message length")? else {
        return Ok(None);
    };
    if len > limit as u64 {
        return Err(Error::MessageTooLong { len, limit });
    }
    Ok(Some((prefix, len as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_len_needs_more_then_answers() {
        assert_eq!(message_len(&[], 100), Ok(None));
        assert_eq!(message_len(&[0x2e], 100), Ok(Some((1, 46))));
        assert_eq!(message_len(&[0xfe, 0x01], 1000), Ok(None));
        assert_eq!(
            message_len(&[0xfe, 0x01, 0x00, 0xaa], 1000),
            Ok(Some((3, 256)))
        );
    }

    #[test]
    fn message_len_refuses_huge_and_malformed_lengths() {
        assert_eq!(
            message_len(&[0xfe, 0x01, 0x00], 255),
            Err(Error::MessageTooLong {
                len: 256,
                limit: 255
            })
        );
        let huge = [0xf8, 0xff, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            message_len(&huge, usize::MAX >> 1),
            Err(Error::MessageTooLong { .. })
        ));
        assert!(matches!(
            message_len(&[0xf0], 100),
            Err(Error::BadUint { .. })
        ));
    }

    /// The RPC runtime moves codec state into tasks and threads.
    #[test]
    fn codec_state_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Decoder>();
        assert_send_sync::<Encoder>();
        assert_send_sync::<Error>();
    }

    /// [`Limits::max_message_len`] documents the worst-case memory per received byte.
    #[test]
    fn a_value_is_at_most_56_bytes() {
        assert!(
            std::mem::size_of::<Value>() <= 56,
            "{}",
            std::mem::size_of::<Value>()
        );
    }

    #[test]
    fn accessors_match_only_their_kind() {
        let s = Value::Struct(Struct {
            name: "Request".into(),
            fields: vec![
                (
                    "ServiceMethod".into(),
                    Value::String("Plugin.LogFind".into()),
                ),
                ("Seq".into(), Value::Uint(7)),
            ],
        });
        assert_eq!(
            s.field("ServiceMethod").and_then(Value::as_str),
            Some("Plugin.LogFind")
        );
        assert_eq!(s.field("Seq").and_then(Value::as_u64), Some(7));
        assert_eq!(s.field("Error"), None);
        assert_eq!(Value::Int(7).as_u64(), None);
        assert_eq!(Value::Bytes(vec![1]).as_bytes(), Some(&[1u8][..]));
        assert_eq!(Value::String("x".into()).as_bytes(), None);
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(
            Value::empty_struct(),
            Value::Struct(Struct {
                name: String::new(),
                fields: vec![]
            })
        );
    }
}
