//! What a hostile or broken peer can send: every refusal the decoder promises, each with a
//! descriptive error instead of a panic, a hang or a huge allocation.

use gob::{Decoder, Error, Limits, Value};

/// Builds gob payloads by hand, so tests can say exactly which bytes are wrong.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn uint(mut self, v: u64) -> Self {
        if v < 0x80 {
            self.0.push(v as u8);
        } else {
            let bytes = v.to_be_bytes();
            let skip = (v.leading_zeros() / 8) as usize;
            self.0.push((8 - skip as u8).wrapping_neg());
            self.0.extend_from_slice(&bytes[skip..]);
        }
        self
    }
    fn int(self, v: i64) -> Self {
        let u = if v < 0 {
            ((!v as u64) << 1) | 1
        } else {
            (v as u64) << 1
        };
        self.uint(u)
    }
    fn str(self, s: &str) -> Self {
        self.uint(s.len() as u64).raw(s.as_bytes())
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

/// `wireType{StructT: {CommonType{name, id}, fields}}` for id.
fn struct_def(id: i64, name: &str, fields: &[(&str, i64)]) -> Vec<u8> {
    let mut b = B::default().int(-id).uint(3).uint(1);
    b = if name.is_empty() {
        b.uint(2)
    } else {
        b.uint(1).str(name).uint(1)
    };
    b = b.int(id).uint(0);
    if !fields.is_empty() {
        b = b.uint(1).uint(fields.len() as u64);
        for (n, t) in fields {
            b = b.uint(1).str(n).uint(1).int(*t).uint(0);
        }
    }
    b.uint(0).uint(0).done()
}

fn slice_def(id: i64, elem: i64) -> Vec<u8> {
    B::default()
        .int(-id)
        .uint(2)
        .uint(1)
        .uint(2)
        .int(id)
        .uint(0)
        .uint(1)
        .int(elem)
        .raw(&[0, 0])
        .done()
}

fn array_def(id: i64, elem: i64, len: i64) -> Vec<u8> {
    B::default()
        .int(-id)
        .uint(1)
        .uint(1)
        .uint(2)
        .int(id)
        .uint(0)
        .uint(1)
        .int(elem)
        .uint(1)
        .int(len)
        .raw(&[0, 0])
        .done()
}

fn map_def(id: i64, key: i64, elem: i64) -> Vec<u8> {
    B::default()
        .int(-id)
        .uint(4)
        .uint(1)
        .uint(2)
        .int(id)
        .uint(0)
        .uint(1)
        .int(key)
        .uint(1)
        .int(elem)
        .raw(&[0, 0])
        .done()
}

fn decoder() -> Decoder {
    Decoder::new(Limits::default())
}

fn define(dec: &mut Decoder, def: &[u8]) {
    assert_eq!(dec.decode_message(def), Ok(None));
}

#[test]
fn predefined_ids_cannot_be_defined() {
    for id in [1, 16, 22, 63] {
        assert_eq!(
            decoder().decode_message(&struct_def(id, "", &[])),
            Err(Error::ReservedTypeId(id))
        );
    }
    assert_eq!(decoder().decode_message(&struct_def(64, "", &[])), Ok(None));
}

#[test]
fn out_of_range_ids_are_refused() {
    let min = B::default().uint(u64::MAX).done();
    assert_eq!(
        decoder().decode_message(&min),
        Err(Error::TypeIdOutOfRange(i64::MIN))
    );
    let big = i64::from(i32::MAX) + 1;
    assert_eq!(
        decoder().decode_message(&struct_def(big, "", &[])),
        Err(Error::TypeIdOutOfRange(big))
    );
}

#[test]
fn redefinition_is_refused() {
    let mut dec = decoder();
    define(&mut dec, &struct_def(65, "A", &[("X", 2)]));
    assert_eq!(
        dec.decode_message(&struct_def(65, "A", &[("X", 2)])),
        Err(Error::DuplicateType(65))
    );
}

#[test]
fn a_definition_must_be_alone_in_its_message() {
    let mut def = struct_def(64, "", &[]);
    def.extend_from_slice(&[0x06, 0x00, 0x01]);
    assert_eq!(decoder().decode_message(&def), Err(Error::ExtraData(3)));
}

#[test]
fn malformed_definitions_are_refused() {
    // Two wireType fields set (ArrayT and SliceT).
    let two = B::default()
        .int(-64)
        .uint(1)
        .uint(1)
        .uint(2)
        .int(64)
        .raw(&[0, 0]);
    let two = two
        .uint(1)
        .uint(1)
        .uint(2)
        .int(64)
        .raw(&[0, 0])
        .uint(0)
        .done();
    assert!(matches!(
        decoder().decode_message(&two),
        Err(Error::BadTypeDefinition { id: 64, .. })
    ));
    // No field set at all.
    let none = B::default().int(-64).uint(0).done();
    assert!(matches!(
        decoder().decode_message(&none),
        Err(Error::BadTypeDefinition { id: 64, .. })
    ));
    assert!(matches!(
        decoder().decode_message(&array_def(64, 2, -1)),
        Err(Error::BadTypeDefinition { id: 64, .. })
    ));
    // Truncated in the middle of a definition.
    let def = struct_def(64, "Request", &[("Seq", 3)]);
    assert!(matches!(
        decoder().decode_message(&def[..def.len() - 4]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn type_count_is_limited() {
    let mut dec = Decoder::new(Limits {
        max_types: 3,
        ..Limits::default()
    });
    for id in 64..67 {
        define(&mut dec, &struct_def(id, "", &[]));
    }
    assert_eq!(
        dec.decode_message(&struct_def(67, "", &[])),
        Err(Error::TooManyTypes(3))
    );
}

#[test]
fn lengths_beyond_the_message_are_refused_without_allocating() {
    // A string claiming 10 bytes with 2 present.
    let msg = B::default().int(6).uint(0).uint(10).raw(b"ab").done();
    assert!(matches!(
        decoder().decode_message(&msg),
        Err(Error::LengthBeyondMessage {
            len: 10,
            remaining: 2,
            ..
        })
    ));
    // A slice of 2^60 uints and a map of 2^60 pairs: refused before any allocation.
    let mut dec = decoder();
    define(&mut dec, &slice_def(64, 3));
    define(&mut dec, &map_def(65, 6, 6));
    for id in [64, 65] {
        let msg = B::default()
            .int(id)
            .uint(0)
            .uint(1 << 60)
            .raw(&[1, 2, 3])
            .done();
        assert!(
            matches!(dec.decode_message(&msg), Err(Error::LengthBeyondMessage { len, .. }) if len == 1 << 60)
        );
    }
    // The largest count that fits is accepted.
    let msg = B::default().int(64).uint(0).uint(3).raw(&[1, 2, 3]).done();
    assert_eq!(
        dec.decode_message(&msg),
        Ok(Some(Value::Slice(vec![
            Value::Uint(1),
            Value::Uint(2),
            Value::Uint(3)
        ])))
    );
}

#[test]
fn array_lengths_must_match_their_type() {
    let mut dec = decoder();
    define(&mut dec, &array_def(64, 2, 2));
    let msg = B::default().int(64).uint(0).uint(3).raw(&[0, 0, 0]).done();
    assert!(matches!(dec.decode_message(&msg), Err(Error::Corrupt(_))));
}

#[test]
fn nesting_is_limited() {
    let mut dec = Decoder::new(Limits {
        max_depth: 10,
        ..Limits::default()
    });
    define(&mut dec, &struct_def(64, "Node", &[("V", 2), ("Next", 64)]));
    // Each level: delta 2 to Next; the innermost ends with 00s.
    let nested = |levels: usize| {
        let mut b = B::default().int(64);
        for _ in 0..levels - 1 {
            b = b.uint(2);
        }
        b.raw(&vec![0; levels]).done()
    };
    assert!(dec.decode_message(&nested(10)).unwrap().is_some());
    assert_eq!(dec.decode_message(&nested(11)), Err(Error::TooDeep(10)));
    // A million levels are refused, not a stack overflow.
    let mut dec = decoder();
    define(&mut dec, &struct_def(64, "Node", &[("V", 2), ("Next", 64)]));
    assert_eq!(
        dec.decode_message(&nested(1_000_000)),
        Err(Error::TooDeep(64))
    );
}

#[test]
fn undefined_types_reserved_ids_and_bad_singletons_are_refused() {
    let msg = B::default().int(64).uint(0).done();
    assert_eq!(decoder().decode_message(&msg), Err(Error::UnknownType(64)));
    for id in [0, 9, 15, 25] {
        let msg = B::default().int(id).uint(0).uint(0).done();
        assert_eq!(
            decoder().decode_message(&msg),
            Err(Error::UnknownType(id)),
            "id {id}"
        );
    }
    let msg = B::default().int(6).uint(1).str("x").done();
    assert!(matches!(
        decoder().decode_message(&msg),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn field_numbers_past_the_struct_are_refused() {
    let mut dec = decoder();
    define(&mut dec, &struct_def(64, "R", &[("A", 2)]));
    let msg = B::default().int(64).uint(2).int(1).uint(0).done();
    assert!(matches!(dec.decode_message(&msg), Err(Error::Corrupt(_))));
    let msg = B::default().int(64).uint(u64::MAX).done();
    assert!(matches!(dec.decode_message(&msg), Err(Error::Corrupt(_))));
}

#[test]
fn trailing_bytes_and_empty_messages_are_refused() {
    let msg = B::default().int(3).uint(0).uint(1).raw(&[7]).done();
    assert_eq!(decoder().decode_message(&msg), Err(Error::TrailingData(1)));
    assert_eq!(decoder().decode_message(&[]), Err(Error::EmptyMessage));
}

#[test]
fn oversized_payloads_are_refused() {
    let mut dec = Decoder::new(Limits {
        max_message_len: 4,
        ..Limits::default()
    });
    assert_eq!(
        dec.decode_message(&[0x0c, 0x00, 0x03, b'a', b'b', b'c']),
        Err(Error::MessageTooLong { len: 6, limit: 4 })
    );
}

#[test]
fn interface_names_are_bounded() {
    let mut dec = decoder();
    define(&mut dec, &struct_def(64, "H", &[("Any", 8)]));
    let name = "x".repeat(2000);
    let msg = B::default()
        .int(64)
        .uint(1)
        .str(&name)
        .int(2)
        .uint(2)
        .uint(0)
        .uint(0)
        .uint(0)
        .done();
    assert!(matches!(dec.decode_message(&msg), Err(Error::Corrupt(_))));
}

/// A value split across messages may not grow past the message limit in total.
#[test]
fn split_values_are_bounded_in_size() {
    let mut dec = Decoder::new(Limits {
        max_message_len: 64,
        ..Limits::default()
    });
    define(&mut dec, &struct_def(64, "H", &[("Any", 8)]));
    // The value starts, names a concrete type, and defines it at the very end of the message.
    let mut start = B::default().int(64).uint(1).str("main.T").done();
    start.extend(struct_def(65, "T", &[("A", 2)]));
    assert_eq!(dec.decode_message(&start), Ok(None));
    let rest = B::default().int(65).uint(40).raw(&[0; 40]).done();
    assert!(matches!(
        dec.decode_message(&rest),
        Err(Error::MessageTooLong { .. })
    ));
    // The half-read definition of 65 was not kept: defining it now is fine.
    assert_eq!(
        dec.decode_message(&struct_def(65, "T", &[("A", 2)])),
        Ok(None)
    );
}

/// Go's decoder also accepts a continuation that starts with a definition and goes on, after
/// the delimiting count, with the concrete type id and the value; so do we.
#[test]
fn a_continuation_may_start_with_a_definition() {
    let mut dec = decoder();
    define(&mut dec, &struct_def(64, "H", &[("Any", 8)]));
    let mut start = B::default().int(64).uint(1).str("main.T").done();
    start.extend(struct_def(65, "T", &[("A", 2)]));
    assert_eq!(dec.decode_message(&start), Ok(None));
    let mut rest = struct_def(66, "U", &[("B", 2)]);
    rest.extend(
        B::default()
            .uint(9)
            .int(65)
            .uint(3)
            .uint(1)
            .int(4)
            .raw(&[0, 0])
            .done(),
    );
    let t = Value::Struct(gob::Struct {
        name: "T".into(),
        fields: vec![("A".into(), Value::Int(4))],
    });
    let h = gob::Struct {
        name: "H".into(),
        fields: vec![(
            "Any".into(),
            Value::Interface(Some(("main.T".into(), Box::new(t)))),
        )],
    };
    assert_eq!(dec.decode_message(&rest), Ok(Some(Value::Struct(h))));
    // Both definitions were kept.
    assert_eq!(
        dec.decode_message(&struct_def(66, "U", &[])),
        Err(Error::DuplicateType(66))
    );
}
