//! Reading segments while the engine removes and recycles them.
//!
//! A removed segment's file goes back to the [`FilePool`](crate::pool::FilePool) and becomes
//! the next segment of any step, so a reader that opened a segment just before its removal
//! could read another step's lines through its descriptor: another repository's log. Two
//! defences, because each covers what the other cannot:
//!
//! - The engine's own readers register the segment they open ([`Spool::read_segment`]), and
//!   [`Spool::remove`] never recycles a registered file: it unlinks it, so the reader keeps
//!   a file nobody writes any more. Deciding and moving the file off its path happen under
//!   the registry's lock, so no reader can open it in between.
//! - Every reader, including those outside the engine (`get` beside a running addon), checks
//!   after reading that the segment's path still names the file it read
//!   ([`ReadOutcome::Moved`] when not): whatever it read then is dropped. Nothing is lost by
//!   that, because a segment leaves its path only after its lines are in the archive object
//!   (which readers fetch after the spool) or when the step is deleted.
//!
//! Checking each record's `step_id` instead would depend on the host's data: `step_id` is
//! stored as the agent sent it (and read back that way), so a mismatch proves nothing about
//! which file a record came from.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use logservice::StepId;

use super::{Spool, context, remove_if_exists};
use crate::format::{RawRecord, RecordError, RecordReader};
use crate::step::lock;

/// How many engine readers hold each segment open; see [`Spool::remove`].
#[derive(Default)]
pub(crate) struct Readers(Mutex<HashMap<(StepId, u32), usize>>);

/// Whether the records a reader visited are the segment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum ReadOutcome {
    /// They are (none, when the segment was missing from the start).
    Complete,
    /// The file left the segment's path while it was read (archived or deleted): what was
    /// visited may come from the file's next use and must be dropped.
    Moved,
}

/// Unregisters a reader when it is done.
struct Registered<'a> {
    readers: &'a Readers,
    segment: (StepId, u32),
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut readers = lock(&self.readers.0);
        if let Some(count) = readers.get_mut(&self.segment) {
            *count -= 1;
            if *count == 0 {
                readers.remove(&self.segment);
            }
        }
    }
}

impl Spool {
    /// Calls `visit` with each record of segment `segment` of step `id` up to `limit` bytes,
    /// as [`read_segment_file`] does; while it reads, the file is never recycled.
    pub(crate) fn read_segment(
        &self,
        id: StepId,
        segment: u32,
        limit: Option<u64>,
        visit: impl FnMut(i64, &[u8], bool),
    ) -> io::Result<ReadOutcome> {
        let path = self.segment_path(id, segment);
        let file = {
            let mut readers = lock(&self.readers.0);
            let Some(file) = open_segment(&path)? else {
                return Ok(ReadOutcome::Complete);
            };
            *readers.entry((id, segment)).or_insert(0) += 1;
            file
        };
        let _registered = Registered {
            readers: &self.readers,
            segment: (id, segment),
        };
        read_checked(&path, file, limit, visit)
    }

    /// Removes the given segments. A file no engine reader holds is emptied and goes back to
    /// the pool; one a reader holds is unlinked, so it is never reused while read. Missing
    /// files are fine.
    pub(crate) fn remove(
        &self,
        id: StepId,
        segments: impl IntoIterator<Item = u32>,
    ) -> io::Result<()> {
        for segment in segments {
            self.forget_handle(id, segment);
            let path = self.segment_path(id, segment);
            let (withdrawn, being_read) = {
                let readers = lock(&self.readers.0);
                let withdrawn = self.pool.withdraw(&path);
                (withdrawn, readers.contains_key(&(id, segment)))
            };
            match withdrawn.map_err(context("cannot remove", &path))? {
                None => {}
                Some(moved) if being_read => remove_if_exists(&moved)?,
                Some(moved) => self
                    .pool
                    .give_back(&moved)
                    .map_err(context("cannot remove", &path))?,
            }
        }
        Ok(())
    }
}

/// Calls `visit` with the line, bytes (newline included) and canonical form (see
/// [`RawRecord`]) of every complete record of the segment at `path`, in file order, without
/// decoding `data`, up to `limit` bytes (the acknowledged length of a segment still being
/// appended to). A missing segment (already archived and removed) has no records; records
/// that are not valid JSON are skipped with a warning. For readers that may run beside a
/// removal: see [`ReadOutcome`].
pub(crate) fn read_segment_file(
    path: &Path,
    limit: Option<u64>,
    visit: impl FnMut(i64, &[u8], bool),
) -> io::Result<ReadOutcome> {
    match open_segment(path)? {
        Some(file) => read_checked(path, file, limit, visit),
        None => Ok(ReadOutcome::Complete),
    }
}

/// [`read_segment_file`] for a reader that no removal can race (an archive run reading
/// the segments it sealed, under the step's archive lock).
pub(crate) fn read_segment_raw(
    path: &Path,
    limit: Option<u64>,
    visit: impl FnMut(i64, &[u8], bool),
) -> io::Result<()> {
    match open_segment(path)? {
        Some(file) => visit_records(path, file, limit, visit),
        None => Ok(()),
    }
}

fn open_segment(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context("cannot read spool file", path)(e)),
    }
}

/// Visits the records of `file`, opened at `path`, then checks that `path` still names it.
fn read_checked(
    path: &Path,
    file: File,
    limit: Option<u64>,
    visit: impl FnMut(i64, &[u8], bool),
) -> io::Result<ReadOutcome> {
    let held = file
        .metadata()
        .map_err(context("cannot read spool file", path))?;
    visit_records(path, file, limit, visit)?;
    let still_there = match fs::symlink_metadata(path) {
        Ok(now) => now.dev() == held.dev() && now.ino() == held.ino(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(context("cannot read spool file", path)(e)),
    };
    Ok(if still_there {
        ReadOutcome::Complete
    } else {
        ReadOutcome::Moved
    })
}

fn visit_records(
    path: &Path,
    file: File,
    limit: Option<u64>,
    mut visit: impl FnMut(i64, &[u8], bool),
) -> io::Result<()> {
    #[cfg(test)]
    crate::interleavings::reached(&format!("opened {}", path.display()));
    let reader = BufReader::new(io::Read::take(file, limit.unwrap_or(u64::MAX)));
    let mut reader = RecordReader::unsorted(reader);
    loop {
        match reader.next_raw() {
            Ok(RawRecord::Line {
                line,
                bytes,
                canonical,
            }) => visit(line, bytes, canonical),
            // A write still in flight past `limit`, or a crash's torn tail that recovery
            // has not cut yet: never an acknowledged record.
            Ok(RawRecord::End | RawRecord::Torn { .. }) => return Ok(()),
            Err(RecordError::Json { offset, source }) => {
                tracing::warn!(file = %path.display(), offset, error = %source,
                    "skipping an unreadable record in the spool");
            }
            Err(e) => return Err(io::Error::other(format!("{}: {e}", path.display()))),
        }
    }
}
