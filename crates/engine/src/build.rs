//! Building an archive object from the previous object and sealed spool segments, with
//! bounded memory.
//!
//! The result is every entry ordered by line, one per line number, the first written winning:
//! the previous object first (it holds older writes), then the segments in order, each in file
//! order. Spool records are sorted in runs of at most `sort_budget_bytes`; a run that does not
//! fit beside the others goes to a temporary file, and all runs are merged with a heap. The
//! spool of a running step is nearly sorted already, but agents resend and reorder batches, so
//! no order is assumed. Memory: one run buffer plus one record per run.
//!
//! Spilled runs are kept as paths, not open files, and at most [`MERGE_WIDTH`] of them are
//! open at once: more are first merged in passes of that many consecutive runs (which keeps
//! the oldest write first), so a step of any size builds under a low `ulimit -n`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logservice::LogEntry;
use tempfile::{NamedTempFile, TempPath};

use crate::pool::{FilePool, Scratch};

use crate::format::{ObjectWriter, RawRecord, RecordReader, Summary};
use crate::spool::read_segment_raw;

/// A finished object, waiting in a scratch file (returned to the pool when dropped).
pub(crate) struct Built {
    pub(crate) file: Scratch,
    pub(crate) size: u64,
    pub(crate) summary: Summary,
}

/// One record on its way into the object: its line and its bytes, newline included.
struct Item {
    line: i64,
    record: Vec<u8>,
}

/// The most spilled runs a merge reads at once (one open file each).
const MERGE_WIDTH: usize = 64;

/// A sorted source of records.
enum Run<'a> {
    Memory(std::vec::IntoIter<Item>),
    /// A run spilled to a temporary file (removed when the run is dropped).
    Spilled(RecordReader<BufReader<File>>, TempPath),
    /// The previous object, every record checked, so a damaged one is caught, not copied.
    Object(RecordReader<Box<dyn io::BufRead + 'a>>),
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, text)
}

impl Run<'_> {
    fn next(&mut self) -> io::Result<Option<Item>> {
        match self {
            Run::Memory(items) => Ok(items.next()),
            Run::Spilled(reader, file) => match reader.next_raw() {
                Ok(RawRecord::Line { line, bytes, .. }) => Ok(Some(Item {
                    line,
                    record: bytes.to_vec(),
                })),
                Ok(RawRecord::End) => Ok(None),
                Ok(RawRecord::Torn { offset, .. }) => Err(invalid(format!(
                    "sort run {} ends inside a record at byte {offset}",
                    file.display()
                ))),
                Err(e) => Err(invalid(format!("sort run {}: {e}", file.display()))),
            },
            Run::Object(reader) => {
                let offset = reader.offset();
                match reader.next_raw() {
                    Ok(RawRecord::Line {
                        line,
                        bytes,
                        canonical,
                    }) => {
                        // Non-canonical records are checked and re-encoded, so a damaged
                        // record is caught here instead of copied into the next object.
                        let record = if canonical {
                            bytes.to_vec()
                        } else {
                            let mut record = Vec::with_capacity(bytes.len());
                            logservice::push_canonical(&bytes[..bytes.len() - 1], &mut record)
                                .map_err(|e| {
                                    invalid(format!(
                                        "the previous archive object: record at byte {offset}: {e}"
                                    ))
                                })?;
                            record.push(b'\n');
                            record
                        };
                        Ok(Some(Item { line, record }))
                    }
                    Ok(RawRecord::End) => Ok(None),
                    Ok(RawRecord::Torn { offset, .. }) => Err(invalid(format!(
                        "the previous archive object ends inside a record at byte {offset}"
                    ))),
                    Err(e) => Err(invalid(format!("the previous archive object: {e}"))),
                }
            }
        }
    }
}

/// Rough heap footprint of an item, for the sort budget.
fn footprint(item: &Item) -> usize {
    std::mem::size_of::<Item>() + item.record.capacity()
}

/// Sorts by line keeping the first of equal lines (a stable sort keeps write order).
fn sort_run(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by_key(|i| i.line);
    items.dedup_by_key(|i| i.line);
    items
}

/// Writes a sorted run to a temporary file in `tmp`, closed: only its path is kept.
fn spill(items: Vec<Item>, tmp: &Path) -> io::Result<TempPath> {
    let mut file = NamedTempFile::with_prefix_in("run-", tmp)?;
    let mut out = BufWriter::new(file.as_file_mut());
    for item in sort_run(items) {
        out.write_all(&item.record)?;
    }
    out.flush()?;
    drop(out);
    Ok(file.into_temp_path())
}

/// Opens a spilled run for the merge.
fn open_run(path: TempPath) -> io::Result<Run<'static>> {
    let file = File::open(&path)?;
    Ok(Run::Spilled(
        RecordReader::sorted(BufReader::new(file)),
        path,
    ))
}

/// Merges consecutive groups of spilled runs until at most [`MERGE_WIDTH`] are left.
fn narrow(mut spilled: Vec<TempPath>, tmp: &Path) -> io::Result<Vec<TempPath>> {
    while spilled.len() > MERGE_WIDTH {
        let mut merged = Vec::with_capacity(spilled.len().div_ceil(MERGE_WIDTH));
        let mut left = spilled.into_iter();
        loop {
            let group: Vec<TempPath> = left.by_ref().take(MERGE_WIDTH).collect();
            if group.is_empty() {
                break;
            }
            let runs = group.into_iter().map(open_run).collect::<io::Result<_>>()?;
            let mut file = NamedTempFile::with_prefix_in("run-", tmp)?;
            let mut out = BufWriter::new(file.as_file_mut());
            Merge::new(runs)?.each(|_, record| out.write_all(record))?;
            out.flush()?;
            drop(out);
            merged.push(file.into_temp_path());
        }
        spilled = merged;
    }
    Ok(spilled)
}

/// A k-way merge of sorted runs by line, one record per line: of equal lines, the one of the
/// earliest run (the oldest write) wins.
struct Merge<'a> {
    runs: Vec<Run<'a>>,
    heads: Vec<Option<Item>>,
    /// (line, run index): equal lines pop in run order.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
}

impl<'a> Merge<'a> {
    fn new(mut runs: Vec<Run<'a>>) -> io::Result<Self> {
        let mut heads = Vec::with_capacity(runs.len());
        let mut heap = BinaryHeap::new();
        for (index, run) in runs.iter_mut().enumerate() {
            let head = run.next()?;
            if let Some(item) = &head {
                heap.push(Reverse((item.line, index)));
            }
            heads.push(head);
        }
        Ok(Self { runs, heads, heap })
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Passes each line's winning record to `emit`, in line order.
    fn each(mut self, mut emit: impl FnMut(i64, &[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut last = None;
        while let Some(Reverse((line, index))) = self.heap.pop() {
            let item = self.heads[index].take().expect("a queued run has a head");
            if last != Some(line) {
                emit(line, &item.record)?;
                last = Some(line);
            }
            if let Some(next) = self.runs[index].next()? {
                self.heap.push(Reverse((next.line, index)));
                self.heads[index] = Some(next);
            }
        }
        Ok(())
    }
}

/// Merges `previous` (an object's compressed bytes) and `segments` into a new object in a
/// scratch file of `pool`, sort runs that do not fit in memory spilling to `tmp`. Returns
/// `None` when there is nothing to store.
pub(crate) fn build(
    previous: Option<&[u8]>,
    segments: &[PathBuf],
    tmp: &Path,
    level: i32,
    sort_budget: usize,
    pool: &Arc<FilePool>,
) -> io::Result<Option<Built>> {
    let mut runs = Runs::new(previous, tmp, sort_budget)?;
    let mut spill_error = None;
    for path in segments {
        read_segment_raw(path, None, |line, record, _| {
            if spill_error.is_none()
                && let Err(e) = runs.push(line, record)
            {
                spill_error = Some(e);
            }
        })?;
        if let Some(e) = spill_error.take() {
            return Err(e);
        }
    }
    if runs.is_empty() {
        return Ok(None);
    }
    let mut file = pool.scratch()?;
    let Some((out, summary)) = runs.merge(BufWriter::new(&mut file.file), level)? else {
        return Ok(None);
    };
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let size = file.file.metadata()?.len();
    Ok(Some(Built {
        file,
        size,
        summary,
    }))
}

/// The sorted runs of a build: the previous object first, then the staged records in sort
/// runs of at most the sort budget (spilled to files as paths beyond the first, narrowed to
/// [`MERGE_WIDTH`] before the merge), the last run in memory.
struct Runs<'a> {
    previous: Option<Run<'a>>,
    spilled: Vec<TempPath>,
    chunk: Vec<Item>,
    chunk_bytes: usize,
    tmp: &'a Path,
    sort_budget: usize,
}

impl<'a> Runs<'a> {
    fn new(previous: Option<&'a [u8]>, tmp: &'a Path, sort_budget: usize) -> io::Result<Self> {
        let previous = match previous {
            Some(bytes) => Some(Run::Object(RecordReader::sorted(Box::new(BufReader::new(
                zstd::Decoder::new(bytes)?,
            ))))),
            None => None,
        };
        Ok(Self {
            previous,
            spilled: Vec::new(),
            chunk: Vec::new(),
            chunk_bytes: 0,
            tmp,
            sort_budget,
        })
    }

    /// Adds a record (newline included); records added earlier win over later ones.
    fn push(&mut self, line: i64, record: &[u8]) -> io::Result<()> {
        let item = Item {
            line,
            record: record.to_vec(),
        };
        self.chunk_bytes += footprint(&item);
        self.chunk.push(item);
        if self.chunk_bytes >= self.sort_budget {
            self.chunk_bytes = 0;
            let run = spill(std::mem::take(&mut self.chunk), self.tmp)?;
            self.spilled.push(run);
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.previous.is_none() && self.spilled.is_empty() && self.chunk.is_empty()
    }

    /// Merges every run into an object written to `out`; `None` when no run holds a record.
    fn merge<W: Write>(self, out: W, level: i32) -> io::Result<Option<(W, Summary)>> {
        let mut runs: Vec<Run> = self.previous.into_iter().collect();
        for path in narrow(self.spilled, self.tmp)? {
            runs.push(open_run(path)?);
        }
        if !self.chunk.is_empty() {
            runs.push(Run::Memory(sort_run(self.chunk).into_iter()));
        }
        let merge = Merge::new(runs)?;
        if merge.is_empty() {
            return Ok(None);
        }
        let mut writer = ObjectWriter::new(out, level)?;
        merge.each(|line, record| writer.push_raw(line, record))?;
        writer.finish().map(Some)
    }
}

/// Builds an archive object from the previous object (if any) and further entries in any
/// order, as archiving does: sorted by line, one entry per line, the previous object winning,
/// then the entry added first. Memory stays within the sort budget (plus one record per
/// spilled run); what does not fit is sorted in runs spilled to files in `tmp`.
///
/// For tools that bring logs from elsewhere into the archive (`migrate`).
pub struct ObjectBuilder<'a> {
    runs: Runs<'a>,
    record: Vec<u8>,
}

impl<'a> ObjectBuilder<'a> {
    /// A builder merging into `previous` (an object's compressed bytes), spilling sort runs
    /// of `sort_budget` bytes to `tmp`.
    pub fn new(previous: Option<&'a [u8]>, tmp: &'a Path, sort_budget: usize) -> io::Result<Self> {
        Ok(Self {
            runs: Runs::new(previous, tmp, sort_budget)?,
            record: Vec::new(),
        })
    }

    /// Adds an entry; an entry of a line already added (or in the previous object) loses.
    pub fn push(&mut self, entry: &LogEntry) -> io::Result<()> {
        self.record.clear();
        crate::format::encode_record(entry, &mut self.record);
        self.runs.push(entry.line, &self.record)
    }

    /// Writes the object to `out` at zstd level `level`; `None` when there is no entry at all.
    pub fn finish<W: Write>(self, out: W, level: i32) -> io::Result<Option<(W, Summary)>> {
        self.runs.merge(out, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;

    fn entry(line: i64, text: &str) -> LogEntry {
        LogEntry {
            step_id: 1,
            line,
            data: Some(text.as_bytes().to_vec()),
            ..LogEntry::default()
        }
    }

    fn write_segment(dir: &Path, name: &str, entries: &[LogEntry]) -> PathBuf {
        let mut buf = Vec::new();
        for e in entries {
            format::encode_record(e, &mut buf);
        }
        let path = dir.join(name);
        std::fs::write(&path, buf).unwrap();
        path
    }

    fn pool(dir: &Path) -> Arc<FilePool> {
        Arc::new(FilePool::new(dir))
    }

    fn read(built: &Built) -> Vec<(i64, String)> {
        let bytes = std::fs::read(built.file.path()).unwrap();
        format::decode_object(&bytes)
            .unwrap()
            .into_iter()
            .map(|e| (e.line, String::from_utf8(e.data.unwrap()).unwrap()))
            .collect()
    }

    /// Budgets of one entry per run force every record through a run file and the merge.
    #[test]
    fn merges_object_and_segments_first_write_wins_at_any_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
        for e in [entry(1, "old1"), entry(3, "old3")] {
            writer.push(&e).unwrap();
        }
        let (previous, _) = writer.finish().unwrap();
        let a = write_segment(
            dir.path(),
            "a",
            &[
                entry(4, "a4"),
                entry(2, "a2"),
                entry(3, "a3"),
                entry(4, "a4b"),
            ],
        );
        let b = write_segment(dir.path(), "b", &[entry(0, "b0"), entry(2, "b2")]);
        for budget in [1, 200, 1 << 20] {
            let built = build(
                Some(&previous),
                &[a.clone(), b.clone()],
                dir.path(),
                3,
                budget,
                &pool(dir.path()),
            )
            .unwrap()
            .unwrap();
            assert_eq!(
                read(&built),
                vec![
                    (0, "b0".into()),
                    (1, "old1".into()),
                    (2, "a2".into()),
                    (3, "old3".into()),
                    (4, "a4".into())
                ],
                "budget {budget}"
            );
            assert_eq!(built.summary.lines, 5);
        }
        // Run files are gone once the build is done; the object's file went back to the pool.
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with("free-"))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    const LOW_LIMIT_CHILD: &str = "ENGINE_TEST_BUILD_UNDER_LOW_FD_LIMIT";
    /// The soft limit of open files the child runs under (`ulimit -n`).
    const LOW_LIMIT: u64 = 256;

    /// Not a test by itself: the child of `a_build_of_many_runs_fits_a_low_open_files_limit`,
    /// which builds under [`LOW_LIMIT`] open files an object from 4000 sort runs: every
    /// line written, then every line resent (the first write must win across merge passes).
    #[test]
    fn child_build_under_a_low_open_files_limit() {
        let Ok(dir) = std::env::var(LOW_LIMIT_CHILD) else {
            return;
        };
        let dir = Path::new(&dir);
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(LOW_LIMIT),
                maximum: hard,
            },
        )
        .unwrap();
        let entries: Vec<LogEntry> = (0..2000)
            .rev()
            .map(|n| entry(n, "first"))
            .chain((0..2000).map(|n| entry(n, "resent")))
            .collect();
        let segment = write_segment(dir, "segment", &entries);
        // A budget of one byte: every record is a run of its own, spilled to a file.
        let built = build(None, &[segment], dir, 3, 1, &pool(dir))
            .unwrap()
            .unwrap();
        assert_eq!(built.summary.lines, 2000);
        let expected: Vec<(i64, String)> = (0..2000).map(|n| (n, "first".into())).collect();
        assert_eq!(read(&built), expected);
    }

    /// Issue 12, finding 5: a build's sort runs never hold more descriptors than a low
    /// `ulimit -n` allows, however many there are (each spilled run held two, so a 6 GiB
    /// step, 384 runs of 16 MiB, exhausted a 1024 limit).
    #[test]
    fn a_build_of_many_runs_fits_a_low_open_files_limit() {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "build::tests::child_build_under_a_low_open_files_limit",
                "--nocapture",
            ])
            .env(LOW_LIMIT_CHILD, dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the build failed under ulimit -n {LOW_LIMIT}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The public builder merges as archiving does: previous object first, then entries in
    /// the order given, whatever the sort budget.
    #[test]
    fn object_builder_merges_entries_into_the_previous_object() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
        writer.push(&entry(2, "old2")).unwrap();
        let (previous, _) = writer.finish().unwrap();
        for budget in [1, 1 << 20] {
            let mut builder = ObjectBuilder::new(Some(&previous), dir.path(), budget).unwrap();
            for e in [
                entry(3, "n3"),
                entry(2, "n2"),
                entry(0, "n0"),
                entry(3, "n3b"),
            ] {
                builder.push(&e).unwrap();
            }
            let (bytes, summary) = builder.finish(Vec::new(), 3).unwrap().unwrap();
            let lines: Vec<(i64, String)> = format::decode_object(&bytes)
                .unwrap()
                .into_iter()
                .map(|e| (e.line, String::from_utf8(e.data.unwrap()).unwrap()))
                .collect();
            assert_eq!(
                lines,
                vec![(0, "n0".into()), (2, "old2".into()), (3, "n3".into())],
                "budget {budget}"
            );
            assert_eq!(summary.lines, 3);
        }
        let empty = ObjectBuilder::new(None, dir.path(), 1024).unwrap();
        assert!(empty.finish(Vec::new(), 3).unwrap().is_none());
    }

    #[test]
    fn nothing_to_store_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(
            build(None, &[missing], dir.path(), 3, 1024, &pool(dir.path()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_damaged_previous_object_fails_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_segment(dir.path(), "a", &[entry(1, "x")]);
        assert!(
            build(
                Some(b"garbage"),
                &[a],
                dir.path(),
                3,
                1024,
                &pool(dir.path())
            )
            .is_err()
        );
    }
}
