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

const INTERFACE_SPLIT: &str = "2d7f03010106486f6c64657201ff8000010301044e616d65010c000103416e7901100001044d6f7265011000000030ff80010168010a6d61696e2e506f696e74ff8103010105506f696e7401ff8200010201015801040001015901040000002dff82050102010300010a6d61696e2e496e6e6572ff8303010105496e6e657201ff84000101010141010c00000009ff84050102696e0000";
const INTERFACE_NESTED: &str = "2d7f03010106486f6c64657201ff8000010301044e616d65010c000103416e7901100001044d6f7265011000000047ff80020b6d61696e2e486f6c646572ff802801016e010a6d61696e2e496e6e6572ff8303010105496e6e657201ff84000101010141010c0000000bff8407010464656570000000";
const INTERFACE_NIL_AND_BASIC: &str = "2d7f03010106486f6c64657201ff8000010301044e616d65010c000103416e7901100001044d6f726501100000000cff800303696e740402000e00";
const RECURSIVE: &str = "22ff85030101044e6f646501ff8600010201015601040001044e65787401ff860000000dff860102010104010106000000";
const MIXED: &str = "55ff87030101054d6978656401ff88000109010146010800010143010e0001014d01ff8a00010341727201ff8c0001015301ff8e000102424201ff900001015401ff920001034e65670104000102416401ff940000001eff890401010e6d61705b737472696e675d696e7401ff8a00010c0104000018ff8b010101085b335d75696e743801ff8c000106010600001bff8d0201010c5b5d6d61696e2e506f696e7401ff8e0001ff8200001fff8103010105506f696e7401ff82000102010158010400010159010400000017ff8f020101095b5d5b5d75696e743801ff9000010a000010ff910501010454696d6501ff9200000010ff93060101044164647201ff940000003fff8801fef83f01fef03ffef0bf0101016b0601030100ffff01020102010400000102010100010f010000000ee0e92ca500000006ffff010901047f00000100";
const TOP_SLICE_MAP: &str = "0cff95020102ff9600010c000008ff960002016101620eff97040102ff980001040102000006ff98000102010eff99010102ff9a0001040104000006ff9a00020012";

use gob::{Decoder, Limits, Struct, Value, message_len};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn messages(stream: &str) -> Vec<Vec<u8>> {
    let bytes = unhex(stream);
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
fn decode(stream: &str) -> (Vec<Value>, Vec<bool>) {
    let mut dec = Decoder::new(Limits::default());
    let mut values = Vec::new();
    let mut produced = Vec::new();
    for m in messages(stream) {
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
    let (values, produced) = decode(INTERFACE_SPLIT);
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
    let (values, _) = decode(INTERFACE_NESTED);
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
    let (values, _) = decode(INTERFACE_NIL_AND_BASIC);
    assert_eq!(
        values,
        [st("Holder", vec![("More", iface("int", Value::Int(7)))])]
    );
}

#[test]
fn recursive_types_decode() {
    let (values, _) = decode(RECURSIVE);
    let n3 = st("Node", vec![("V", Value::Int(3))]);
    let n2 = st("Node", vec![("V", Value::Int(2)), ("Next", n3)]);
    assert_eq!(
        values,
        [st("Node", vec![("V", Value::Int(1)), ("Next", n2)])]
    );
}

#[test]
fn every_composite_kind_decodes() {
    let (values, _) = decode(MIXED);
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
    let (values, _) = decode(TOP_SLICE_MAP);
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
    let msgs = messages(INTERFACE_SPLIT);
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
