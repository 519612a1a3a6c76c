//! Streams captured from Go 1.26 (`go run` of the program below) for the parts of gob that
//! net/rpc between Woodpecker and the addon does not use but a peer may still send:
//! interfaces (including values split across messages by mid-value type definitions), maps,
//! arrays, slices of structs, recursive types, GobEncoder and BinaryMarshaler values.
//!
//! ```go
//! type Point struct{ X, Y int }
//! type Inner struct{ A string }
//! type Holder struct {
//!     Name string
//!     Any  interface{}
//!     More interface{}
//! }
//! type Node struct {
//!     V    int
//!     Next *Node
//! }
//! type Mixed struct {
//!     F   float64
//!     C   complex128
//!     M   map[string]int
//!     Arr [3]uint8
//!     S   []Point
//!     BB  [][]byte
//!     T   time.Time
//!     Neg int64
//!     Ad  netip.Addr
//! }
//!
//! // Each stream: one gob.NewEncoder over a bytes.Buffer, Encode(v) for each value.
//! gob.Register(Point{})
//! gob.Register(Inner{})
//! gob.Register(Holder{})
//! dump("interface_split", Holder{Name: "h", Any: Point{X: 1, Y: -2}, More: Inner{A: "in"}})
//! dump("interface_nested", Holder{Any: Holder{Name: "n", Any: Inner{A: "deep"}}})
//! dump("interface_nil_and_basic", Holder{Any: nil, More: 7})
//! dump("recursive", Node{V: 1, Next: &Node{V: 2, Next: &Node{V: 3}}})
//! dump("mixed", Mixed{F: 1.5, C: complex(1, -1), M: map[string]int{"k": 3}, Arr: [3]uint8{1, 0, 255}, S: []Point{{1, 2}, {0, 0}}, BB: [][]byte{{1}, {}}, T: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Neg: -5, Ad: netip.MustParseAddr("127.0.0.1")})
//! dump("top_slice_map", []string{"a", "b"}, map[int]bool{1: true}, [2]int{0, 9})
//! ```
//!
//! The program printed `name hex` lines, kept verbatim in `golden/go_streams.txt` (also a
//! seed corpus for the fuzzer).

use gob::{Decoder, Limits, Struct, Value, message_len};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The captured stream called `name`.
fn stream(name: &str) -> Vec<u8> {
    let line = include_str!("golden/go_streams.txt")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no stream {name} in golden/go_streams.txt"));
    unhex(line.trim())
}

fn messages(name: &str) -> Vec<Vec<u8>> {
    let bytes = stream(name);
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (prefix, len) = message_len(rest, usize::MAX).unwrap().unwrap();
        out.push(rest[prefix..prefix + len].to_vec());
        rest = &rest[prefix + len..];
    }
    out
}

/// Feeds the messages one by one; returns, per message, whether it produced a value.
fn decode(name: &str) -> (Vec<Value>, Vec<bool>) {
    let mut dec = Decoder::new(Limits::default());
    let mut values = Vec::new();
    let mut produced = Vec::new();
    for m in messages(name) {
        let v = dec.decode_message(&m).unwrap();
        produced.push(v.is_some());
        values.extend(v);
    }
    (values, produced)
}

fn st(name: &str, fields: Vec<(&str, Value)>) -> Value {
    Value::Struct(Struct {
        name: name.into(),
        fields: fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
    })
}

fn iface(name: &str, v: Value) -> Value {
    Value::Interface(Some((name.into(), Box::new(v))))
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn interface_values_split_across_messages_decode_once_complete() {
    let (values, produced) = decode("interface_split");
    // Holder definition; value start + Point definition; Point value + Inner definition;
    // the rest. Only the last message completes the value.
    assert_eq!(produced, [false, false, false, true]);
    let point = st("Point", vec![("X", Value::Int(1)), ("Y", Value::Int(-2))]);
    let inner = st("Inner", vec![("A", s("in"))]);
    assert_eq!(
        values,
        [st(
            "Holder",
            vec![
                ("Name", s("h")),
                ("Any", iface("main.Point", point)),
                ("More", iface("main.Inner", inner)),
            ]
        )]
    );
}

#[test]
fn nested_interfaces_with_inline_definitions_decode() {
    let (values, _) = decode("interface_nested");
    let inner = st("Inner", vec![("A", s("deep"))]);
    let holder = st(
        "Holder",
        vec![("Name", s("n")), ("Any", iface("main.Inner", inner))],
    );
    assert_eq!(
        values,
        [st("Holder", vec![("Any", iface("main.Holder", holder))])]
    );
}

#[test]
fn nil_interfaces_are_omitted_and_basic_ones_are_singletons() {
    let (values, _) = decode("interface_nil_and_basic");
    assert_eq!(
        values,
        [st("Holder", vec![("More", iface("int", Value::Int(7)))])]
    );
}

#[test]
fn recursive_types_decode() {
    let (values, _) = decode("recursive");
    let n3 = st("Node", vec![("V", Value::Int(3))]);
    let n2 = st("Node", vec![("V", Value::Int(2)), ("Next", n3)]);
    assert_eq!(
        values,
        [st("Node", vec![("V", Value::Int(1)), ("Next", n2)])]
    );
}

#[test]
fn every_composite_kind_decodes() {
    let (values, _) = decode("mixed");
    let time = unhex("010000000ee0e92ca500000006ffff");
    let expected = st(
        "Mixed",
        vec![
            ("F", Value::Float(1.5)),
            ("C", Value::Complex(1.0, -1.0)),
            ("M", Value::Map(vec![(s("k"), Value::Int(3))])),
            (
                "Arr",
                Value::Array(vec![Value::Uint(1), Value::Uint(0), Value::Uint(255)]),
            ),
            (
                "S",
                Value::Slice(vec![
                    st("Point", vec![("X", Value::Int(1)), ("Y", Value::Int(2))]),
                    st("Point", vec![]),
                ]),
            ),
            (
                "BB",
                Value::Slice(vec![Value::Bytes(vec![1]), Value::Bytes(vec![])]),
            ),
            ("T", Value::Encoded(time)),
            ("Neg", Value::Int(-5)),
            ("Ad", Value::Encoded(vec![127, 0, 0, 1])),
        ],
    );
    assert_eq!(values, [expected]);
}

#[test]
fn top_level_slices_maps_and_arrays_are_singletons() {
    let (values, _) = decode("top_slice_map");
    assert_eq!(
        values,
        [
            Value::Slice(vec![s("a"), s("b")]),
            Value::Map(vec![(Value::Int(1), Value::Bool(true))]),
            Value::Array(vec![Value::Int(0), Value::Int(9)]),
        ]
    );
}

/// A split value whose continuation never makes sense must fail, and the decoder must not
/// keep the half-read definitions: the same stream decodes afterwards on a fresh decoder.
#[test]
fn a_broken_continuation_is_an_error() {
    let msgs = messages("interface_split");
    let mut dec = Decoder::new(Limits::default());
    assert_eq!(dec.decode_message(&msgs[0]).unwrap(), None);
    assert_eq!(dec.decode_message(&msgs[1]).unwrap(), None);
    // Continuation naming a type that was never defined.
    assert!(dec.decode_message(&[0xff, 0xfe, 0x05, 0x00]).is_err());
    // The pending value is gone: the next message is decoded on its own.
    assert_eq!(
        dec.decode_message(&[0x06, 0x00, 0x01]).unwrap(),
        Some(Value::Uint(1))
    );
}
