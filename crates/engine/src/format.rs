//! The archive object format, version 1 (documented for people in `FORMAT.md`).
//!
//! One object per step: newline-delimited JSON of Woodpecker `LogEntry` values, sorted by
//! `line` with one entry per line number, compressed with zstd. The spool uses the same NDJSON
//! records uncompressed, so a record travels from an agent's batch into an archive without
//! being reinterpreted.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use archive::ObjectMeta;
use logservice::{LogEntry, StepId};

mod bounded;
pub use bounded::{
    Inflated, MAX_COMPRESSION_RATIO, TextLimit, WINDOW_LOG_MAX, object_reader_within, text_limit,
};

/// Bumped whenever a reader of the previous version could misread an object. It is part of
/// the key, so two versions can live side by side during a migration.
pub const FORMAT_VERSION: u32 = 1;
/// The objects' `Content-Type`: NDJSON.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// The objects' `Content-Encoding`: one zstd frame.
pub const CONTENT_ENCODING: &str = "zstd";

// User metadata keys (S3 `x-amz-meta-*`, lower case).
/// User metadata: the format version, [`FORMAT_VERSION`].
pub const META_FORMAT_VERSION: &str = "format-version";
/// User metadata: the step id.
pub const META_STEP_ID: &str = "step-id";
/// User metadata: the number of entries, checked after every upload.
pub const META_LINE_COUNT: &str = "line-count";
/// User metadata: the smallest `line`.
pub const META_FIRST_LINE: &str = "first-line";
/// User metadata: the largest `line`.
pub const META_LAST_LINE: &str = "last-line";
/// User metadata: the bytes of the NDJSON before compression (sizes a read's answer).
pub const META_UNCOMPRESSED_SIZE: &str = "uncompressed-size";

/// The longest record a reader accepts. Woodpecker batches are at most 1 MiB, so one entry's
/// JSON (base64 data) stays well below this; the bound keeps a hostile or corrupt file from
/// making a reader allocate without limit.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// The object key of a step: `<prefix>/v1/<id % 1000, 3 digits>/<id>.ndjson.zst`.
///
/// Built only from the validated id, so nothing the host sends can name another object. The
/// three-digit shard spreads keys over prefixes (S3 scales request rates per prefix) and keeps
/// local directories small.
pub fn object_key(prefix: &str, id: StepId) -> String {
    let tail = format!(
        "v{FORMAT_VERSION}/{:03}/{}.ndjson.zst",
        id.get() % 1000,
        id.get()
    );
    match prefix.trim_matches('/') {
        "" => tail,
        prefix => format!("{prefix}/{tail}"),
    }
}

/// The key prefix under which every object of this format lies: `<prefix>/v1/` (or `v1/`).
pub fn objects_prefix(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => format!("v{FORMAT_VERSION}/"),
        prefix => format!("{prefix}/v{FORMAT_VERSION}/"),
    }
}

/// The step whose object `key` is, or `None` when `key` is not exactly what
/// [`object_key`] builds for some step under `prefix` (another format, a stray upload, a
/// wrong shard): tools that delete by step id (`gc`) leave such keys alone.
pub fn step_of_key(prefix: &str, key: &str) -> Option<StepId> {
    let rest = key.strip_prefix(&objects_prefix(prefix))?;
    let (shard, file) = rest.split_once('/')?;
    let digits = file.strip_suffix(".ndjson.zst")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = StepId::new(digits.parse().ok()?).ok()?;
    (object_key(prefix, id) == key && shard.len() == 3).then_some(id)
}

/// What an archive object holds, as recorded in its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries in the object.
    pub lines: u64,
    /// The smallest `line`, if any entry.
    pub first_line: Option<i64>,
    /// The largest `line`, if any entry.
    pub last_line: Option<i64>,
    /// Bytes of the NDJSON before compression.
    pub uncompressed_size: u64,
}

impl Summary {
    /// The object's headers and user metadata for step `id` (see `FORMAT.md`).
    pub fn to_meta(&self, id: StepId) -> ObjectMeta {
        let mut user = BTreeMap::new();
        user.insert(META_FORMAT_VERSION.into(), FORMAT_VERSION.to_string());
        user.insert(META_STEP_ID.into(), id.to_string());
        user.insert(META_LINE_COUNT.into(), self.lines.to_string());
        if let (Some(first), Some(last)) = (self.first_line, self.last_line) {
            user.insert(META_FIRST_LINE.into(), first.to_string());
            user.insert(META_LAST_LINE.into(), last.to_string());
        }
        user.insert(
            META_UNCOMPRESSED_SIZE.into(),
            self.uncompressed_size.to_string(),
        );
        ObjectMeta {
            content_type: CONTENT_TYPE.into(),
            content_encoding: CONTENT_ENCODING.into(),
            user,
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading (or decompressing) failed.
    #[error("{0}")]
    Io(io::Error),
    /// The object decompressed to more than it may (see [`object_reader_within`]).
    #[error("{0}")]
    Inflated(Inflated),
    /// A record longer than [`MAX_RECORD_BYTES`] starts at `offset`.
    #[error("record at byte {offset} is longer than {MAX_RECORD_BYTES} bytes")]
    TooLong {
        /// Where the record starts.
        offset: u64,
    },
    /// The record at `offset` is not a log entry.
    #[error("record at byte {offset} is not a log entry: {source}")]
    Json {
        /// Where the record starts.
        offset: u64,
        /// What the JSON decoder said.
        source: serde_json::Error,
    },
    /// In an archive object, a `line` that does not follow the previous one.
    #[error("line {line} at byte {offset} does not follow line {previous} (not sorted)")]
    Unsorted {
        /// Where the record starts.
        offset: u64,
        /// Its line.
        line: i64,
        /// The line of the record before it.
        previous: i64,
    },
}

/// The next item of an NDJSON stream.
pub enum Record {
    /// A complete record, with the offset just past its newline.
    Entry(LogEntry, u64),
    /// Bytes after the last newline: a write cut short by a crash (or still in progress).
    Torn {
        /// Where the partial record starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The end of the stream, after a complete record.
    End,
}

/// Reads NDJSON log entries one at a time with a bounded buffer.
pub struct RecordReader<R> {
    reader: R,
    buf: Vec<u8>,
    offset: u64,
    /// Set for archive objects: lines must be strictly increasing.
    sorted: Option<Option<i64>>,
}

impl<R: BufRead> RecordReader<R> {
    /// A reader of spool records (any order).
    pub fn unsorted(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            offset: 0,
            sorted: None,
        }
    }

    /// A reader of archive objects: a line that does not follow the previous one is an error,
    /// so a damaged or foreign object is reported instead of merged wrongly.
    pub fn sorted(reader: R) -> Self {
        Self {
            sorted: Some(None),
            ..Self::unsorted(reader)
        }
    }

    /// Bytes consumed so far: where the next record starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next line into `buf`.
    fn fill(&mut self) -> Result<Filled, RecordError> {
        self.buf.clear();
        let start = self.offset;
        let limit = MAX_RECORD_BYTES as u64 + 1;
        let read = io::Read::take(&mut self.reader, limit).read_until(b'\n', &mut self.buf)?;
        if read == 0 {
            return Ok(Filled::End);
        }
        if self.buf.last() != Some(&b'\n') {
            if read as u64 >= limit {
                return Err(RecordError::TooLong { offset: start });
            }
            return Ok(Filled::Torn(start, read as u64));
        }
        self.offset += read as u64;
        Ok(Filled::Line(start))
    }

    fn check_order(&mut self, line: i64, offset: u64) -> Result<(), RecordError> {
        if let Some(previous) = &mut self.sorted {
            if let Some(prev) = *previous
                && line <= prev
            {
                return Err(RecordError::Unsorted {
                    offset,
                    line,
                    previous: prev,
                });
            }
            *previous = Some(line);
        }
        Ok(())
    }

    /// The next record. A record that is not valid JSON is an error that still advances past
    /// it, so a caller may skip it and continue.
    pub fn next_record(&mut self) -> Result<Record, RecordError> {
        let start = match self.fill()? {
            Filled::End => return Ok(Record::End),
            Filled::Torn(offset, len) => return Ok(Record::Torn { offset, len }),
            Filled::Line(start) => start,
        };
        let entry: LogEntry =
            serde_json::from_slice(&self.buf).map_err(|source| RecordError::Json {
                offset: start,
                source,
            })?;
        self.check_order(entry.line, start)?;
        Ok(Record::Entry(entry, self.offset))
    }

    /// The next record as its line number and raw bytes (newline included), without
    /// decoding `data`: how archive building and reads move records. A record in Go's
    /// canonical form (every record this crate writes) is recognised without a JSON parser;
    /// any other must still be a JSON object with an integer `line`.
    pub fn next_raw(&mut self) -> Result<RawRecord<'_>, RecordError> {
        /// Only the field the merge needs; the rest is scanned, not decoded.
        #[derive(serde::Deserialize)]
        struct LineOnly {
            #[serde(default)]
            line: i64,
        }
        let start = match self.fill()? {
            Filled::End => return Ok(RawRecord::End),
            Filled::Torn(offset, len) => return Ok(RawRecord::Torn { offset, len }),
            Filled::Line(start) => start,
        };
        let record = &self.buf[..self.buf.len() - 1];
        let (line, canonical) = match logservice::canonical_line(record) {
            Some(line) => (line, true),
            None => {
                let LineOnly { line } =
                    serde_json::from_slice(record).map_err(|source| RecordError::Json {
                        offset: start,
                        source,
                    })?;
                (line, false)
            }
        };
        self.check_order(line, start)?;
        Ok(RawRecord::Line {
            line,
            bytes: &self.buf,
            canonical,
        })
    }
}

impl From<io::Error> for RecordError {
    fn from(error: io::Error) -> Self {
        match error.get_ref().and_then(|e| e.downcast_ref::<Inflated>()) {
            Some(inflated) => Self::Inflated(*inflated),
            None => Self::Io(error),
        }
    }
}

enum Filled {
    Line(u64),
    Torn(u64, u64),
    End,
}

/// [`Record`] without decoding: a line number and the record's bytes.
pub enum RawRecord<'a> {
    /// `bytes` include the newline. `canonical`: the record is exactly Go's JSON of a log
    /// entry (see [`logservice::canonical_line`]), so it can be copied into an answer as it
    /// is; otherwise it is only known to be a JSON object with an integer `line`.
    Line {
        /// The entry's line number.
        line: i64,
        /// The record, newline included.
        bytes: &'a [u8],
        /// Whether the record is Go's JSON of the entry, byte for byte.
        canonical: bool,
    },
    /// Bytes after the last newline, as in [`Record::Torn`].
    Torn {
        /// Where the partial record starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The end of the stream, after a complete record.
    End,
}

/// Appends one entry as an NDJSON record to `out`: Go's `json.Marshal` of the entry and a
/// newline.
pub fn encode_record(entry: &LogEntry, out: &mut Vec<u8>) {
    logservice::push_entry(entry, out);
    out.push(b'\n');
}

/// Writes a version-1 object: sorted, deduplicated records through a zstd encoder.
pub struct ObjectWriter<W: Write> {
    encoder: zstd::Encoder<'static, W>,
    summary: Summary,
    buf: Vec<u8>,
}

impl<W: Write> ObjectWriter<W> {
    /// A writer of an object into `out`, at zstd level `level`.
    pub fn new(out: W, level: i32) -> io::Result<Self> {
        let mut encoder = zstd::Encoder::new(out, level)?;
        // A frame checksum (xxHash, 4 bytes) lets every reader tell a damaged object from a
        // valid one before a record of it reaches the host.
        encoder.include_checksum(true)?;
        Ok(Self {
            encoder,
            summary: Summary::default(),
            buf: Vec::new(),
        })
    }

    /// Adds the next entry; its line must be greater than the previous one.
    pub fn push(&mut self, entry: &LogEntry) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        encode_record(entry, &mut buf);
        let result = self.push_raw(entry.line, &buf);
        self.buf = buf;
        result
    }

    /// Adds an already encoded record (as [`encode_record`] writes it) of `line`.
    pub fn push_raw(&mut self, line: i64, record: &[u8]) -> io::Result<()> {
        if let Some(last) = self.summary.last_line
            && line <= last
        {
            return Err(io::Error::other(format!(
                "archive writer got line {line} after line {last}"
            )));
        }
        self.encoder.write_all(record)?;
        self.summary.lines += 1;
        self.summary.uncompressed_size += record.len() as u64;
        self.summary.first_line.get_or_insert(line);
        self.summary.last_line = Some(line);
        Ok(())
    }

    /// Ends the zstd frame; returns the output and what the object holds.
    pub fn finish(self) -> io::Result<(W, Summary)> {
        Ok((self.encoder.finish()?, self.summary))
    }
}

/// Reads a whole archive object (its compressed bytes) into entries, checking order.
pub fn decode_object(bytes: &[u8]) -> Result<Vec<LogEntry>, RecordError> {
    let mut reader = object_reader(bytes)?;
    let mut entries = Vec::new();
    loop {
        match reader.next_record()? {
            Record::Entry(entry, _) => entries.push(entry),
            Record::End => return Ok(entries),
            Record::Torn { offset, .. } => {
                return Err(RecordError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("object ends inside a record at byte {offset}"),
                )));
            }
        }
    }
}

/// A streaming reader over an object's compressed bytes.
pub fn object_reader(bytes: &[u8]) -> io::Result<RecordReader<impl BufRead + '_>> {
    let decoder = zstd::Decoder::new(bytes)?;
    Ok(RecordReader::sorted(io::BufReader::new(decoder)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: i64, data: Option<&[u8]>) -> LogEntry {
        LogEntry {
            id: 0,
            step_id: 5,
            time: 12,
            line,
            data: data.map(<[u8]>::to_vec),
            entry_type: 1,
        }
    }

    #[test]
    fn keys_come_from_the_id_and_prefix_only() {
        let id = StepId::new(123_456).unwrap();
        assert_eq!(object_key("", id), "v1/456/123456.ndjson.zst");
        assert_eq!(
            object_key("/logs/ci/", id),
            "logs/ci/v1/456/123456.ndjson.zst"
        );
        assert_eq!(
            object_key("x", StepId::new(7).unwrap()),
            "x/v1/007/7.ndjson.zst"
        );
    }

    #[test]
    fn keys_parse_back_to_their_step_only() {
        for (prefix, id) in [("", 1), ("", 123_456), ("/logs/ci/", 7), ("x", 1000)] {
            let id = StepId::new(id).unwrap();
            assert_eq!(step_of_key(prefix, &object_key(prefix, id)), Some(id));
        }
        for key in [
            "v1/001/0001.ndjson.zst",
            "v1/002/1.ndjson.zst",
            "v1/001/1.ndjson",
            "v1/000/0.ndjson.zst",
            "v1/001/-1.ndjson.zst",
            "v1/001/+1.ndjson.zst",
            "v2/001/1.ndjson.zst",
            "v1/1.ndjson.zst",
            "other/v1/001/1.ndjson.zst",
            "v1/001/99999999999999999999.ndjson.zst",
        ] {
            assert_eq!(step_of_key("", key), None, "{key}");
        }
        assert_eq!(objects_prefix("/a/"), "a/v1/");
        assert_eq!(objects_prefix(""), "v1/");
    }

    #[test]
    fn objects_round_trip_and_keep_null_apart_from_empty() {
        let entries = vec![
            entry(0, None),
            entry(1, Some(b"")),
            entry(2, Some(&[0xff, b'\n', 0])),
        ];
        let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
        for e in &entries {
            writer.push(e).unwrap();
        }
        let (bytes, summary) = writer.finish().unwrap();
        assert_eq!(summary.lines, 3);
        assert_eq!((summary.first_line, summary.last_line), (Some(0), Some(2)));
        let plain = zstd::decode_all(&bytes[..]).unwrap();
        assert_eq!(summary.uncompressed_size, plain.len() as u64);
        assert_eq!(String::from_utf8(plain).unwrap().lines().count(), 3);
        assert_eq!(decode_object(&bytes).unwrap(), entries);
    }

    #[test]
    fn writer_refuses_unsorted_lines() {
        let mut writer = ObjectWriter::new(Vec::new(), 1).unwrap();
        writer.push(&entry(3, None)).unwrap();
        assert!(writer.push(&entry(3, None)).is_err());
    }

    #[test]
    fn garbage_and_unsorted_objects_are_errors_not_panics() {
        assert!(decode_object(b"not zstd at all").is_err());
        let unsorted = zstd::encode_all(&b"{\"line\":2}\n{\"line\":1}\n"[..], 1).unwrap();
        let err = decode_object(&unsorted).unwrap_err();
        assert!(err.to_string().contains("not sorted"), "{err}");
        let torn = zstd::encode_all(&b"{\"line\":2}\n{\"li"[..], 1).unwrap();
        assert!(decode_object(&torn).is_err());
    }

    #[test]
    fn torn_tail_is_reported_with_its_offset() {
        let mut reader = RecordReader::unsorted(&b"{\"line\":1}\n{\"line\":"[..]);
        assert!(matches!(
            reader.next_record().unwrap(),
            Record::Entry(_, 11)
        ));
        assert!(matches!(
            reader.next_record().unwrap(),
            Record::Torn { offset: 11, len: 8 }
        ));
    }
}
