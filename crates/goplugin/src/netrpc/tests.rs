//! The codec on Go's own bytes, whole and split anywhere, and on hostile input.

use bytes::BytesMut;
use gob::{Encoder, Limits, Value};
use tokio_util::codec::Decoder;

use super::codec::{ResponseDecoder, encode_reply, encode_request};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// PROTOCOL.md §Golden bytes: Woodpecker's first `Plugin.LogFind` on a broker stream.
const FIRST_LOGFIND: &str = "2e 7f 03 01 01 07 52 65 71 75 65 73 74 01 ff 80 00 01 02 01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00 01 03 53 65 71 01 06 00 00 00
     13 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 00
     0b 0a 00 08 7b 22 69 64 22 3a 35 7d";

/// A second call, Seq 1, reusing the definition of [`FIRST_LOGFIND`].
const SECOND_LOGFIND: &str = "15 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 01 01 00 0b 0a 00 08 7b 22 69 64 22 3a 35 7d";

fn request(seq: u64, body: Result<Value, OversizeBody>) -> Request {
    Request {
        service_method: "Plugin.LogFind".to_string(),
        seq,
        body,
    }
}

#[test]
fn reads_go_requests_split_anywhere() {
    let mut data = hex(FIRST_LOGFIND);
    data.extend(hex(SECOND_LOGFIND));
    let (requests, error) = read_requests(&data, Limits::default());
    assert!(error.is_none(), "{error:?}");
    let body = Value::Bytes(br#"{"id":5}"#.to_vec());
    assert_eq!(
        requests,
        vec![request(0, Ok(body.clone())), request(1, Ok(body))]
    );
    // Every truncation is an error or a clean prefix, never a panic or a wrong request.
    for cut in 0..data.len() {
        let (got, _) = read_requests(&data[..cut], Limits::default());
        assert!(got.len() <= 2 && got.iter().all(|r| r.service_method == "Plugin.LogFind"));
    }
    // However the bytes arrive, the decoder reads the same requests.
    for chunk in 1..data.len() {
        let (got, error) = read_requests_in_pieces(&data, Limits::default(), chunk);
        assert!(error.is_none(), "chunk {chunk}: {error:?}");
        assert_eq!(got, requests, "chunk {chunk}");
    }
}

#[test]
fn hostile_input_is_an_error() {
    let small = Limits {
        max_message_len: 16,
        ..Limits::default()
    };
    let (_, error) = read_requests(&hex(FIRST_LOGFIND), small);
    assert!(matches!(
        error,
        Some(ReadError::Gob(gob::Error::MessageTooLong { .. }))
    ));
    // A header that is a string, not a struct.
    let (_, error) = read_requests(&hex("06 0c 00 03 6c 6f 67 03 02 00 01"), Limits::default());
    assert!(matches!(error, Some(ReadError::Malformed(_))), "{error:?}");
    // A zero-length message.
    let (_, error) = read_requests(&[0], Limits::default());
    assert!(matches!(
        error,
        Some(ReadError::Gob(gob::Error::EmptyMessage))
    ));
    // Ends in the middle of a message.
    let (_, error) = read_requests(&[0x05, 0x01], Limits::default());
    assert!(matches!(error, Some(ReadError::UnexpectedEof)));
}

/// A body over the limit is passed over without being buffered and refused, and the next
/// request is read as usual, however the bytes arrive.
#[test]
fn oversize_body_is_skipped_and_refused() {
    // The Request definition is the largest message the header needs: 46 bytes.
    let limits = Limits {
        max_message_len: 46,
        ..Limits::default()
    };
    let mut data = hex(FIRST_LOGFIND);
    data.truncate(data.len() - 12);
    // A 60-byte []byte body: a 63-byte message.
    data.extend(hex("3f 0a 00 3c"));
    data.extend([b'x'; 60]);
    data.extend(hex(SECOND_LOGFIND));
    let expected = vec![
        request(0, Err(OversizeBody { len: 63, limit: 46 })),
        request(1, Ok(Value::Bytes(br#"{"id":5}"#.to_vec()))),
    ];
    assert_eq!(
        expected[0].body.as_ref().unwrap_err().to_string(),
        "the request of 63 bytes is over the plugin's limit of 46 bytes"
    );
    for chunk in 1..=data.len() {
        let (got, error) = read_requests_in_pieces(&data, limits, chunk);
        assert!(error.is_none(), "chunk {chunk}: {error:?}");
        assert_eq!(got, expected, "chunk {chunk}");
    }
    // The stream ending inside the skipped body is an unexpected EOF.
    let header_len = hex(FIRST_LOGFIND).len() - 12;
    let (got, error) = read_requests(&data[..header_len + 30], limits);
    assert!(got.is_empty());
    assert!(matches!(error, Some(ReadError::UnexpectedEof)), "{error:?}");
}

/// What the server's encoder writes, the client's decoder reads back: a `[]byte` reply, a
/// struct reply, an error (with its empty-struct body) and a reply gob cannot encode.
#[test]
fn replies_round_trip_through_the_response_decoder() {
    let mut encoder = Encoder::new();
    let mut wire = Vec::new();
    let replies: [(u64, Result<Value, String>); 4] = [
        (0, Ok(Value::Bytes(b"[]".to_vec()))),
        (1, Ok(Value::empty_struct())),
        (2, Err("boom".to_string())),
        (3, Ok(Value::Map(Vec::new()))),
    ];
    for (seq, result) in replies {
        let mut header = Vec::new();
        let body = encode_reply(&mut encoder, "Plugin.LogFind", seq, result, &mut header);
        wire.extend(header);
        wire.extend(body);
    }
    let mut decoder = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&wire[..]);
    let mut got = Vec::new();
    while let Some(response) = decoder.decode_eof(&mut buf).unwrap() {
        got.push((response.seq, response.error, response.body));
    }
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], (0, String::new(), Value::Bytes(b"[]".to_vec())));
    assert_eq!(got[1], (1, String::new(), Value::empty_struct()));
    assert_eq!(got[2], (2, "boom".to_string(), Value::empty_struct()));
    assert_eq!(got[3].0, 3);
    assert!(
        got[3]
            .1
            .starts_with("Plugin.LogFind: cannot encode the reply")
    );
    // A reply cut short is an unexpected EOF, never a reply.
    let mut decoder = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
    let mut results = std::iter::from_fn(|| decoder.decode_eof(&mut buf).transpose());
    assert!(results.by_ref().take(3).all(|r| r.is_ok()));
    assert!(matches!(
        results.next(),
        Some(Err(ReadError::UnexpectedEof))
    ));
}

/// A request the client encodes is what the server's decoder reads.
#[test]
fn requests_round_trip_through_the_request_decoder() {
    let mut encoder = Encoder::new();
    let mut wire = encode_request(&mut encoder, "Plugin.LogFind", 0, &Value::Bool(true)).unwrap();
    wire.extend(
        encode_request(
            &mut encoder,
            "Plugin.LogFind",
            1,
            &Value::Bytes(b"{}".to_vec()),
        )
        .unwrap(),
    );
    assert!(encode_request(&mut encoder, "Plugin.LogFind", 2, &Value::Map(Vec::new())).is_err());
    let (got, error) = read_requests(&wire, Limits::default());
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        got,
        vec![
            request(0, Ok(Value::Bool(true))),
            request(1, Ok(Value::Bytes(b"{}".to_vec())))
        ]
    );
}

/// What the `netrpc_decode` fuzz target checks, on every one-byte corruption of two real
/// requests: fed in pieces, the decoder reads exactly what it reads from the whole input.
#[test]
fn corrupted_input_reads_the_same_however_it_arrives() {
    let mut data = hex(FIRST_LOGFIND);
    data.extend(hex(SECOND_LOGFIND));
    let small = Limits {
        max_message_len: 46,
        ..Limits::default()
    };
    for at in 0..data.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut input = data.clone();
            input[at] ^= flip;
            for limits in [Limits::default(), small] {
                let (whole, whole_error) = read_requests(&input, limits);
                for chunk in [1, 5, 13] {
                    let (pieces, pieces_error) = read_requests_in_pieces(&input, limits, chunk);
                    assert_eq!(
                        format!("{whole:?} {whole_error:?}"),
                        format!("{pieces:?} {pieces_error:?}"),
                        "byte {at} ^ {flip:#x}, {chunk}-byte pieces"
                    );
                }
            }
        }
    }
}
