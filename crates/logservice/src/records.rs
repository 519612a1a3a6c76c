//! Log entries kept as Woodpecker's own JSON text instead of decoded values.
//!
//! The server marshals every `model.LogEntry` with Go's `encoding/json`, which always writes
//! the same bytes for the same entry: `{"id":…,"step_id":…,"time":…,"line":…,"data":…,
//! "type":…}`, no spaces, `data` as padded standard base64 or `null`. A store that keeps
//! those bytes and hands them back needs no base64 decoding or encoding at all, which is most
//! of the work of a log append and a log read. [`canonical_line`] recognises that exact form
//! (and nothing else), so every record a store keeps this way is one Go reads back as the
//! same entry; anything else takes the slow road through [`LogEntry`] and is re-encoded.

use std::ops::Range;

use crate::LogEntry;

/// A batch of log entries as NDJSON: each entry in Go's canonical JSON on its own line.
#[derive(Clone, Debug, Default)]
pub struct EntryRecords {
    /// Holds the records at `ndjson`; when they were taken from a host's arguments in place,
    /// the rest of those arguments around them.
    buf: Vec<u8>,
    ndjson: Range<usize>,
    count: usize,
}

impl PartialEq for EntryRecords {
    fn eq(&self, other: &Self) -> bool {
        self.as_ndjson() == other.as_ndjson()
    }
}

impl Eq for EntryRecords {}

impl EntryRecords {
    /// Encodes entries (as Go's `json.Marshal` would).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a LogEntry>) -> Self {
        let mut buf = Vec::new();
        let mut count = 0;
        for entry in entries {
            push_entry(entry, &mut buf);
            buf.push(b'\n');
            count += 1;
        }
        Self {
            ndjson: 0..buf.len(),
            buf,
            count,
        }
    }

    /// Takes the entries of a JSON array of `LogEntry` objects (what the server sends as
    /// `log_entries`). Entries in Go's canonical form are copied as they are; any other array
    /// (spaces, reordered or missing fields, escapes) is decoded and re-encoded. `null` items
    /// are skipped, as Go's stores skip nil entries.
    pub fn from_json_array(json: &[u8]) -> Result<Self, serde_json::Error> {
        Self::take_canonical_array(json.to_vec(), 0..json.len()).or_else(|_| {
            let entries: Vec<Option<LogEntry>> = serde_json::from_slice(json)?;
            Ok(Self::from_entries(entries.iter().flatten()))
        })
    }

    /// Takes the JSON array at `array` in `buf` without copying it, if every item is a
    /// canonical entry: the commas between the items and the closing bracket become
    /// newlines, which makes the array's inside NDJSON where it lies. Otherwise `buf` comes
    /// back untouched.
    pub fn take_canonical_array(mut buf: Vec<u8>, array: Range<usize>) -> Result<Self, Vec<u8>> {
        let Some(json) = buf.get(array.clone()) else {
            return Err(buf);
        };
        let mut separators = Vec::new();
        let mut pos = 1;
        if json.first() != Some(&b'[') {
            return Err(buf);
        }
        if json.get(1) != Some(&b']') {
            loop {
                let Some((_, len)) = scan_entry(&json[pos..]) else {
                    return Err(buf);
                };
                pos += len;
                separators.push(array.start + pos);
                match json.get(pos) {
                    Some(b',') => pos += 1,
                    Some(b']') => break,
                    _ => return Err(buf),
                }
            }
        }
        if pos + 1 != json.len() {
            return Err(buf);
        }
        for separator in &separators {
            buf[*separator] = b'\n';
        }
        let start = array.start + 1;
        let end = separators.last().map_or(start, |last| last + 1);
        Ok(Self {
            buf,
            ndjson: start..end,
            count: separators.len(),
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, each followed by `\n`.
    pub fn as_ndjson(&self) -> &[u8] {
        &self.buf[self.ndjson.clone()]
    }

    /// Each record, without its newline.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.as_ndjson().split(|b| *b == b'\n').take(self.count)
    }

    /// Decodes the records, for stores that keep entries rather than text.
    pub fn to_entries(&self) -> Result<Vec<LogEntry>, serde_json::Error> {
        self.iter().map(serde_json::from_slice).collect()
    }
}

/// Appends `entry` as Go's `json.Marshal` writes it.
pub fn push_entry(entry: &LogEntry, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, entry).expect("a LogEntry always serializes");
}

/// Appends `record` (one entry's JSON, without newline) to `out` in canonical form, and
/// returns its line: copied when it is canonical already, decoded and re-encoded otherwise.
pub fn push_canonical(record: &[u8], out: &mut Vec<u8>) -> Result<i64, serde_json::Error> {
    if let Some(line) = canonical_line(record) {
        out.extend_from_slice(record);
        return Ok(line);
    }
    let entry: LogEntry = serde_json::from_slice(record)?;
    push_entry(&entry, out);
    Ok(entry.line)
}

/// The `line` of `record` if the record is exactly Go's `json.Marshal` of a `LogEntry`
/// (nothing before or after it), `None` otherwise.
pub fn canonical_line(record: &[u8]) -> Option<i64> {
    match scan_entry(record) {
        Some((line, len)) if len == record.len() => Some(line),
        _ => None,
    }
}

/// Matches one canonical entry at the start of `input`: its line and its length in bytes.
fn scan_entry(input: &[u8]) -> Option<(i64, usize)> {
    let mut s = Scanner { input, pos: 0 };
    s.literal(b"{\"id\":")?;
    s.int()?;
    s.literal(b",\"step_id\":")?;
    s.int()?;
    s.literal(b",\"time\":")?;
    s.int()?;
    s.literal(b",\"line\":")?;
    let line = s.int()?;
    s.literal(b",\"data\":")?;
    if s.literal(b"null").is_none() {
        s.literal(b"\"")?;
        let start = s.pos;
        let len = memchr::memchr(b'"', &s.input[start..])?;
        if !is_canonical_base64(&s.input[start..start + len]) {
            return None;
        }
        s.pos = start + len + 1;
    }
    s.literal(b",\"type\":")?;
    s.int()?;
    s.literal(b"}")?;
    Some((line, s.pos))
}

struct Scanner<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    /// Fixed-size so that the comparison is inlined (this runs six times per log line).
    fn literal<const N: usize>(&mut self, text: &[u8; N]) -> Option<()> {
        if self.input[self.pos..].first_chunk::<N>() == Some(text) {
            self.pos += N;
            Some(())
        } else {
            None
        }
    }

    /// A Go `int64` as `strconv` writes it: `-?(0|[1-9][0-9]*)`, in range.
    fn int(&mut self) -> Option<i64> {
        let rest = &self.input[self.pos..];
        let negative = rest.first() == Some(&b'-');
        let digits = &rest[usize::from(negative)..];
        // Up to 20 digits are read (one more than any i64 has), so the magnitude of an
        // accepted number (at most 19 digits) never wraps.
        let mut magnitude: u64 = 0;
        let mut len = 0;
        for &b in digits.iter().take(20) {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(digit));
            len += 1;
        }
        if len == 0 || len > 19 || (len > 1 && digits[0] == b'0') {
            return None;
        }
        let value = if negative {
            if magnitude == 0 {
                return None;
            }
            0i64.checked_sub_unsigned(magnitude)?
        } else {
            i64::try_from(magnitude).ok()?
        };
        self.pos += usize::from(negative) + len;
        Some(value)
    }
}

/// Whether `text` is padded standard base64 that decodes strictly: what Go's encoder writes
/// and what `base64`'s `STANDARD` engine (and Go's decoder) accept, trailing bits zero.
fn is_canonical_base64(text: &[u8]) -> bool {
    /// The 6-bit value of each base64 character; 0xff for anything else.
    const VALUES: [u8; 256] = {
        let mut table = [0xff; 256];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut i = 0;
        while i < alphabet.len() {
            table[alphabet[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    if !text.len().is_multiple_of(4) {
        return false;
    }
    let padding = text.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return false;
    }
    let body = &text[..text.len() - padding];
    // Valid values are below 64: OR-ing them all finds an invalid character (0xff) in one
    // branch-free pass.
    if body.iter().fold(0u8, |acc, b| acc | VALUES[*b as usize]) & 0x80 != 0 {
        return false;
    }
    // The last character before padding must not carry bits past the data.
    match (padding, body.last()) {
        (0, _) | (_, None) => true,
        (1, Some(last)) => VALUES[*last as usize] & 0b11 == 0,
        (_, Some(last)) => VALUES[*last as usize] & 0b1111 == 0,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn entry(line: i64, data: Option<&[u8]>) -> LogEntry {
        LogEntry {
            id: 0,
            step_id: 9,
            time: 1_700_000_000,
            line,
            data: data.map(<[u8]>::to_vec),
            entry_type: 1,
        }
    }

    #[test]
    fn our_own_encoding_is_canonical() {
        for e in [
            entry(0, None),
            entry(1, Some(b"")),
            entry(-7, Some(b"a")),
            entry(i64::MAX, Some(b"ab")),
            entry(i64::MIN, Some(&[0xff, 0, 0xfe, b'\n'])),
        ] {
            let mut json = Vec::new();
            push_entry(&e, &mut json);
            assert_eq!(
                canonical_line(&json),
                Some(e.line),
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
    }

    #[test]
    fn anything_else_is_not_canonical() {
        let canonical = br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YQ==","type":0}"#;
        assert_eq!(canonical_line(canonical), Some(3));
        for other in [
            &br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YQ==","type":0} "#[..],
            br#"{"id":0, "step_id":9,"time":5,"line":3,"data":"YQ==","type":0}"#,
            br#"{"step_id":9,"id":0,"time":5,"line":3,"data":"YQ==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YQ==","type":0,"x":1}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":03,"data":"YQ==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":-0,"data":"YQ==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3.0,"data":"YQ==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":9223372036854775808,"data":"","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YR==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YQ","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"Y\u0051==","type":0}"#,
            br#"{"id":0,"step_id":9,"time":5,"line":3,"data":"YQ==","type":"0"}"#,
        ] {
            assert_eq!(
                canonical_line(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// The hand-written check agrees with the decoder reads use: every string of up to 4
    /// characters over a set that covers each case, and every 8-character string over the
    /// characters that decide padding and trailing bits (values 0, 4 and 25).
    #[test]
    fn base64_check_agrees_with_the_strict_decoder() {
        for (chars, max_len) in [(&b"AQgwE/+=Z!"[..], 4), (&b"AEZ=!"[..], 8)] {
            let mut text = Vec::new();
            for len in 0..=max_len {
                for n in 0..chars.len().pow(len) {
                    text.clear();
                    let mut k = n;
                    for _ in 0..len {
                        text.push(chars[k % chars.len()]);
                        k /= chars.len();
                    }
                    assert_eq!(
                        is_canonical_base64(&text),
                        STANDARD.decode(&text).is_ok(),
                        "{}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
    }

    #[test]
    fn canonical_arrays_are_copied_and_others_re_encoded_alike() {
        let entries = vec![entry(2, Some(b"two")), entry(1, None), entry(3, Some(b""))];
        let canonical = serde_json::to_vec(&entries).unwrap();
        let fast = EntryRecords::from_json_array(&canonical).unwrap();
        assert_eq!(fast, EntryRecords::from_entries(&entries));
        assert_eq!(fast.len(), 3);
        assert_eq!(fast.to_entries().unwrap(), entries);

        let spaced = serde_json::to_vec_pretty(&entries).unwrap();
        assert_eq!(EntryRecords::from_json_array(&spaced).unwrap(), fast);
        let with_null = br#"[null,{"line":4,"data":"eA=="}]"#;
        let slow = EntryRecords::from_json_array(with_null).unwrap();
        assert_eq!(slow.len(), 1);
        assert!(canonical_line(slow.iter().next().unwrap()).is_some());
        assert_eq!(EntryRecords::from_json_array(b"[]").unwrap().len(), 0);
        assert!(
            EntryRecords::from_json_array(b"[]")
                .unwrap()
                .as_ndjson()
                .is_empty()
        );
        assert!(EntryRecords::from_json_array(br#"[{"data":"%%"}]"#).is_err());
        assert!(EntryRecords::from_json_array(b"[").is_err());
    }

    #[test]
    fn arrays_are_taken_in_place_or_given_back_untouched() {
        let entries = vec![entry(1, Some(b"one")), entry(2, None)];
        let array = serde_json::to_vec(&entries).unwrap();
        let mut args = b"{\"step\":{},\"log_entries\":".to_vec();
        let start = args.len();
        args.extend_from_slice(&array);
        let end = args.len();
        args.push(b'}');

        let records = EntryRecords::take_canonical_array(args.clone(), start..end).unwrap();
        assert_eq!(records, EntryRecords::from_entries(&entries));
        assert_eq!(records.as_ndjson().last(), Some(&b'\n'));
        assert_eq!(records.to_entries().unwrap(), entries);

        // Not the whole array, or a foreign item: nothing changed.
        for range in [
            start..end - 1,
            start + 1..end,
            start..end + 1,
            start..end + 2,
        ] {
            assert_eq!(
                EntryRecords::take_canonical_array(args.clone(), range).unwrap_err(),
                args
            );
        }
        let spaced = String::from_utf8(args.clone())
            .unwrap()
            .replacen("},{", "}, {", 1)
            .into_bytes();
        let spaced_end = end + 1;
        assert_eq!(
            EntryRecords::take_canonical_array(spaced.clone(), start..spaced_end).unwrap_err(),
            spaced
        );
    }

    #[test]
    fn push_canonical_re_encodes_foreign_records() {
        let mut out = Vec::new();
        let line = push_canonical(br#"{ "line": 5, "data": "eA==" }"#, &mut out).unwrap();
        assert_eq!(line, 5);
        assert_eq!(canonical_line(&out), Some(5));
        assert!(push_canonical(b"{nope", &mut Vec::new()).is_err());
    }
}
