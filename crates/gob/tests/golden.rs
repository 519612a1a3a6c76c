//! Golden vectors from a real Go 1.26 process (`interop/cmd/gobvectors` writes
//! `tests/golden/vectors.json`): every stream must decode to the recorded values, and every
//! stream from a fresh process (type ids from 64) must be reproduced byte for byte by our
//! encoder from those values.

use std::collections::HashMap;

use gob::{Decoder, Encoder, Limits, Struct, Value, message_len};
use serde_json::Value as Json;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// A recorded value: an object with exactly one key naming its kind.
fn value_from_json(j: &Json) -> Value {
    let obj = j.as_object().expect("value is an object");
    assert_eq!(obj.len(), 1, "value has exactly one key: {j}");
    let (kind, v) = obj.iter().next().unwrap();
    match kind.as_str() {
        "bool" => Value::Bool(v.as_bool().expect("bool")),
        "int" => Value::Int(v.as_i64().expect("int")),
        "uint" => Value::Uint(v.as_u64().expect("uint")),
        "float" => Value::Float(v.as_f64().expect("float")),
        "string" => Value::String(v.as_str().expect("string").to_owned()),
        "bytes" => Value::Bytes(unhex(v.as_str().expect("bytes hex"))),
        "struct" => Value::Struct(Struct {
            name: v["name"].as_str().expect("struct name").to_owned(),
            fields: v["fields"]
                .as_array()
                .expect("struct fields")
                .iter()
                .map(|f| {
                    let name = f[0].as_str().expect("field name").to_owned();
                    (name, value_from_json(&f[1]))
                })
                .collect(),
        }),
        other => panic!("unknown value kind {other:?} in {VECTORS}"),
    }
}

type Types = HashMap<String, Vec<(String, String)>>;

fn types_from_json(j: Option<&Json>) -> Types {
    let Some(j) = j else { return Types::new() };
    j.as_object()
        .expect("types is an object")
        .iter()
        .map(|(name, fields)| {
            let fields = fields
                .as_array()
                .expect("field list")
                .iter()
                .map(|f| {
                    (
                        f[0].as_str().unwrap().to_owned(),
                        f[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (name.clone(), fields)
        })
        .collect()
}

fn zero_of(type_name: &str, types: &Types) -> Option<Value> {
    Some(match type_name {
        "bool" => Value::Bool(false),
        "int" => Value::Int(0),
        "uint" => Value::Uint(0),
        "float" => Value::Float(0.0),
        "string" => Value::String(String::new()),
        "bytes" => Value::Bytes(Vec::new()),
        name => complete(
            &Struct {
                name: name.to_owned(),
                fields: Vec::new(),
            },
            types,
        )?,
    })
}

/// The encoder input for a decoded value: struct fields that were omitted on the wire because
/// they were zero are put back, in the type's field order. None when the vector does not
/// describe a struct type it uses.
fn complete(s: &Struct, types: &Types) -> Option<Value> {
    let declared = match types.get(&s.name) {
        Some(declared) => declared,
        None if s.name.is_empty() && s.fields.is_empty() => return Some(Value::empty_struct()),
        None => return None,
    };
    let mut fields = Vec::new();
    for (name, type_name) in declared {
        let value = match s.fields.iter().find(|(n, _)| n == name) {
            Some((_, Value::Struct(inner))) => complete(inner, types)?,
            Some((_, v)) => v.clone(),
            None => zero_of(type_name, types)?,
        };
        fields.push((name.clone(), value));
    }
    Some(Value::Struct(Struct {
        name: s.name.clone(),
        fields,
    }))
}

fn decode_all(stream: &[u8]) -> Result<Vec<Value>, String> {
    let mut dec = Decoder::new(Limits::default());
    let mut values = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (prefix, len) = message_len(rest, usize::MAX)
            .map_err(|e| e.to_string())?
            .ok_or("stream ends inside a message")?;
        let payload = rest
            .get(prefix..prefix + len)
            .ok_or("stream ends inside a payload")?;
        if let Some(v) = dec.decode_message(payload).map_err(|e| e.to_string())? {
            values.push(v);
        }
        rest = &rest[prefix + len..];
    }
    Ok(values)
}

#[test]
fn go_streams_decode_and_fresh_ones_reencode_byte_exactly() {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
    let vectors: Vec<Json> = serde_json::from_str(&text).expect("vectors.json parses");
    assert!(!vectors.is_empty(), "no golden vectors");
    let (mut decoded, mut reencoded) = (0, 0);
    for vector in &vectors {
        let name = vector["name"].as_str().expect("vector name");
        let stream = unhex(vector["hex"].as_str().expect("hex"));
        let expected: Vec<Value> = vector["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(value_from_json)
            .collect();
        let got = decode_all(&stream).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, expected, "{name}: decoded values differ");
        decoded += 1;

        if vector["fresh"].as_bool() != Some(true) {
            continue;
        }
        let types = types_from_json(vector.get("types"));
        let inputs: Option<Vec<Value>> = expected
            .iter()
            .map(|v| match v {
                Value::Struct(s) => complete(s, &types),
                scalar => Some(scalar.clone()),
            })
            .collect();
        let inputs =
            inputs.unwrap_or_else(|| panic!("{name}: a struct type is missing from types"));
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        for v in &inputs {
            enc.encode(v, &mut out)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            out == stream,
            "{name}: re-encoding differs\n ours: {out:02x?}\n   go: {stream:02x?}"
        );
        reencoded += 1;
    }
    eprintln!("{decoded} vectors decoded, {reencoded} re-encoded byte-exactly");
    assert!(reencoded > 0, "no fresh vector was re-encoded");
}

/// Every strict prefix of a Go stream is incomplete, never a crash and never a wrong value:
/// the framing reports "need more" or the decoder reports truncation.
#[test]
fn truncated_go_streams_fail_cleanly() {
    let text = std::fs::read_to_string(VECTORS).unwrap();
    let vectors: Vec<Json> = serde_json::from_str(&text).unwrap();
    for vector in vectors
        .iter()
        .filter(|v| v["hex"].as_str().unwrap().len() < 2000)
    {
        let stream = unhex(vector["hex"].as_str().unwrap());
        let all = decode_all(&stream).unwrap();
        for cut in 0..stream.len() {
            match decode_all(&stream[..cut]) {
                Ok(values) => assert!(all.starts_with(&values), "prefix {cut} invented values"),
                Err(e) => assert!(
                    e.contains("ends inside"),
                    "prefix {cut}: unexpected error {e}"
                ),
            }
        }
    }
}
