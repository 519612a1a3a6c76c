//! Reading an archive object in bounded memory: how much text it may decompress to, and a
//! reader that stops there (a decompression bomb fails its own read, nothing else).

use std::io::{self, BufRead};

use archive::ObjectMeta;

use super::{META_UNCOMPRESSED_SIZE, RecordReader};

/// The largest zstd window (as a power of two) a read accepts: 8 MiB, what the writer uses
/// at level 19, its highest. A frame asking for more is refused instead of making the
/// decoder allocate up to zstd's own limit of 128 MiB.
pub const WINDOW_LOG_MAX: u32 = 23;

/// How far an object's text may plausibly exceed its compressed size (NDJSON log records,
/// each with its own line number and time, compress far less). Metadata recording more is
/// not believed.
pub const MAX_COMPRESSION_RATIO: u64 = 1024;

/// The most text an object may decompress to, and where that bound comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextLimit {
    /// Bytes of NDJSON.
    pub bytes: u64,
    /// Whether `bytes` is the object's `uncompressed-size` metadata (exact, as its writer
    /// recorded it) rather than a cap.
    pub recorded: bool,
}

/// How much text an object of `compressed` bytes with `meta` may decompress to: its
/// `uncompressed-size` metadata when plausible for its size (see [`MAX_COMPRESSION_RATIO`]);
/// otherwise (no metadata, or an absurd value) the plausible bound, at most `cap`.
pub fn text_limit(compressed: u64, meta: &ObjectMeta, cap: u64) -> TextLimit {
    let plausible = compressed
        .saturating_mul(MAX_COMPRESSION_RATIO)
        .saturating_add(64 << 10);
    match meta
        .user
        .get(META_UNCOMPRESSED_SIZE)
        .and_then(|size| size.trim().parse::<u64>().ok())
    {
        Some(size) if size <= plausible => TextLimit {
            bytes: size,
            recorded: true,
        },
        _ => TextLimit {
            bytes: plausible.min(cap),
            recorded: false,
        },
    }
}

/// An object decompressing to more than its [`TextLimit`]: damaged, or a decompression bomb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflated(pub TextLimit);

impl std::fmt::Display for Inflated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TextLimit { bytes, recorded } = self.0;
        if recorded {
            write!(
                f,
                "it decompresses to more than the {bytes} bytes its {META_UNCOMPRESSED_SIZE} \
                 metadata records (a damaged or hostile object); the read was stopped there"
            )
        } else {
            write!(
                f,
                "it has no plausible {META_UNCOMPRESSED_SIZE} metadata and decompresses to more \
                 than {bytes} bytes; the read was stopped there"
            )
        }
    }
}

impl std::error::Error for Inflated {}

/// [`object_reader`] for reads that must stay within bounded memory: decompression stops
/// with [`RecordError::Inflated`] once the text exceeds `limit` (a decompression bomb fails
/// its own read after at most one buffer more), and a frame whose window exceeds
/// [`WINDOW_LOG_MAX`] is refused.
pub fn object_reader_within(
    bytes: &[u8],
    limit: TextLimit,
) -> io::Result<RecordReader<impl BufRead + '_>> {
    let mut decoder = zstd::Decoder::new(bytes)?;
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    Ok(RecordReader::sorted(io::BufReader::new(Capped {
        inner: decoder,
        left: limit.bytes,
        limit,
    })))
}

/// A reader that fails once more than `limit` bytes came out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: TextLimit,
}

impl<R: io::Read> io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(read as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, Inflated(self.limit)))?;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RawRecord, RecordError};

    fn meta(size: Option<&str>) -> ObjectMeta {
        let mut meta = ObjectMeta::default();
        if let Some(size) = size {
            meta.user.insert(META_UNCOMPRESSED_SIZE.into(), size.into());
        }
        meta
    }

    #[test]
    fn recorded_sizes_are_believed_only_when_plausible() {
        let recorded = text_limit(1000, &meta(Some("5000")), u64::MAX);
        assert_eq!((recorded.bytes, recorded.recorded), (5000, true));
        let plausible = 1000 * MAX_COMPRESSION_RATIO + (64 << 10);
        for absent_or_absurd in [None, Some("x"), Some("-1"), Some("99999999999999")] {
            let limit = text_limit(1000, &meta(absent_or_absurd), u64::MAX);
            assert_eq!((limit.bytes, limit.recorded), (plausible, false));
            assert_eq!(text_limit(1000, &meta(absent_or_absurd), 4096).bytes, 4096);
        }
    }

    #[test]
    fn reading_stops_past_the_limit() {
        let text = b"{\"line\":1}\n{\"line\":2}\n".repeat(1000);
        let bytes = zstd::encode_all(&text[..], 3).unwrap();
        let read_all = |limit: TextLimit| -> Result<usize, RecordError> {
            let mut reader = object_reader_within(&bytes, limit)?;
            let mut lines = 0;
            // The same two lines repeat, so the order check fails at the third record at
            // the latest; count what comes before an error.
            while let RawRecord::Line { .. } = reader.next_raw()? {
                lines += 1;
            }
            Ok(lines)
        };
        let exact = TextLimit {
            bytes: text.len() as u64,
            recorded: true,
        };
        assert!(matches!(read_all(exact), Err(RecordError::Unsorted { .. })));
        let small = TextLimit {
            bytes: 5,
            recorded: true,
        };
        match read_all(small) {
            Err(RecordError::Inflated(Inflated(limit))) => assert_eq!(limit, small),
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        let message = RecordError::Inflated(Inflated(small)).to_string();
        assert!(message.contains("more than the 5 bytes"), "{message}");
    }
}
