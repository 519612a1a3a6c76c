//! The net/rpc byte sequences of the go-plugin protocol (crates/goplugin/PROTOCOL.md §gob),
//! decoded and encoded byte for byte.

use gob::{Decoder, Encoder, Limits, Struct, Value, message_len};

fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// Splits a stream into messages with [`message_len`] and decodes each; the values in order.
fn decode_stream(dec: &mut Decoder, mut stream: &[u8]) -> Vec<Value> {
    let mut values = Vec::new();
    while !stream.is_empty() {
        let (prefix, len) = message_len(stream, usize::MAX)
            .unwrap()
            .expect("complete message");
        let payload = &stream[prefix..prefix + len];
        if let Some(v) = dec.decode_message(payload).unwrap() {
            values.push(v);
        }
        stream = &stream[prefix + len..];
    }
    values
}

fn strukt(name: &str, fields: &[(&str, Value)]) -> Value {
    Value::Struct(Struct {
        name: name.into(),
        fields: fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
    })
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

const REQUEST_DEF: &str = "2e 7f 03 01 01 07 52 65 71 75 65 73 74 01 ff 80 00 01 02
    01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00 01 03 53 65 71 01 06 00 00 00";
const RESPONSE_DEF: &str = "39 7f 03 01 01 08 52 65 73 70 6f 6e 73 65 01 ff 80 00 01 03
    01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00
    01 03 53 65 71 01 06 00 01 05 45 72 72 6f 72 01 0c 00 00 00";
const DISPENSE_HEADER: &str =
    "17 ff 80 01 12 44 69 73 70 65 6e 73 65 72 2e 44 69 73 70 65 6e 73 65 00";

fn response(method: &str, seq: u64, error: &str) -> Value {
    strukt(
        "Response",
        &[
            ("ServiceMethod", s(method)),
            ("Seq", Value::Uint(seq)),
            ("Error", s(error)),
        ],
    )
}

#[test]
fn a_dispense_request_decodes() {
    let stream = hex(&format!(
        "{REQUEST_DEF} {DISPENSE_HEADER} 06 0c 00 03 6c 6f 67"
    ));
    assert_eq!(stream.len(), 78);
    let mut dec = Decoder::new(Limits::default());
    let values = decode_stream(&mut dec, &stream);
    assert_eq!(
        values,
        [
            strukt("Request", &[("ServiceMethod", s("Dispenser.Dispense"))]),
            s("log")
        ]
    );
    assert_eq!(values[0].field("Seq"), None, "Seq 0 is omitted on the wire");

    // (c) A later request on the same stream, the type already defined.
    let later = hex(
        "15 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 01 01 00
         0b 0a 00 08 7b 22 69 64 22 3a 35 7d",
    );
    let values = decode_stream(&mut dec, &later);
    assert_eq!(
        values,
        [
            strukt(
                "Request",
                &[
                    ("ServiceMethod", s("Plugin.LogFind")),
                    ("Seq", Value::Uint(1))
                ]
            ),
            Value::Bytes(br#"{"id":5}"#.to_vec()),
        ]
    );
}

#[test]
fn c_first_call_on_the_broker_stream_decodes() {
    let stream = hex(&format!(
        "{REQUEST_DEF}
         13 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 00
         0b 0a 00 08 7b 22 69 64 22 3a 35 7d"
    ));
    assert_eq!(stream.len(), 79);
    let values = decode_stream(&mut Decoder::new(Limits::default()), &stream);
    assert_eq!(
        values,
        [
            strukt("Request", &[("ServiceMethod", s("Plugin.LogFind"))]),
            Value::Bytes(br#"{"id":5}"#.to_vec()),
        ]
    );
}

#[test]
fn c_error_reply_decodes_with_either_delta() {
    let stream = hex(&format!(
        "{RESPONSE_DEF}
         1b ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 01 01 01 04 62 6f 6f 6d 00
         19 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 02 04 62 6f 6f 6d 00
         0a ff 81 03 01 02 ff 82 00 00 00
         03 ff 82 00"
    ));
    let values = decode_stream(&mut Decoder::new(Limits::default()), &stream);
    let error_of = |v: &Value| v.field("Error").and_then(Value::as_str).map(str::to_owned);
    assert_eq!(values.len(), 3);
    assert_eq!(error_of(&values[0]).as_deref(), Some("boom"));
    assert_eq!(values[0].field("Seq").and_then(Value::as_u64), Some(1));
    assert_eq!(error_of(&values[1]).as_deref(), Some("boom"));
    assert_eq!(values[1].field("Seq"), None);
    assert_eq!(values[2], Value::empty_struct());
}

#[test]
fn b_dispense_response_encodes_byte_exactly() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode(&response("Dispenser.Dispense", 0, ""), &mut out)
        .unwrap();
    enc.encode(&Value::Uint(1), &mut out).unwrap();
    assert_eq!(
        out,
        hex(&format!("{RESPONSE_DEF} {DISPENSE_HEADER} 03 06 00 01"))
    );
    assert_eq!(out.len(), 86);

    // An error reply with Seq 1 on a stream where Response is already defined, then the
    // empty-struct body: its definition on first use (id 65), then the value.
    out.clear();
    enc.encode(&response("Plugin.LogFind", 1, "boom"), &mut out)
        .unwrap();
    enc.encode(&Value::empty_struct(), &mut out).unwrap();
    enc.encode(&Value::empty_struct(), &mut out).unwrap();
    let expected = hex(
        "1b ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 01 01 01 04 62 6f 6f 6d 00
         0a ff 81 03 01 02 ff 82 00 00 00
         03 ff 82 00
         03 ff 82 00",
    );
    assert_eq!(out, expected);

    out.clear();
    enc.encode(&response("Plugin.LogFind", 0, "boom"), &mut out)
        .unwrap();
    assert_eq!(
        out,
        hex("19 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 02 04 62 6f 6f 6d 00")
    );
}

#[test]
fn section_6_8_values_encode_and_decode() {
    let cases: [(Value, &str); 5] = [
        (Value::Bool(true), "03 02 00 01"),
        (s("log"), "06 0c 00 03 6c 6f 67"),
        (Value::Uint(1), "03 06 00 01"),
        (Value::Bytes(vec![]), "03 0a 00 00"),
        (Value::Bytes(b"[]".to_vec()), "05 0a 00 02 5b 5d"),
    ];
    for (value, bytes) in cases {
        let mut out = Vec::new();
        Encoder::new().encode(&value, &mut out).unwrap();
        assert_eq!(out, hex(bytes), "{value:?}");
        assert_eq!(
            decode_stream(&mut Decoder::new(Limits::default()), &out),
            [value]
        );
    }
}
