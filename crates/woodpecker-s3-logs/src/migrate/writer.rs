//! One legacy step into one archive object: merged with an object that already exists (its
//! lines win, as they do for late lines), built with the engine's own builder, uploaded,
//! verified. Memory per step: the sort budget plus the previous object, whatever the size
//! of the database.

use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;

use archive::{BoxError, ObjectMeta, ObjectStore, StoreError};
use engine::ObjectBuilder;
use engine::format::{self, FORMAT_VERSION, Summary};
use futures::{Stream, StreamExt};
use logservice::{LogEntry, StepId};
use tempfile::NamedTempFile;

/// Entries handed to the builder thread at once.
const BATCH: usize = 1024;

/// What the legacy store holds for a step, as counted by the database (or a pass over the
/// file): what its archive object must hold for the step to count as migrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LegacyShape {
    /// Distinct line numbers.
    pub(crate) lines: u64,
    /// The smallest line number.
    pub(crate) first: i64,
    /// The largest line number.
    pub(crate) last: i64,
}

impl LegacyShape {
    /// Whether an archive object with metadata `meta` holds these lines: it is of this
    /// format and has at least as many lines, spanning at least the same range.
    ///
    /// Exact for objects this tool wrote: it writes the union of the legacy lines and any
    /// earlier object, and an upload replaces an object atomically, so after a run killed at
    /// any point the object either holds every legacy line or is the untouched earlier one
    /// (which fails the test unless it already held them). An object the addon archived from
    /// its own spool holds lines that arrived after the switch; those lie after the legacy
    /// ones or interleave with them, so it fails the count or range test and is merged.
    pub(crate) fn held_by(&self, meta: &ObjectMeta) -> bool {
        let number = |key: &str| meta.user.get(key).and_then(|v| v.parse::<i64>().ok());
        let lines = meta
            .user
            .get(format::META_LINE_COUNT)
            .and_then(|v| v.parse::<u64>().ok());
        number(format::META_FORMAT_VERSION) == Some(i64::from(FORMAT_VERSION))
            && lines.is_some_and(|lines| lines >= self.lines)
            && number(format::META_FIRST_LINE).is_some_and(|first| first <= self.first)
            && number(format::META_LAST_LINE).is_some_and(|last| last >= self.last)
    }
}

/// What happened to one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its object already held the legacy lines: nothing written.
    AlreadyArchived {
        /// The object's size.
        bytes: u64,
    },
    /// An object was written (merged with the earlier one when `merged`) and verified.
    Written {
        /// Legacy entries read.
        legacy_lines: u64,
        /// Entries in the object.
        object_lines: u64,
        /// Compressed bytes uploaded.
        bytes: u64,
        /// Whether an earlier object was merged in.
        merged: bool,
    },
    /// The legacy store held no entry after all (rows deleted meanwhile).
    Empty,
}

/// Why a step could not be migrated. Each names the step's object and the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// Looking at or reading the existing object failed.
    #[error("reading {key} in {store}: {source}")]
    ReadObject {
        /// The step's key.
        key: String,
        /// The store.
        store: String,
        /// The store's error.
        source: StoreError,
    },
    /// Reading the legacy entries failed.
    #[error("reading the legacy log of step {step}: {source}")]
    ReadLegacy {
        /// The step.
        step: StepId,
        /// The database's or file's error.
        source: BoxError,
    },
    /// Building the object failed (local disk, or a damaged earlier object).
    #[error("building {key} in {dir}: {source}")]
    Build {
        /// The step's key.
        key: String,
        /// The temporary directory.
        dir: String,
        /// What failed.
        source: io::Error,
    },
    /// The store did not take the object.
    #[error("uploading {key} to {store}: {source}")]
    Upload {
        /// The step's key.
        key: String,
        /// The store.
        store: String,
        /// The store's error.
        source: StoreError,
    },
    /// The stored object is not what was built, or does not hold the legacy lines.
    #[error("verifying {key} in {store}: {problem}")]
    Verify {
        /// The step's key.
        key: String,
        /// The store.
        store: String,
        /// What differs.
        problem: String,
    },
}

/// Writes archive objects from legacy entries.
pub(crate) struct Writer {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The engine's key prefix (inside the store's folder).
    pub(crate) key_prefix: String,
    /// Where objects are built and sort runs spill.
    pub(crate) tmp: PathBuf,
    /// zstd level.
    pub(crate) level: i32,
    /// Bytes of entries sorted in memory per step.
    pub(crate) sort_budget: usize,
}

impl Writer {
    /// The step's key.
    pub(crate) fn key(&self, id: StepId) -> String {
        format::object_key(&self.key_prefix, id)
    }

    /// Whether the step's object already holds `shape` (then the step is done), by a HEAD:
    /// `Ok(Some(size))` when it does.
    pub(crate) async fn already_archived(
        &self,
        id: StepId,
        shape: &LegacyShape,
    ) -> Result<Option<u64>, WriteError> {
        Ok(match self.existing(id).await? {
            Some(info) if shape.held_by(&info.meta) => Some(info.size),
            _ => None,
        })
    }

    /// The step's object's size and metadata, if it exists.
    async fn existing(&self, id: StepId) -> Result<Option<archive::ObjectInfo>, WriteError> {
        let key = self.key(id);
        self.store
            .head(&key)
            .await
            .map_err(|source| WriteError::ReadObject {
                key,
                store: self.store.describe(),
                source,
            })
    }

    /// Migrates one step: skipped when its object already holds `shape`, else the legacy
    /// `entries` (any order; the first of a line wins) merged into the existing object,
    /// uploaded and verified.
    pub(crate) async fn migrate_step<S, E>(
        &self,
        id: StepId,
        shape: &LegacyShape,
        entries: S,
    ) -> Result<Outcome, WriteError>
    where
        S: Stream<Item = Result<LogEntry, E>>,
        E: Into<BoxError>,
    {
        let existing = self.existing(id).await?;
        if let Some(info) = &existing
            && shape.held_by(&info.meta)
        {
            return Ok(Outcome::AlreadyArchived { bytes: info.size });
        }
        let key = self.key(id);
        let store_name = || self.store.describe();
        // Most steps have no object yet: the HEAD said so, no GET needed.
        let previous = match existing {
            None => None,
            Some(_) => self
                .store
                .get(&key)
                .await
                .map_err(|source| WriteError::ReadObject {
                    key: key.clone(),
                    store: store_name(),
                    source,
                })?
                .map(|(bytes, _)| bytes),
        };
        let merged = previous.is_some();

        // The builder runs on a blocking thread (it sorts, spills and compresses); entries
        // reach it in batches through a short channel, so a slow disk slows the reads
        // instead of filling memory.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<LogEntry>>(2);
        let (tmp, level, budget) = (self.tmp.clone(), self.level, self.sort_budget);
        let builder = tokio::task::spawn_blocking(move || {
            let mut builder = ObjectBuilder::new(previous.as_deref(), &tmp, budget)?;
            while let Some(batch) = receiver.blocking_recv() {
                for entry in &batch {
                    builder.push(entry)?;
                }
            }
            let file = NamedTempFile::with_prefix_in("object-", &tmp)?;
            let Some((out, summary)) = builder.finish(BufWriter::new(file), level)? else {
                return Ok(None);
            };
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.as_file().sync_all()?;
            let size = file.as_file().metadata()?.len();
            Ok::<_, io::Error>(Some((file, summary, size)))
        });

        let mut legacy_lines = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        let mut entries = std::pin::pin!(entries);
        let mut read_error = None;
        while let Some(entry) = entries.next().await {
            match entry {
                Ok(entry) => batch.push(entry),
                Err(e) => {
                    read_error = Some(e.into());
                    break;
                }
            }
            legacy_lines += 1;
            if batch.len() == BATCH && sender.send(std::mem::take(&mut batch)).await.is_err() {
                break; // the builder failed: its error follows
            }
        }
        if read_error.is_none() && !batch.is_empty() {
            let _ = sender.send(batch).await;
        }
        drop(sender);
        let built = builder.await.map_err(io::Error::other).and_then(|r| r);
        if let Some(source) = read_error {
            return Err(WriteError::ReadLegacy { step: id, source });
        }
        let built = built.map_err(|source| WriteError::Build {
            key: key.clone(),
            dir: self.tmp.display().to_string(),
            source,
        })?;
        let Some((file, summary, size)) = built else {
            return Ok(Outcome::Empty);
        };
        if legacy_lines == 0 {
            return Ok(Outcome::Empty);
        }
        let meta = summary.to_meta(id);
        let verify_error = |problem: String| WriteError::Verify {
            key: key.clone(),
            store: store_name(),
            problem,
        };
        // The rows counted when the step was planned must all be in the object.
        if !shape.held_by(&meta) {
            return Err(verify_error(format!(
                "the legacy log changed while it was read ({} lines from {} to {} counted, the object would hold {} lines from {:?} to {:?}); run migrate again",
                shape.lines,
                shape.first,
                shape.last,
                summary.lines,
                summary.first_line,
                summary.last_line
            )));
        }
        let info = self
            .store
            .put_file(&key, file.path(), &meta)
            .await
            .map_err(|source| WriteError::Upload {
                key: key.clone(),
                store: store_name(),
                source,
            })?;
        verify(&info.meta, info.size, size, &summary).map_err(verify_error)?;
        Ok(Outcome::Written {
            legacy_lines,
            object_lines: summary.lines,
            bytes: size,
            merged,
        })
    }
}

/// What the store reports after the upload against what was built: the size always, the
/// line count where the server keeps user metadata (some S3-compatible servers drop it).
fn verify(
    stored: &ObjectMeta,
    stored_size: u64,
    size: u64,
    summary: &Summary,
) -> Result<(), String> {
    if stored_size != size {
        return Err(format!("stored {stored_size} bytes, uploaded {size}"));
    }
    if let Some(lines) = stored.user.get(format::META_LINE_COUNT)
        && *lines != summary.lines.to_string()
    {
        return Err(format!(
            "stored object claims {lines} lines, uploaded {}",
            summary.lines
        ));
    }
    Ok(())
}

impl Writer {
    /// Whether the step's object holds every line of the legacy `entries`, read in full:
    /// the check before deleting the legacy copy of a step whose object was written
    /// earlier (by an earlier run, or by the addon), where only metadata was compared.
    pub(crate) async fn holds_every_line<S, E>(
        &self,
        id: StepId,
        entries: S,
    ) -> Result<Result<(), String>, WriteError>
    where
        S: Stream<Item = Result<LogEntry, E>>,
        E: Into<BoxError>,
    {
        let key = self.key(id);
        let Some((bytes, _)) =
            self.store
                .get(&key)
                .await
                .map_err(|source| WriteError::ReadObject {
                    key: key.clone(),
                    store: self.store.describe(),
                    source,
                })?
        else {
            return Ok(Err("the object is gone".to_owned()));
        };
        // Line numbers only: 8 bytes per line of the step.
        let lines = tokio::task::spawn_blocking(move || object_lines(&bytes))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| WriteError::Build {
                key: key.clone(),
                dir: "memory".to_owned(),
                source,
            })?;
        let mut entries = std::pin::pin!(entries);
        while let Some(entry) = entries.next().await {
            let entry = entry.map_err(|e| WriteError::ReadLegacy {
                step: id,
                source: e.into(),
            })?;
            if lines.binary_search(&entry.line).is_err() {
                return Ok(Err(format!("line {} is not in the object", entry.line)));
            }
        }
        Ok(Ok(()))
    }
}

/// The line numbers of an object, in order.
fn object_lines(bytes: &[u8]) -> io::Result<Vec<i64>> {
    let mut reader = format::object_reader(bytes)?;
    let mut lines = Vec::new();
    loop {
        match reader.next_raw().map_err(io::Error::other)? {
            format::RawRecord::Line { line, .. } => lines.push(line),
            format::RawRecord::End => return Ok(lines),
            format::RawRecord::Torn { offset, .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the object ends inside a record at byte {offset}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            user: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..ObjectMeta::default()
        }
    }

    /// "Holds" means: format 1, at least as many lines, spanning at least the range.
    #[test]
    fn an_object_holds_the_legacy_lines_by_count_and_range() {
        let shape = LegacyShape {
            lines: 10,
            first: 0,
            last: 9,
        };
        let object = |lines: &str, first: &str, last: &str| {
            meta(&[
                ("format-version", "1"),
                ("line-count", lines),
                ("first-line", first),
                ("last-line", last),
            ])
        };
        assert!(shape.held_by(&object("10", "0", "9")));
        assert!(
            shape.held_by(&object("15", "0", "14")),
            "late lines after it"
        );
        assert!(!shape.held_by(&object("9", "0", "9")), "a line missing");
        assert!(!shape.held_by(&object("10", "1", "10")), "starts later");
        assert!(!shape.held_by(&object("10", "0", "8")), "ends earlier");
        assert!(!shape.held_by(&meta(&[("line-count", "10")])), "no range");
        let mut other_format = object("10", "0", "9");
        other_format
            .user
            .insert("format-version".into(), "2".into());
        assert!(!shape.held_by(&other_format));
        assert!(!shape.held_by(&object("x", "0", "9")));
    }
}
