//! The read path: a step's log, from its spool segments and its archive object, as the JSON
//! array `LogFind` answers, spliced from the text of its records.
//!
//! Archive objects and spool segments hold each entry as Go's canonical JSON (see
//! [`logservice::canonical_line`]), which is exactly what the answer is made of: `[`, the
//! records in line order joined by `,`, `]`. So a read copies text and never decodes a line's
//! data, and the answer is built in one buffer sized up front: a read costs about one answer
//! of memory plus the compressed object, whatever the number of lines.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use archive::{ObjectInfo, ObjectStore};
use logservice::{LogEntry, LogError, StepId};

use crate::budget::ReadCost;
use crate::format::{self, RawRecord, RecordError};
use crate::legacy::{LegacySources, entries_json};
use crate::settings::{EngineSettings, MAX_LOG_SIZE};
use crate::shared::{Shared, storage};
use crate::spool::{ReadOutcome, list_segments, read_segment_file};
use crate::threads::blocking;

/// The staged (spool) records of a step, the first write of each line.
#[derive(Default)]
pub struct Staged {
    text: Vec<u8>,
    /// Where each line's record lies in `text`, and whether it is canonical.
    lines: BTreeMap<i64, (Range<usize>, bool)>,
}

impl Staged {
    /// Room for `bytes` of records, so that reading them allocates once.
    fn with_capacity(bytes: u64) -> Self {
        Self {
            text: Vec::with_capacity(usize::try_from(bytes).unwrap_or(0)),
            lines: BTreeMap::new(),
        }
    }

    /// Whether no staged record was found.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many lines it holds.
    pub(crate) fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Adds the records of one segment, in file order, as `read` visits them (up to the
    /// acknowledged length of a segment still being appended to); none of them when `read`
    /// finds that the file left its path meanwhile (see [`ReadOutcome`]).
    pub(crate) fn read_segment(
        &mut self,
        read: impl FnOnce(&mut dyn FnMut(i64, &[u8], bool)) -> io::Result<ReadOutcome>,
    ) -> io::Result<()> {
        let start = self.text.len();
        let mut added = Vec::new();
        let (text, lines) = (&mut self.text, &mut self.lines);
        let outcome = read(&mut |line, record, canonical| {
            if let Entry::Vacant(slot) = lines.entry(line) {
                let record = record.strip_suffix(b"\n").unwrap_or(record);
                let begin = text.len();
                text.extend_from_slice(record);
                slot.insert((begin..text.len(), canonical));
                added.push(line);
            }
        })?;
        if outcome == ReadOutcome::Moved {
            for line in added {
                self.lines.remove(&line);
            }
            self.text.truncate(start);
        }
        Ok(())
    }

    /// Adds an entry from elsewhere (a database row) as its canonical record; a line
    /// already held keeps its first record. Returns the bytes added.
    pub(crate) fn push_entry(&mut self, entry: &LogEntry) -> usize {
        let Entry::Vacant(slot) = self.lines.entry(entry.line) else {
            return 0;
        };
        let begin = self.text.len();
        logservice::push_entry(entry, &mut self.text);
        slot.insert((begin..self.text.len(), true));
        self.text.len() - begin
    }

    /// Adds the lines of `other` that this does not hold.
    pub(crate) fn absorb(&mut self, other: &Staged) {
        for (line, record, canonical) in other.records() {
            if let Entry::Vacant(slot) = self.lines.entry(line) {
                let begin = self.text.len();
                self.text.extend_from_slice(record);
                slot.insert((begin..self.text.len(), canonical));
            }
        }
    }

    fn records(&self) -> impl Iterator<Item = (i64, &[u8], bool)> {
        self.lines
            .iter()
            .map(|(line, (range, canonical))| (*line, &self.text[range.clone()], *canonical))
    }
}

/// How many times a read starts over when the object it fetched is larger than what it
/// reserved memory for (it was replaced between the two requests), or when rows being moved
/// into the spool left the table between its reads.
const READ_ATTEMPTS: usize = 3;

/// A step's spool segments as a read will visit them, and their size.
struct StagedPlan {
    segments: Range<u32>,
    /// Acknowledged bytes of the last segment (it may be taking appends).
    tail_len: u64,
    /// Bytes of all the segments, for the read's memory reservation.
    bytes: u64,
    /// Whether an archive object may hold lines of the step.
    maybe_archived: bool,
}

impl Shared {
    /// LogFind: the step's log as its JSON array.
    ///
    /// The read first learns how much memory it will need (the spool segments' sizes and the
    /// object's size and metadata, without fetching it), refuses a log over `MAX_LOG_SIZE`,
    /// waits for that much of the read budget, and only then reads.
    pub(crate) async fn find(self: &Arc<Self>, id: StepId) -> Result<Vec<u8>, LogError> {
        for attempt in 0..READ_ATTEMPTS {
            if let Some(answer) = self.find_once(id, attempt > 0).await? {
                return Ok(answer);
            }
        }
        Err(storage(format!(
            "the archived log of step {id} was replaced during each of {READ_ATTEMPTS} \
             attempts to read it; try again"
        )))
    }

    /// One attempt at [`Self::find`]; `None` when the object fetched is larger than the one
    /// the memory was reserved for. `ask_store` sizes the object with a HEAD even for a step
    /// this process thinks was never archived: a retry after an object turned up anyway (a
    /// step archived before a restart, or forgotten after the idle timeout, that got late
    /// lines) must reserve for it, or every attempt would find it too large.
    async fn find_once(
        self: &Arc<Self>,
        id: StepId,
        ask_store: bool,
    ) -> Result<Option<Vec<u8>>, LogError> {
        // Rows being moved into the spool: read before the spool, as a move appends to the
        // spool before it deletes the rows, so a line missing from the rows read here is in
        // the spool read next. The rows were written first, so they win per line.
        let rows = match self.draining.table() {
            Some(table) => {
                Some(crate::table::rows_as_staged(&*table, id, self.settings.max_log_size).await?)
            }
            None => None,
        };
        let inner = self.clone();
        let plan = blocking(move || {
            let plan = inner.staged_plan(id);
            #[cfg(test)]
            crate::interleavings::reached(&format!("planned {id}"));
            plan
        })
        .await;
        let key = format::object_key(&self.settings.key_prefix, id);
        let max = self.settings.max_log_size;
        // Only the object's size and metadata, to size the read; a step that was never
        // archived has no object to ask about (and the GET below still makes sure).
        let expected = if plan.maybe_archived || ask_store {
            self.store.head(&key).await.map_err(|e| {
                storage(format!(
                    "cannot read the archived log of step {id} ({key} in {}): {e}",
                    self.store.describe()
                ))
            })?
        } else {
            None
        };
        let limit = expected
            .as_ref()
            .map(|info| format::text_limit(info.size, &info.meta, max));
        let cost = ReadCost {
            staged: plan.bytes,
            compressed: expected.as_ref().map_or(0, |info| info.size),
            object_text: limit.map_or(0, |limit| limit.bytes),
        };
        // Without metadata the object's size is unknown until it is decompressed: the
        // answer's growth is checked against the maximum then.
        let known = if limit.is_some_and(|limit| !limit.recorded) {
            cost.staged
        } else {
            cost.answer()
        };
        if known > max {
            return Err(too_large(id, known, max));
        }
        let _reserved = self.read_budget.reserve(cost.total()).await;

        // The spool first, the object second: an archive run removes segments only after
        // their object is stored, so lines missing from the segments read here are in the
        // object read next.
        let maybe_archived = plan.maybe_archived;
        let inner = self.clone();
        let mut staged = blocking(move || inner.read_staged(id, plan)).await?;
        let object = match self.store.get(&key).await {
            Ok(object) => object,
            // The archive is unreachable, but this step was never archived: the spool holds
            // its whole log, so the UI keeps working through an outage.
            Err(e) if !maybe_archived && !staged.is_empty() => {
                tracing::warn!(step = %id, error = %e,
                    "archive unreachable; serving the step's log from the spool");
                None
            }
            Err(e) => {
                return Err(storage(format!(
                    "cannot read the archived log of step {id} ({key} in {}): {e}",
                    self.store.describe()
                )));
            }
        };
        if let Some((bytes, info)) = &object {
            let fetched = format::text_limit(bytes.len() as u64, &info.meta, max);
            if !cost.covers(bytes.len() as u64, fetched.bytes) {
                return Ok(None);
            }
        }
        // Neither archived nor spooled: the legacy source answers as Woodpecker did (the
        // database's rows, ids included, also those being moved).
        if object.is_none()
            && staged.is_empty()
            && let Some(legacy) = self.legacy.get()
        {
            let entries = read_legacy(legacy, id).await?;
            // Rows being moved can leave the table after they were read above and reach
            // the spool after it was read: the legacy source then has fewer lines than the
            // rows had (found by TestStagingSwitchModes: 0 of 100). Start over; a move
            // appends to the spool before it deletes, so the next attempt finds them there.
            if rows
                .as_ref()
                .is_some_and(|(rows, _)| entries.len() < rows.line_count())
            {
                return Ok(None);
            }
            return Ok(Some(entries_json(&entries)));
        }
        if let Some((mut rows, _)) = rows {
            rows.absorb(&staged);
            staged = rows;
        }
        splice(&*self.store, id, &key, staged, object, max)
            .await
            .map(Some)
    }

    /// Which segments hold the step's staged records and how large they are, and whether
    /// an archive object may hold more.
    fn staged_plan(&self, id: StepId) -> StagedPlan {
        let Some(((segments, tail_len), maybe_archived)) =
            self.steps
                .with_state(id, None, |state| (state.staged(), state.maybe_archived()))
        else {
            return StagedPlan {
                segments: 0..0,
                tail_len: 0,
                bytes: 0,
                maybe_archived: true,
            };
        };
        let tail = segments.end - 1;
        // A segment that left its path meanwhile counts nothing and is read as nothing.
        let sealed: u64 = (segments.start..tail)
            .filter_map(|segment| std::fs::metadata(self.spool.segment_path(id, segment)).ok())
            .map(|meta| meta.len())
            .sum();
        StagedPlan {
            segments,
            tail_len,
            bytes: sealed + tail_len,
            maybe_archived,
        }
    }

    /// The staged records of a step, first write per line, read as `plan` says.
    fn read_staged(&self, id: StepId, plan: StagedPlan) -> Result<Staged, LogError> {
        let tail = plan.segments.end.saturating_sub(1);
        let mut staged = Staged::with_capacity(plan.bytes);
        for segment in plan.segments {
            let limit = (segment == tail).then_some(plan.tail_len);
            staged
                .read_segment(|visit| self.spool.read_segment(id, segment, limit, visit))
                .map_err(|e| storage(format!("cannot read the staged log of step {id}: {e}")))?;
        }
        Ok(staged)
    }
}

/// Reads a step's log, as the JSON array LogFind answers, without starting an engine: for
/// `get` and other tools that run beside a live addon. It takes no lock and changes nothing
/// (a partial record being written is skipped), and reads the spool before the archive,
/// like `LogFind`.
pub async fn read_step_log(
    settings: &EngineSettings,
    store: &dyn ObjectStore,
    id: StepId,
) -> Result<Vec<u8>, LogError> {
    read_step_log_with_legacy(settings, store, None, id).await
}

/// [`read_step_log`], reading `legacy` when the step has neither an archive object nor
/// spooled lines, as `LogFind` does.
pub async fn read_step_log_with_legacy(
    settings: &EngineSettings,
    store: &dyn ObjectStore,
    legacy: Option<&LegacySources>,
    id: StepId,
) -> Result<Vec<u8>, LogError> {
    let spool = settings.spool_dir.clone();
    let (staged, _) = blocking(move || read_spool_dir(&spool, id))
        .await
        .map_err(|e| storage(format!("cannot read the staged log of step {id}: {e}")))?;
    let key = format::object_key(&settings.key_prefix, id);
    let object = store
        .get(&key)
        .await
        .map_err(|e| archive_unreadable(store, id, &key, e))?;
    if object.is_none()
        && staged.is_empty()
        && let Some(legacy) = legacy
    {
        return read_through(legacy, id).await;
    }
    // `get` is how an admin reads a log past `MAX_LOG_SIZE`: no maximum here.
    splice(store, id, &key, staged, object, u64::MAX).await
}

/// A step the addon has never stored: its log as Woodpecker's own store kept it.
/// The records the spool configured at `dir` holds for the step, read beside whatever
/// uses it (no lock), and the bytes of its segments.
pub(crate) fn read_spool_dir(dir: &std::path::Path, id: StepId) -> io::Result<(Staged, u64)> {
    let mut staged = Staged::default();
    let mut bytes = 0;
    for path in list_segments(dir, id)? {
        bytes += std::fs::metadata(&path).map_or(0, |meta| meta.len());
        staged.read_segment(|visit| read_segment_file(&path, None, visit))?;
    }
    Ok((staged, bytes))
}

/// The error of an archive that cannot be read.
pub(crate) fn archive_unreadable(
    store: &dyn ObjectStore,
    id: StepId,
    key: &str,
    e: archive::StoreError,
) -> LogError {
    storage(format!(
        "cannot read the archived log of step {id} ({key} in {}): {e}",
        store.describe()
    ))
}

pub(crate) async fn read_through(legacy: &LegacySources, id: StepId) -> Result<Vec<u8>, LogError> {
    Ok(entries_json(&read_legacy(legacy, id).await?))
}

async fn read_legacy(legacy: &LegacySources, id: StepId) -> Result<Vec<LogEntry>, LogError> {
    legacy
        .find(id)
        .await
        .map_err(|e| storage(format!("cannot read the legacy log of step {id}: {e}")))
}

/// The step's log as LogFind's JSON: the archived object (if any) wins over the `staged`
/// records, which were all written after it; at most `max` bytes.
pub(crate) async fn splice(
    store: &dyn ObjectStore,
    id: StepId,
    key: &str,
    staged: Staged,
    object: Option<(Vec<u8>, ObjectInfo)>,
    max: u64,
) -> Result<Vec<u8>, LogError> {
    blocking(move || {
        log_json_within(
            object.as_ref().map(|(bytes, info)| (&bytes[..], info)),
            &staged,
            max,
        )
    })
    .await
    .map_err(|e| match e {
        ReadError::TooLarge { limit } => too_large(id, limit.saturating_add(1), limit),
        ReadError::Record(e) => storage(format!(
            "the archived log of step {id} ({key} in {}) is corrupt: {e}",
            store.describe()
        )),
    })
}

/// The error of a log too large to answer: what the admin can do about it.
pub(crate) fn too_large(id: StepId, size: u64, max: u64) -> LogError {
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    storage(format!(
        "the log of step {id} is {}{:.1} MiB, more than {}={} ({:.1} MiB) allows LogFind to \
         answer; read it with `woodpecker-s3-logs get {id} --json` (with the addon's \
         environment), or raise {} (a read needs about that much memory in the addon, and \
         more in the Woodpecker server)",
        if size > max { "at least " } else { "" },
        mib(size),
        MAX_LOG_SIZE.name,
        max,
        mib(max),
        MAX_LOG_SIZE.name,
    ))
}

/// Why a log could not be made into an answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A record of the object could not be read (or it decompressed past its limit).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The answer grew past `limit` bytes.
    #[error("the log is larger than {limit} bytes")]
    TooLarge {
        /// The maximum answer size.
        limit: u64,
    },
}

/// The JSON array of a step's log: the records of `object` (its compressed bytes and what
/// the store reported about it), which hold the older writes and so win, merged with the
/// `staged` ones, by line.
///
/// A record of the object that is not a log entry makes the whole read fail (the object is
/// damaged, and a partial answer would look complete); a staged one is skipped with a
/// warning, as the spool's readers always do.
pub fn log_json(
    object: Option<(&[u8], &ObjectInfo)>,
    staged: &Staged,
) -> Result<Vec<u8>, ReadError> {
    log_json_within(object, staged, u64::MAX)
}

/// [`log_json`] of at most `max` bytes. The object's text is bounded as it decompresses:
/// by its `uncompressed-size` metadata, or (without plausible metadata) by what zstd could
/// have compressed it from and by `max` (see [`format::text_limit`]).
pub fn log_json_within(
    object: Option<(&[u8], &ObjectInfo)>,
    staged: &Staged,
    max: u64,
) -> Result<Vec<u8>, ReadError> {
    let limit = object.map(|(bytes, info)| format::text_limit(bytes.len() as u64, &info.meta, max));
    let object_text = match (object, limit) {
        (_, Some(limit)) if limit.recorded => limit.bytes,
        // A guess, grown as needed: the bound is no estimate.
        (Some((bytes, _)), Some(limit)) => (bytes.len() as u64).saturating_mul(8).min(limit.bytes),
        _ => 0,
    };
    let capacity = (object_text + (staged.text.len() + staged.lines.len()) as u64).min(max);
    let mut answer = JsonArray::with_capacity(usize::try_from(capacity).unwrap_or(usize::MAX));
    let over_max = |answer: &JsonArray| answer.out.len() as u64 >= max;
    let mut staged_records = staged.records().peekable();
    if let (Some((bytes, _)), Some(limit)) = (object, limit) {
        let mut reader = format::object_reader_within(bytes, limit).map_err(RecordError::from)?;
        loop {
            let offset = reader.offset();
            // Without metadata, decompression stops at `max` (when that is the lower
            // bound): the log is too large rather than damaged.
            let next = reader.next_raw().map_err(|e| match e {
                RecordError::Inflated(format::Inflated(limit))
                    if !limit.recorded && limit.bytes >= max =>
                {
                    ReadError::TooLarge { limit: max }
                }
                e => e.into(),
            })?;
            let (line, record, canonical) = match next {
                RawRecord::Line {
                    line,
                    bytes,
                    canonical,
                } => (line, bytes, canonical),
                RawRecord::End => break,
                RawRecord::Torn { offset, .. } => {
                    return Err(RecordError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object ends inside a record at byte {offset}"),
                    ))
                    .into());
                }
            };
            while let Some((staged_line, staged_record, staged_canonical)) =
                staged_records.next_if(|(staged_line, ..)| *staged_line <= line)
            {
                if staged_line < line {
                    answer.push_staged(staged_record, staged_canonical);
                }
            }
            answer
                .push(record.strip_suffix(b"\n").unwrap_or(record), canonical)
                .map_err(|source| RecordError::Json { offset, source })?;
            if over_max(&answer) {
                return Err(ReadError::TooLarge { limit: max });
            }
        }
    }
    for (_, record, canonical) in staged_records {
        answer.push_staged(record, canonical);
        if over_max(&answer) {
            return Err(ReadError::TooLarge { limit: max });
        }
    }
    Ok(answer.finish())
}

/// A JSON array being written, one canonical record at a time.
struct JsonArray {
    out: Vec<u8>,
}

impl JsonArray {
    /// `records`: the size of the records with one separator byte after each (as NDJSON
    /// text counts them); the array's brackets take one byte more.
    fn with_capacity(records: usize) -> Self {
        let mut out = Vec::with_capacity(records + 1);
        out.push(b'[');
        Self { out }
    }

    /// Adds a record: copied when the reader found it `canonical` already, decoded and
    /// re-encoded otherwise.
    fn push(&mut self, record: &[u8], canonical: bool) -> Result<(), serde_json::Error> {
        let len = self.out.len();
        if len > 1 {
            self.out.push(b',');
        }
        if canonical {
            self.out.extend_from_slice(record);
            return Ok(());
        }
        logservice::push_canonical(record, &mut self.out)
            .map(drop)
            .inspect_err(|_| {
                self.out.truncate(len);
            })
    }

    fn push_staged(&mut self, record: &[u8], canonical: bool) {
        if let Err(error) = self.push(record, canonical) {
            tracing::warn!(%error, "skipping an unreadable record in the spool");
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b']');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use logservice::LogEntry;

    use super::*;
    use crate::format::ObjectWriter;

    fn entry(line: i64, text: &str) -> LogEntry {
        LogEntry {
            step_id: 3,
            line,
            data: Some(text.as_bytes().to_vec()),
            ..LogEntry::default()
        }
    }

    fn object(entries: &[LogEntry]) -> (Vec<u8>, ObjectInfo) {
        let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
        for e in entries {
            writer.push(e).unwrap();
        }
        let (bytes, summary) = writer.finish().unwrap();
        let info = ObjectInfo {
            size: bytes.len() as u64,
            meta: summary.to_meta(logservice::StepId::new(3).unwrap()),
            etag: None,
        };
        (bytes, info)
    }

    fn staged(dir: &Path, records: &[u8]) -> Staged {
        let path = dir.join("segment");
        std::fs::write(&path, records).unwrap();
        let mut staged = Staged::default();
        staged
            .read_segment(|visit| read_segment_file(&path, None, visit))
            .unwrap();
        staged
    }

    fn decode(json: &[u8]) -> Vec<(i64, String)> {
        serde_json::from_slice::<Vec<LogEntry>>(json)
            .unwrap()
            .into_iter()
            .map(|e| (e.line, String::from_utf8(e.data.unwrap()).unwrap()))
            .collect()
    }

    #[test]
    fn object_wins_and_staged_lines_fill_in_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, info) = object(&[entry(1, "old1"), entry(3, "old3")]);
        let mut spool = Vec::new();
        for e in [
            entry(4, "new4"),
            entry(3, "new3"),
            entry(0, "new0"),
            entry(4, "again4"),
        ] {
            format::encode_record(&e, &mut spool);
        }
        let staged = staged(dir.path(), &spool);
        let json = log_json(Some((&bytes, &info)), &staged).unwrap();
        assert_eq!(
            decode(&json),
            [(0, "new0"), (1, "old1"), (3, "old3"), (4, "new4")].map(|(l, t)| (l, t.to_string()))
        );
    }

    #[test]
    fn the_answer_is_sized_up_front_from_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, info) = object(&[entry(1, "one"), entry(2, "two")]);
        let mut spool = Vec::new();
        format::encode_record(&entry(3, "three"), &mut spool);
        let json = log_json(Some((&bytes, &info)), &staged(dir.path(), &spool)).unwrap();
        assert_eq!(decode(&json).len(), 3);
        assert_eq!(json.capacity(), json.len());
    }

    #[test]
    fn empty_logs_are_empty_arrays() {
        assert_eq!(log_json(None, &Staged::default()).unwrap(), b"[]");
        let (bytes, info) = object(&[]);
        assert_eq!(
            log_json(Some((&bytes, &info)), &Staged::default()).unwrap(),
            b"[]"
        );
    }

    #[test]
    fn foreign_records_are_re_encoded_and_unreadable_staged_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = b"{ \"line\": 2, \"data\": \"eA==\" }\n{\"line\":1,\"data\":\"%%\"}\n";
        let json = log_json(None, &staged(dir.path(), spool)).unwrap();
        assert_eq!(decode(&json), [(2, "x".to_string())]);
        assert!(logservice::canonical_line(&json[1..json.len() - 1]).is_some());
    }

    #[test]
    fn a_damaged_object_fails_the_read() {
        let plain = b"{\"line\":1,\"data\":\"%%\"}\n";
        let bytes = zstd::encode_all(&plain[..], 3).unwrap();
        let info = ObjectInfo {
            size: bytes.len() as u64,
            meta: Default::default(),
            etag: None,
        };
        assert!(log_json(Some((&bytes, &info)), &Staged::default()).is_err());
        let (mut bytes, info) = object(&[entry(1, "a"), entry(2, "b")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(log_json(Some((&bytes, &info)), &Staged::default()).is_err());
    }
}
