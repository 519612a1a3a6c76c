//! Properties: whatever the encoder accepts, the decoder reads back (zero fields omitted, as
//! gob does), over one stream with type reuse; and no input makes the decoder panic.

use gob::{Decoder, Encoder, Limits, Struct, Value, message_len};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![Just(0i64), -3i64..3].prop_map(Value::Int),
        any::<u64>().prop_map(Value::Uint),
        prop_oneof![Just(0u64), 0u64..300].prop_map(Value::Uint),
        // NaN is never equal to itself; everything else, -0.0 and infinities included.
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        (-1e3f64..1e3, prop_oneof![Just(0.0), -1e3f64..1e3])
            .prop_map(|(r, i)| Value::Complex(r, i)),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ".{0,20}".prop_map(Value::String),
        Just(Value::String(String::new())),
    ]
}

/// Structs of scalars and nested structs. Names come from a small set so that equal shapes
/// recur and type reuse is exercised; field names are unique within a struct.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 5, |inner| {
        (
            prop_oneof![Just(""), Just("Request"), Just("Response"), Just("T")],
            proptest::collection::vec(inner, 0..5),
        )
            .prop_map(|(name, values)| {
                Value::Struct(Struct {
                    name: name.into(),
                    fields: values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (format!("F{i}"), v))
                        .collect(),
                })
            })
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Uint(u) => *u == 0,
        Value::Float(f) => *f == 0.0,
        Value::Complex(r, i) => *r == 0.0 && *i == 0.0,
        Value::Bytes(b) => b.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// What the decoder should produce: zero scalar fields dropped, nested structs kept.
fn on_the_wire(v: &Value) -> Value {
    match v {
        Value::Struct(s) => Value::Struct(Struct {
            name: s.name.clone(),
            fields: s
                .fields
                .iter()
                .filter(|(_, f)| !is_zero(f))
                .map(|(n, f)| (n.clone(), on_the_wire(f)))
                .collect(),
        }),
        other => other.clone(),
    }
}

fn decode_stream(stream: &[u8], limits: Limits) -> Result<Vec<Value>, gob::Error> {
    let mut dec = Decoder::new(limits);
    let mut values = Vec::new();
    let mut rest = stream;
    while let Some((prefix, len)) = message_len(rest, limits.max_message_len)? {
        let Some(payload) = rest.get(prefix..prefix + len) else {
            break;
        };
        values.extend(dec.decode_message(payload)?);
        rest = &rest[prefix + len..];
    }
    Ok(values)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encoded_streams_decode_to_what_was_sent(values in proptest::collection::vec(value(), 1..8)) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for v in &values {
            enc.encode(v, &mut stream).unwrap();
        }
        let decoded = decode_stream(&stream, Limits::default()).unwrap();
        let expected: Vec<Value> = values.iter().map(on_the_wire).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_stream(&bytes, Limits::default());
    }

    /// Corrupting one byte of a valid stream gives an error or some values, never a panic.
    #[test]
    fn corrupted_streams_never_panic(
        values in proptest::collection::vec(value(), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for v in &values {
            enc.encode(v, &mut stream).unwrap();
        }
        let i = at.index(stream.len());
        stream[i] = byte;
        let _ = decode_stream(&stream, Limits { max_depth: 8, max_types: 16, ..Limits::default() });
    }
}
