//! The net/rpc request decoder on arbitrary bytes, without IO: the first input byte chooses
//! how the rest arrives (1 to 64 bytes at a time) and whether the message limit is tiny (so
//! oversize bodies are skipped often) or generous. Fed in pieces, the decoder must read
//! exactly what it reads from the whole input at once: the same requests, then the same
//! error or the same clean end. Any panic, hang or out-of-memory is a bug: the peer controls
//! these bytes.
#![no_main]

use bytes::BytesMut;
use goplugin::Limits;
use goplugin::netrpc::{ReadError, Request, RequestDecoder, read_requests};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Feeds `data` to one decoder `chunk` bytes at a time, as the server's read loop does.
fn decode_in_chunks(
    data: &[u8],
    limits: Limits,
    chunk: usize,
) -> (Vec<Request>, Option<ReadError>) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, None),
            Err(e) => return (requests, Some(e)),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_message_len: if mode & 0x80 != 0 { 64 } else { 1 << 20 },
        ..Limits::default()
    };
    let chunk = usize::from(mode & 0x3f) + 1;
    let (whole, whole_error) = read_requests(data, limits);
    let (pieces, pieces_error) = decode_in_chunks(data, limits, chunk);
    // Compared as text: a decoded NaN float is not equal to itself.
    assert_eq!(
        format!("{whole:?}"),
        format!("{pieces:?}"),
        "requests differ when fed {chunk} bytes at a time"
    );
    assert_eq!(
        whole_error.map(|e| e.to_string()),
        pieces_error.map(|e| e.to_string()),
        "the end differs when fed {chunk} bytes at a time"
    );
});
