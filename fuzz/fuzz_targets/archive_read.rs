//! An archive object as the bucket returns it. Objects are input too: anyone who can write to
//! the bucket, a damaged upload, or another tool's file under our key. Every decoder of an
//! object runs on it: `decode_object` (what `get`, `migrate` and archive builds rely on) and
//! `log_json` (LogFind's answer, sized from the object's claimed uncompressed size), and the
//! two must agree; then the spool's record reader runs on the same bytes, as after a crash
//! tore or garbled a segment. Any panic, hang or out-of-memory is a bug.
//!
//! The first byte picks the mode: bit 0 compresses the rest first, so that mutations reach
//! the NDJSON records instead of ending in zstd's frame checks; bit 1 takes the next four
//! bytes as the `uncompressed-size` metadata the object claims.
#![no_main]

use archive::{ObjectInfo, ObjectMeta};
use engine::format::{self, RawRecord};
use engine::read::{Staged, log_json};
use libfuzzer_sys::fuzz_target;
use logservice::LogEntry;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (claimed, rest) = match rest.split_first_chunk::<4>() {
        Some((size, rest)) if mode & 2 != 0 => (Some(u32::from_le_bytes(*size)), rest),
        _ => (None, rest),
    };
    let object = if mode & 1 != 0 {
        zstd::encode_all(rest, 1).expect("compressing in memory")
    } else {
        rest.to_vec()
    };
    let mut meta = ObjectMeta::default();
    if let Some(size) = claimed {
        meta.user
            .insert(format::META_UNCOMPRESSED_SIZE.into(), size.to_string());
    }
    let info = ObjectInfo {
        size: object.len() as u64,
        meta,
        etag: None,
    };

    let decoded = format::decode_object(&object);
    let answer = log_json(Some((&object, &info)), &Staged::default());
    if let (Ok(entries), Ok(json)) = (&decoded, &answer) {
        let answered: Vec<LogEntry> =
            serde_json::from_slice(json).expect("LogFind's answer is a JSON array of entries");
        assert_eq!(
            &answered, entries,
            "LogFind's answer differs from the decoded object"
        );
    }

    // The spool's reader over the same bytes as a segment file, driven as the spool's
    // readers drive it: records in any order, an unreadable record skipped, a partial last
    // record the end. It must come to an end: each record consumes input.
    let segment = if mode & 1 != 0 { rest } else { &object[..] };
    let mut reader = format::RecordReader::unsorted(segment);
    let mut records = 0;
    loop {
        match reader.next_raw() {
            Ok(RawRecord::Line { .. }) | Err(format::RecordError::Json { .. }) => {}
            Ok(RawRecord::End | RawRecord::Torn { .. }) | Err(_) => break,
        }
        records += 1;
        assert!(records <= segment.len(), "the spool reader does not advance");
    }
});
