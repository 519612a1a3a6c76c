//! The staging spool: one append-only NDJSON file per step and segment.
//!
//! Layout under the spool directory (all directories 0700, files 0600); which directory that
//! is, and what the spool checks before using it, is in `spool/dir.rs`:
//!
//! ```text
//! lock                      held (flock) while an engine uses the spool
//! steps/<id>.<seg>.ndjson   segment <seg> of step <id>: the entries' JSON as the host sent it
//! finished                  ids of steps whose StepFinished came, one per line (archive
//!                           after the grace period rather than the idle timeout)
//! tmp/                      archive objects and sort runs being built, empty files kept
//!                           ready for reuse (see `pool.rs`); emptied at start
//! ```
//!
//! A step's lines are spread over numbered segments because archiving *seals* the current
//! segment (appends move on to the next one) before it reads the spool: lines that arrive
//! while an upload is running land in a new segment and survive the deletion of the sealed
//! ones. No line content is kept in memory; only open file handles, bounded by an LRU.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use logservice::StepId;
use lru::LruCache;

use crate::pool::{self, FilePool};

mod dir;
mod reading;
mod room;

pub use dir::SpoolDirError;
pub(crate) use dir::locate;
pub(crate) use reading::{ReadOutcome, read_segment_file, read_segment_raw};

pub(crate) struct Spool {
    root: PathBuf,
    steps: PathBuf,
    tmp: PathBuf,
    handles: Mutex<LruCache<(StepId, u32), Arc<File>>>,
    dirty: Mutex<Dirty>,
    pool: Arc<FilePool>,
    /// Segments the engine's readers hold open (see `reading.rs`).
    readers: reading::Readers,
    /// Free space appends may use (see `room.rs`).
    room: room::Room,
    finished_path: PathBuf,
    /// The `finished` journal, open for appending. A journal rather than a marker file per
    /// step, so StepFinished never creates or deletes a file.
    finished: Mutex<File>,
}

/// What the background sync still has to flush.
#[derive(Default)]
struct Dirty {
    files: HashSet<(StepId, u32)>,
    dir: bool,
}

/// A step found on disk at start.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The step's segments on disk.
    pub(crate) segments: BTreeSet<u32>,
    /// Whether its StepFinished came before the stop.
    pub(crate) finished: bool,
}

fn context(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let text = format!("{what} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{text}: {e}"))
}

/// Why [`Spool::open`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The directory is not one the spool may use.
    #[error(transparent)]
    Dir(#[from] SpoolDirError),
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How long [`Spool::open`] waits for another process to release the spool.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Spool {
    /// Chooses and checks the spool's directory for the `configured` one, and the
    /// directories it keeps there (creating what is missing): fast, so a start can refuse a
    /// bad directory before anything else.
    pub(crate) fn prepare(configured: &Path) -> Result<PathBuf, SpoolDirError> {
        let root = dir::prepare(configured)?;
        for subdir in [STEPS, TMP] {
            dir::own_subdir(configured, &root, subdir)?;
        }
        Ok(root)
    }

    /// Opens the spool in `root` (from [`Spool::prepare`] for `configured`) and takes its
    /// lock, refusing a spool another engine uses. The lock is held as long as the returned
    /// file is open.
    pub(crate) fn open(
        configured: &Path,
        root: &Path,
        max_open_files: usize,
    ) -> Result<(Self, File), OpenError> {
        let lock_path = root.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(context("cannot open", &lock_path))?;
        // A previous addon may still be on its way out (it exits within a second of losing
        // its host, flushing first), and a forked child can briefly hold a copy of the lock:
        // wait a little before calling the spool taken.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut attempt = lock.try_lock();
        while matches!(attempt, Err(std::fs::TryLockError::WouldBlock))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
            attempt = lock.try_lock();
        }
        attempt.map_err(|e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spool {} is in use by another woodpecker-s3-logs process ({e})",
                    root.display()
                ),
            )
        })?;
        let steps = dir::own_subdir(configured, root, STEPS)?;
        // Leftovers of an interrupted archive build: never referenced again. Checked first to
        // be our own directory, so nothing else is ever cleared.
        let tmp = dir::own_subdir(configured, root, TMP)?;
        clear_dir(&tmp).map_err(context("cannot clear", &tmp))?;
        let tmp = dir::own_subdir(configured, root, TMP)?;
        let finished_path = root.join("finished");
        let finished = open_journal(&finished_path)?;
        let pool = Arc::new(FilePool::new(&tmp));
        let room = room::Room::new(root).map_err(context("cannot use", root))?;
        let capacity = NonZeroUsize::new(max_open_files.max(1)).expect("at least one");
        let spool = Self {
            root: root.to_owned(),
            steps,
            tmp,
            handles: Mutex::new(LruCache::new(capacity)),
            dirty: Mutex::default(),
            pool,
            readers: reading::Readers::default(),
            room,
            finished_path,
            finished: Mutex::new(finished),
        };
        Ok((spool, lock))
    }

    /// The spool's directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where archive builds put their temporary files.
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Empty files for new segments and archive builds (see [`FilePool`]).
    pub(crate) fn pool(&self) -> &Arc<FilePool> {
        &self.pool
    }

    /// Where segment `segment` of step `id` lives.
    pub(crate) fn segment_path(&self, id: StepId, segment: u32) -> PathBuf {
        self.steps.join(segment_name(id, segment))
    }

    /// Spool files open right now (cached handles).
    pub(crate) fn open_files(&self) -> usize {
        self.handles.lock().expect("spool handles").len()
    }

    /// Appends `records` to a segment that currently holds `len` bytes. The caller holds the
    /// step's lock, so appends of one step never interleave. When the write or (with `sync`)
    /// the fsync fails, the segment is cut back to `len`: the host was told the batch failed,
    /// so none of it may be read or archived later, and a half-written batch must never sit
    /// in front of later records. A batch that would leave less free space than archive
    /// builds need is refused ([`io::ErrorKind::StorageFull`], as when the disk itself is
    /// full).
    pub(crate) fn append(
        &self,
        id: StepId,
        segment: u32,
        len: u64,
        records: &[u8],
        sync: bool,
    ) -> io::Result<()> {
        let path = self.segment_path(id, segment);
        self.room
            .claim(records.len() as u64)
            .map_err(context("cannot write spool file", &path))?;
        let file = self.handle(id, segment, &path, len == 0)?;
        let written = (&*file)
            .write_all(records)
            .map_err(context("cannot write spool file", &path))
            .and_then(|()| {
                if sync {
                    fsync(&file, &path)?;
                    if len == 0 {
                        sync_dir(&self.steps)?;
                    }
                }
                Ok(())
            });
        if let Err(e) = written {
            if let Err(cut) = file.set_len(len) {
                // The failed batch stays in the file: readers stop at the acknowledged
                // length, but an archive run would include it.
                tracing::error!(
                    file = %path.display(),
                    error = %cut,
                    "cannot cut a failed append back off the spool file"
                );
            }
            return Err(e);
        }
        if !sync {
            let mut dirty = self.dirty.lock().expect("spool dirty set");
            dirty.files.insert((id, segment));
            dirty.dir |= len == 0;
        }
        Ok(())
    }

    /// The cached handle of a segment, opened on a miss; a `new` segment (nothing
    /// acknowledged in it yet) is first placed from the file pool.
    fn handle(&self, id: StepId, segment: u32, path: &Path, new: bool) -> io::Result<Arc<File>> {
        if let Some(file) = self
            .handles
            .lock()
            .expect("spool handles")
            .get(&(id, segment))
        {
            return Ok(file.clone());
        }
        if new {
            self.pool
                .place(path)
                .map_err(context("cannot create spool file", path))?;
        }
        let file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(context("cannot open spool file", path))?,
        );
        // An evicted handle closes when its last user drops it.
        self.handles
            .lock()
            .expect("spool handles")
            .put((id, segment), file.clone());
        Ok(file)
    }

    /// Appends go elsewhere from now on: drop the cached handle of a sealed segment.
    pub(crate) fn forget_handle(&self, id: StepId, segment: u32) {
        self.handles
            .lock()
            .expect("spool handles")
            .pop(&(id, segment));
    }

    /// Flushes everything appended since the last call to the disk; returns how many files
    /// it flushed. A file that fails does not stop the others: they are all tried, the
    /// failed ones stay in the dirty set for the next call, and the first error is returned.
    pub(crate) fn sync_pending(&self) -> io::Result<usize> {
        let pending = std::mem::take(&mut *self.dirty.lock().expect("spool dirty set"));
        let mut synced = 0;
        let mut failed = Dirty::default();
        let mut errors = Vec::new();
        for (id, segment) in pending.files {
            let path = self.segment_path(id, segment);
            match self.sync_file(&path) {
                Ok(()) => synced += 1,
                // Archived or deleted meanwhile: nothing left to flush.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed.files.insert((id, segment));
                    errors.push(e);
                }
            }
        }
        if pending.dir
            && let Err(e) = sync_dir(&self.steps)
        {
            failed.dir = true;
            errors.push(e);
        }
        let mut errors = errors.into_iter();
        let Some(first) = errors.next() else {
            return Ok(synced);
        };
        let mut dirty = self.dirty.lock().expect("spool dirty set");
        dirty.files.extend(failed.files);
        dirty.dir |= failed.dir;
        let more = errors.len();
        Err(if more == 0 {
            first
        } else {
            io::Error::new(first.kind(), format!("{first} (and {more} more)"))
        })
    }

    /// Flushes one spool file to disk.
    pub(crate) fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)
            .map_err(context("cannot fsync spool file", path))
            .and_then(|f| fsync(&f, path))
    }

    /// Records that StepFinished came for a step: a hint for recovery only (without it, a
    /// step is archived after the idle timeout instead of right after a restart), so it is
    /// not fsynced on its own.
    pub(crate) fn mark_finished(&self, id: StepId) -> io::Result<()> {
        let line = format!("{id}\n");
        let file = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        (&*file)
            .write_all(line.as_bytes())
            .map_err(context("cannot write", &self.finished_path))
    }

    /// Lists the spool after a start: every step with segments, and whether it finished.
    /// Only the directory is read, never a segment, so it takes no longer for a large spool
    /// than for a small one; torn tails are cut later by [`Spool::repair_tails`]. The
    /// `finished` journal is rewritten with the steps still in the spool, so it only grows
    /// between two starts.
    pub(crate) fn recover(&self) -> io::Result<BTreeMap<StepId, Recovered>> {
        let journal = &self.finished_path;
        let text = fs::read(journal).map_err(context("cannot read", journal))?;
        // A damaged line only loses its hint; never a reason not to start.
        let mut finished: BTreeSet<StepId> = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.parse().ok().and_then(|id| StepId::new(id).ok()))
            .collect();
        let mut found: BTreeMap<StepId, Recovered> = BTreeMap::new();
        for item in step_files(&self.steps).map_err(context("cannot read", &self.steps))? {
            let (path, kind) = item?;
            match kind {
                Some(StepFile::Segment(id, segment)) => {
                    found.entry(id).or_default().segments.insert(segment);
                }
                Some(StepFile::FinishedMarker(id)) => {
                    // A marker file of an earlier version: now a journal line.
                    finished.insert(id);
                    remove_if_exists(&path)?;
                }
                None => {
                    tracing::warn!(file = %path.display(), "ignoring unknown file in spool");
                }
            }
        }
        let mut kept = String::new();
        for (id, step) in &mut found {
            step.finished = finished.contains(id);
            if step.finished {
                kept.push_str(&format!("{id}\n"));
            }
        }
        let rewritten = self.tmp.join("finished");
        fs::write(&rewritten, kept)
            .and_then(|()| File::open(&rewritten)?.sync_all())
            .and_then(|()| fs::rename(&rewritten, journal))
            .and_then(|()| sync_dir(&self.root))
            .map_err(context("cannot rewrite", journal))?;
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = open_journal(journal)?;
        Ok(found)
    }
}

impl Spool {
    /// Cuts the torn tails off the given segments of a step found at start (a crash in the
    /// middle of a write leaves a partial last record that was never acknowledged). The
    /// caller holds the step's archive lock, so no archive run or LogDelete removes (and
    /// recycles) a file while it is cut. Returns how many segments had a torn tail.
    pub(crate) fn repair_tails(&self, id: StepId, segments: &BTreeSet<u32>) -> io::Result<usize> {
        let mut repaired = 0;
        for segment in segments {
            repaired += usize::from(repair_tail(&self.segment_path(id, *segment))?);
        }
        Ok(repaired)
    }
}

/// The lock file, under the spool's root.
pub(crate) const LOCK: &str = "lock";
/// The directory of the step files, under the spool's root.
pub(crate) const STEPS: &str = "steps";
/// The directory of build files and pooled empty files, under the spool's root.
const TMP: &str = "tmp";

/// What a file in `steps/` is, by its name. The one place that names and parses them.
#[derive(Debug, PartialEq, Eq)]
enum StepFile {
    /// `<id>.<segment>.ndjson`: a segment of a step's lines.
    Segment(StepId, u32),
    /// `<id>.finished`: the finished marker of an earlier version.
    FinishedMarker(StepId),
}

impl StepFile {
    /// What the file called `name` is; `None` for a name the spool never gives.
    fn parse(name: &str) -> Option<Self> {
        let (id, rest) = name.split_once('.')?;
        let id = id.parse().ok().and_then(|id| StepId::new(id).ok())?;
        if rest == "finished" {
            return Some(Self::FinishedMarker(id));
        }
        let segment = rest.strip_suffix(".ndjson")?.parse::<u32>().ok()?;
        Some(Self::Segment(id, segment))
    }
}

/// The name of a segment file, as [`StepFile::parse`] reads it.
fn segment_name(id: StepId, segment: u32) -> String {
    format!("{id}.{segment}.ndjson")
}

/// The files of a `steps/` directory, each with what its name says it is (`None`: a file
/// the spool never makes).
fn step_files(
    steps: &Path,
) -> io::Result<impl Iterator<Item = io::Result<(PathBuf, Option<StepFile>)>> + use<>> {
    Ok(fs::read_dir(steps)?.map(|item| {
        let item = item?;
        let kind = item.file_name().to_str().and_then(StepFile::parse);
        Ok((item.path(), kind))
    }))
}

/// The segment files of step `id` in the spool configured at `root`, in segment order; none
/// when there is no spool. It only lists the directory, so it works beside a running engine: reads
/// without an engine find a step's staged lines with it, as recovery does with
/// [`Spool::recover`].
pub(crate) fn list_segments(root: &Path, id: StepId) -> io::Result<Vec<PathBuf>> {
    let files = match step_files(&dir::locate(root).join(STEPS)) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut segments = Vec::new();
    for item in files {
        if let (path, Some(StepFile::Segment(step, segment))) = item?
            && step == id
        {
            segments.push((segment, path));
        }
    }
    segments.sort_unstable_by_key(|(segment, _)| *segment);
    Ok(segments.into_iter().map(|(_, path)| path).collect())
}

/// Cuts a torn last record off a segment, looking only at its end: complete records end
/// in a newline (JSON text never holds a raw one), so whatever follows the last newline is
/// a partial record. Returns whether there was one. A missing segment has none.
fn repair_tail(path: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(context("cannot read spool file", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(context("cannot read spool file", path))?
        .len();
    let complete = complete_len(&file, len).map_err(context("cannot read spool file", path))?;
    if complete == len {
        return Ok(false);
    }
    tracing::warn!(
        file = %path.display(),
        offset = complete,
        bytes = len - complete,
        "spool file ends in a partial record (the addon stopped mid-write); \
         dropping the partial record, which was never acknowledged"
    );
    file.set_len(complete)
        .and_then(|()| file.sync_all())
        .map_err(context("cannot truncate spool file", path))?;
    Ok(true)
}

/// The length of the file's complete records: up to and including its last newline, read
/// backwards from `len` in blocks.
fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 64 << 10;
    let mut buf = vec![0; BLOCK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        if let Some(newline) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(start + newline as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Removes `dir` and everything in it. In one process a dropped engine's file pool may still
/// be creating files there for a moment after its spool lock is released (a real crash ends
/// that at once; tests and the model test restart engines in one process), so a directory
/// that refills while it is being removed is removed again, for up to half a second.
fn clear_dir(dir: &Path) -> io::Result<()> {
    let mut retries = 50;
    loop {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && retries > 0 => {
                retries -= 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn open_journal(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(context("cannot open", path))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    pool::remove_if_exists(path).map_err(context("cannot remove", path))
}

/// Flushes a spool file's data. Tests can make it fail at `fsync <path>` (a real disk cannot
/// be made to fail an fsync on demand).
fn fsync(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(test)]
    crate::interleavings::injected(&format!("fsync {}", path.display()))
        .map_err(context("cannot fsync spool file", path))?;
    file.sync_data()
        .map_err(context("cannot fsync spool file", path))
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(context("cannot fsync directory", path))
}

#[cfg(test)]
mod tests;
