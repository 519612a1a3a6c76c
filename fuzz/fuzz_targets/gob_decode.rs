//! Arbitrary bytes as one gob stream: framing with `message_len`, then every message through
//! one `Decoder`, going on after errors too, so the state a failed message leaves behind
//! (pending split values, half-read definitions) is exercised as well. Any panic, hang or
//! out-of-memory is a bug: the peer controls these bytes.
#![no_main]

use gob::{Decoder, Limits, message_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_len: 1 << 20,
        ..Limits::default()
    };
    let mut decoder = Decoder::new(limits);
    let mut rest = data;
    while let Ok(Some((prefix, len))) = message_len(rest, limits.max_message_len) {
        let Some(payload) = rest.get(prefix..prefix + len) else {
            break;
        };
        let _ = decoder.decode_message(payload);
        rest = &rest[prefix + len..];
    }
});
