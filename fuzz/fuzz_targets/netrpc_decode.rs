//! The net/rpc request decoder on arbitrary bytes, without IO: the first input byte chooses
//! how the rest arrives (1 to 64 bytes at a time) and whether the message limit is tiny (so
//! oversize bodies are skipped often) or generous. Fed in pieces, the decoder must read
//! exactly what it reads from the whole input at once: the same requests, then the same
//! error or the same clean end. Any panic, hang or out-of-memory is a bug: the peer controls
//! these bytes.
#![no_main]

use goplugin::Limits;
use goplugin::netrpc::{read_requests, read_requests_in_pieces};
use libfuzzer_sys::fuzz_target;

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
    let (pieces, pieces_error) = read_requests_in_pieces(data, limits, chunk);
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
