//! Inputs the fuzzers (fuzz/) found crashing, replayed as the target that found them did.

use goplugin::Limits;
use goplugin::netrpc::{ReadError, read_requests, read_requests_in_pieces};

/// `netrpc_decode`: a request body whose gob length prefix claims 2^64 - 1 bytes. The body is
/// over the limit, so the decoder skips it, and the bytes to skip (the prefix plus that
/// length) overflowed: a panic with overflow checks, a wrong skip without. A message that
/// long never ends, so the stream ends in an unexpected EOF.
#[test]
fn a_body_claiming_two_to_the_64_bytes_is_skipped_to_the_end() {
    let input = include_bytes!("fuzz-regressions/netrpc_decode-skip-length-overflow");
    // The target's mode byte: 64 bytes at a time, the generous limit.
    let (&mode, data) = input.split_first().unwrap();
    assert_eq!(mode, 0x3f);
    let limits = Limits {
        max_message_len: 1 << 20,
        ..Limits::default()
    };
    let (requests, error) = read_requests(data, limits);
    assert!(requests.is_empty(), "{requests:?}");
    assert!(matches!(error, Some(ReadError::UnexpectedEof)), "{error:?}");
    let (requests, error) = read_requests_in_pieces(data, limits, 64);
    assert!(requests.is_empty(), "{requests:?}");
    assert!(matches!(error, Some(ReadError::UnexpectedEof)), "{error:?}");
}
