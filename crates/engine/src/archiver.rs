//! Archiving: the scheduler that picks due steps, and one archive run per step (seal, merge
//! the previous object with the sealed segments, upload, verify, and only then remove the
//! sealed segments).
//!
//! One upload per step at a time and a bounded number overall; a failed run is retried with
//! backoff while the spool keeps the lines (reads merge object and spool meanwhile).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use archive::{ConditionalWrites, ObjectInfo, StoreError, WriteCondition};
use logservice::StepId;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::build::build;
use crate::clock::Passes;
use crate::format::{self, Summary};
use crate::shared::Shared;
use crate::step::{Action, Slot};
use crate::threads::{at_idle_priority, blocking};

/// Why an archive run failed. The texts reach the logs as they are.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    /// This process archived the step, yet its object reads as missing: read-after-write lag
    /// (a replica or cache behind), or a deletion not yet long enough ago to believe. Writing
    /// now would replace the whole log with its late lines; the run is retried instead.
    #[error(
        "the archive {key} in {store} reads as missing although this process stored it (a replica or cache lagging behind?); retrying before replacing it with the late lines alone"
    )]
    MissingPrevious { key: String, store: String },
    /// Other writers replaced the object between our read and our write, every round.
    #[error(
        "{key} in {store} was replaced by another writer {rounds} times while merging into it; retrying later"
    )]
    Contended {
        key: String,
        store: String,
        rounds: u32,
    },
    /// The object the new one must include could not be read.
    #[error("reading the previous archive {key} from {store}: {source}")]
    ReadPrevious {
        key: String,
        store: String,
        source: StoreError,
    },
    /// Merging the previous object and the sealed segments failed (local disk, or a damaged
    /// previous object).
    #[error("building the archive {key}: {source}")]
    Build { key: String, source: std::io::Error },
    /// The store did not take the object.
    #[error("uploading {key} to {store}: {source}")]
    Upload {
        key: String,
        store: String,
        source: StoreError,
    },
    /// The store holds something other than what was uploaded.
    #[error("verifying {key} in {store}: {source}")]
    Verify {
        key: String,
        store: String,
        source: VerifyError,
    },
    /// The object is stored, but its sealed segments could not be removed from the spool
    /// (the next run merges them again, which changes nothing).
    #[error("removing archived spool segments: {source}")]
    RemoveSealed { key: String, source: std::io::Error },
    /// Database staging: the step's rows could not be read.
    #[error("reading the staged rows of step {id} from {table}: {source}")]
    ReadRows {
        id: StepId,
        table: String,
        source: crate::table::TableError,
    },
    /// Database staging: the object is stored, but the rows it holds could not be deleted
    /// (the next run merges them again, which changes nothing, and deletes them).
    #[error(
        "deleting the archived rows of step {id} from {table} (the object is stored; the rows are deleted at the next run): {source}"
    )]
    DeleteRows {
        id: StepId,
        table: String,
        source: crate::table::TableError,
    },
}

impl ArchiveError {
    /// The failure's cause for metrics, from a fixed set: the store's code
    /// ([`StoreError::code`]), `io` for the local disk, `corrupt` for an object that is not
    /// what was uploaded or a previous object that cannot be read.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ArchiveError::ReadPrevious { source, .. } | ArchiveError::Upload { source, .. } => {
                source.code()
            }
            ArchiveError::Build { source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                "corrupt"
            }
            ArchiveError::Build { .. } | ArchiveError::RemoveSealed { .. } => "io",
            ArchiveError::ReadRows { .. } | ArchiveError::DeleteRows { .. } => "database",
            ArchiveError::Verify { .. } => "corrupt",
            ArchiveError::MissingPrevious { .. } => "missing_previous",
            ArchiveError::Contended { .. } => "PreconditionFailed",
        }
    }
}

/// How a stored object differs from what was uploaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The store reports another size.
    #[error("stored {stored} bytes, uploaded {uploaded}")]
    Size { stored: u64, uploaded: u64 },
    /// The store's metadata claims another line count.
    #[error("stored object claims {stored} lines, uploaded {uploaded}")]
    LineCount { stored: String, uploaded: u64 },
}

/// How long an object this process stored (or the spool shows was stored) may read as
/// missing before that is believed (it was deleted, e.g. by a lifecycle rule). Read-after-write
/// lag of replicas and caches is seconds to minutes; meanwhile the late lines wait in the
/// spool and reads show them.
pub(crate) const MISSING_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// Reads and merges of one run when conditional writes find that someone else replaced the
/// object meanwhile; then the run fails and is retried with backoff.
pub(crate) const MERGE_ROUNDS: u32 = 3;

/// What an archive run stored.
struct Archived {
    key: String,
    summary: Summary,
    /// Compressed bytes uploaded.
    size: u64,
}

/// Runs the scheduler until `stop` holds a grace period: a pass at each of the clock's
/// [`Passes`]; then no run starts any more, the runs still going get the grace period to
/// finish, and what remains is aborted (its lines stay in the spool).
pub(crate) async fn scheduler_loop(
    inner: Arc<Shared>,
    mut passes: Passes,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut jobs = JoinSet::new();
    'passes: loop {
        let requested = tokio::select! {
            _ = stop.changed() => break,
            requested = passes.next() => requested,
        };
        reap(&mut jobs);
        inner.schedule(&mut jobs);
        let Some(pass) = requested else {
            continue;
        };
        // A manual clock's pass ends when nothing runs any more: runs that finish free upload
        // slots for steps that were due too.
        while !jobs.is_empty() {
            tokio::select! {
                _ = stop.changed() => break 'passes,
                _ = jobs.join_next() => {}
            }
            reap(&mut jobs);
            inner.schedule(&mut jobs);
        }
        passes.completed(pass);
    }
    let grace = stop.borrow().unwrap_or_default();
    if !jobs.is_empty() && !grace.is_zero() {
        tracing::info!(
            runs = jobs.len(),
            ?grace,
            "waiting for archive uploads under way"
        );
        let finished =
            tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                runs = jobs.len(),
                "archive uploads still under way at the deadline are abandoned; their lines stay in the spool and are archived after the next start"
            );
        }
    }
    jobs.shutdown().await;
}

/// Collects the runs that ended, reporting panics.
fn reap(jobs: &mut JoinSet<()>) {
    while let Some(result) = jobs.try_join_next() {
        if let Err(e) = result
            && e.is_panic()
        {
            tracing::error!(error = %e, "an archive run panicked; it will be retried");
        }
    }
}

/// Clears a run's hold on its step even when the run panics or is aborted (then as a
/// failure, so the step is retried later).
struct RunEnd<'a> {
    inner: &'a Shared,
    slot: &'a Slot,
    ok: bool,
}

impl Drop for RunEnd<'_> {
    fn drop(&mut self) {
        let now = self.inner.clock.now();
        let mut state = self.slot.state();
        if self.ok {
            state.archive_succeeded(now);
        } else {
            state.archive_failed(now, &self.inner.backoff);
        }
    }
}

impl Shared {
    /// Starts archive runs of due steps while upload slots are free; forgets idle ones.
    fn schedule(self: &Arc<Self>, jobs: &mut JoinSet<()>) {
        let now = self.clock.now();
        let mut forget = Vec::new();
        for (id, slot) in self.steps.all() {
            let mut state = slot.state();
            match state.action(now, &self.settings) {
                Action::Wait => {}
                Action::Forget => forget.push((id, slot.clone())),
                Action::Archive => {
                    let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                        continue;
                    };
                    state.start_archiving();
                    drop(state);
                    let inner = self.clone();
                    jobs.spawn(async move {
                        inner.archive_job(id, slot).await;
                        drop(permit);
                    });
                }
            }
        }
        self.steps.forget(forget, now, &self.settings);
    }

    /// One archive run of a step, logged, its outcome recorded in the step's state.
    async fn archive_job(self: Arc<Self>, id: StepId, slot: Arc<Slot>) {
        let mut end = RunEnd {
            inner: &self,
            slot: &slot,
            ok: false,
        };
        let started = Instant::now();
        match self.archive(id, &slot).await {
            Ok(Some(Archived { key, summary, size })) => {
                end.ok = true;
                tracing::info!(
                    step = %id,
                    key = %key,
                    lines = summary.lines,
                    bytes = size,
                    uncompressed = summary.uncompressed_size,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "archived step log"
                );
            }
            Ok(None) => end.ok = true,
            Err(e) => {
                self.counters
                    .archive_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.failures_by_code.add(e.code());
                let failures = slot.state().failures() + 1;
                tracing::warn!(
                    step = %id,
                    attempt = failures,
                    error = %e,
                    "archiving failed; the lines stay in the spool and archiving will be retried"
                );
            }
        }
    }

    /// One archive run: seal, merge previous object + sealed segments, upload, verify, and
    /// only then remove the sealed segments. Returns what was stored, or `None` when there
    /// was nothing to do.
    async fn archive(
        self: &Arc<Self>,
        id: StepId,
        slot: &Slot,
    ) -> Result<Option<Archived>, ArchiveError> {
        let _exclusive = slot.archive.lock().await;
        let sealed = {
            let mut state = slot.state();
            if state.is_removed() {
                return Ok(None);
            }
            let (sealed, closed) = state.seal();
            if let Some(segment) = closed {
                self.spool.forget_handle(id, segment);
            }
            sealed
        };
        if sealed.is_empty() {
            return Ok(None);
        }
        let paths: Vec<PathBuf> = sealed
            .clone()
            .map(|s| self.spool.segment_path(id, s))
            .collect();
        let key = format::object_key(&self.settings.key_prefix, id);
        let conditional = match self.store.conditional_writes().await {
            Ok(answer) => answer == ConditionalWrites::Honoured,
            Err(source) => {
                return Err(ArchiveError::Upload {
                    store: self.store.describe(),
                    key,
                    source,
                });
            }
        };
        let mut round = 1;
        let stored = loop {
            match self.merge_round(id, slot, &key, &paths, conditional).await {
                Err(ArchiveError::Upload { source, .. })
                    if source.is_precondition_failed() && round < MERGE_ROUNDS =>
                {
                    tracing::info!(
                        step = %id,
                        key = %key,
                        "the archive changed since it was read (412 PreconditionFailed); reading it again and merging"
                    );
                    round += 1;
                }
                Err(ArchiveError::Upload { source, .. }) if source.is_precondition_failed() => {
                    return Err(ArchiveError::Contended {
                        key,
                        store: self.store.describe(),
                        rounds: round,
                    });
                }
                result => break result?,
            }
        };
        self.remove_sealed(id, slot, sealed).await?;
        Ok(stored)
    }

    /// Reads the step's object, merges the sealed segments at `paths` into it, and stores the
    /// result, conditional on the object read (when the store honours conditions) so that a
    /// version written meanwhile by anyone else is never replaced unseen.
    async fn merge_round(
        self: &Arc<Self>,
        id: StepId,
        slot: &Slot,
        key: &str,
        paths: &[PathBuf],
        conditional: bool,
    ) -> Result<Option<Archived>, ArchiveError> {
        let key = key.to_owned();
        let previous = match self.store.get(&key).await {
            Ok(previous) => previous,
            Err(source) => {
                return Err(ArchiveError::ReadPrevious {
                    store: self.store.describe(),
                    key,
                    source,
                });
            }
        };
        let condition = match &previous {
            Some((_, info)) if conditional => info.etag.clone().map(WriteCondition::Matches),
            Some(_) => None,
            None => {
                // Checked even where the server honours conditions: some honour them on
                // PutObject only, not on CompleteMultipartUpload (moto).
                let believed = slot
                    .state()
                    .missing_object(self.clock.now(), MISSING_PATIENCE);
                if !believed {
                    return Err(ArchiveError::MissingPrevious {
                        key,
                        store: self.store.describe(),
                    });
                }
                // The write itself refuses to replace an object this read could not see.
                conditional.then_some(WriteCondition::Absent)
            }
        };
        let previous = previous.map(|(bytes, _)| bytes);

        let inner = self.clone();
        let paths = paths.to_vec();
        let built = at_idle_priority("archive-build", move || {
            for path in &paths {
                match inner.spool.sync_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            build(
                previous.as_deref(),
                &paths,
                inner.spool.tmp_dir(),
                inner.settings.compression_level,
                inner.settings.sort_budget_bytes,
                inner.spool.pool(),
            )
        })
        .await
        .and_then(|built| built);
        let built = match built {
            Ok(built) => built,
            Err(source) => return Err(ArchiveError::Build { key, source }),
        };

        let Some(built) = built else {
            // The sealed segments held no readable record: nothing to keep.
            return Ok(None);
        };
        let meta = built.summary.to_meta(id);
        // Even a failed upload may have stored the object.
        slot.state().upload_started();
        let upload_started = Instant::now();
        let uploaded = match self
            .store
            .put_file_if(&key, built.file.path(), &meta, condition.as_ref())
            .await
        {
            Ok(info) => {
                verify(&info, built.size, &built.summary).map_err(|source| ArchiveError::Verify {
                    key: key.clone(),
                    store: self.store.describe(),
                    source,
                })
            }
            Err(source) => Err(ArchiveError::Upload {
                key: key.clone(),
                store: self.store.describe(),
                source,
            }),
        };
        self.counters
            .upload_latency
            .record(upload_started.elapsed());
        let (file, size, summary) = (built.file, built.size, built.summary);
        // Recycling the file frees its blocks, which can take milliseconds (the file system
        // may discard them on the device): never on the runtime.
        blocking(move || drop(file)).await;
        uploaded?;
        slot.state().object_stored();
        self.counters
            .archive_uploads
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .archive_bytes_uploaded
            .fetch_add(size, Ordering::Relaxed);
        Ok(Some(Archived { key, summary, size }))
    }

    /// Removes the sealed segments of a run whose object is stored (or that held nothing).
    async fn remove_sealed(
        self: &Arc<Self>,
        id: StepId,
        slot: &Slot,
        sealed: Range<u32>,
    ) -> Result<(), ArchiveError> {
        let inner = self.clone();
        let segments = sealed.clone();
        blocking(move || inner.spool.remove(id, segments))
            .await
            .map_err(|source| ArchiveError::RemoveSealed {
                key: format::object_key(&self.settings.key_prefix, id),
                source,
            })?;
        slot.state().sealed_removed(sealed.end);
        Ok(())
    }
}

/// Checks what the store reports holding after an upload against what was built, before the
/// spool segments are removed.
pub(crate) fn verify(info: &ObjectInfo, size: u64, summary: &Summary) -> Result<(), VerifyError> {
    if info.size != size {
        return Err(VerifyError::Size {
            stored: info.size,
            uploaded: size,
        });
    }
    // Some S3-compatible servers drop user metadata; only a contradiction is an error.
    if let Some(lines) = info.meta.user.get(format::META_LINE_COUNT)
        && *lines != summary.lines.to_string()
    {
        return Err(VerifyError::LineCount {
            stored: lines.clone(),
            uploaded: summary.lines,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use archive::ObjectMeta;

    use super::*;

    /// The texts operators know from the logs, now built from typed errors.
    #[test]
    fn archive_errors_read_as_before() {
        let key = "v1/001/1.ndjson.zst".to_string();
        let build = ArchiveError::Build {
            key: key.clone(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(
            build.to_string(),
            "building the archive v1/001/1.ndjson.zst: disk full"
        );
        let verify = ArchiveError::Verify {
            key: key.clone(),
            store: "local directory /a".into(),
            source: VerifyError::Size {
                stored: 1,
                uploaded: 2,
            },
        };
        assert_eq!(
            verify.to_string(),
            "verifying v1/001/1.ndjson.zst in local directory /a: stored 1 bytes, uploaded 2"
        );
        let remove = ArchiveError::RemoveSealed {
            key,
            source: std::io::Error::other("read-only"),
        };
        assert_eq!(
            remove.to_string(),
            "removing archived spool segments: read-only"
        );
        assert!(std::error::Error::source(&remove).is_some());
    }

    /// Metric labels: the store's code, or the local class; never the key.
    #[test]
    fn archive_errors_have_bounded_codes() {
        let key = "v1/001/1.ndjson.zst".to_string();
        let upload = ArchiveError::Upload {
            key: key.clone(),
            store: "s3://b".into(),
            source: StoreError::transient("503"),
        };
        assert_eq!(upload.code(), "transient");
        let damaged = ArchiveError::Build {
            key: key.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "bad zstd frame"),
        };
        assert_eq!(damaged.code(), "corrupt");
        let full = ArchiveError::Build {
            key: key.clone(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(full.code(), "io");
        let verify = ArchiveError::Verify {
            key,
            store: "s3://b".into(),
            source: VerifyError::Size {
                stored: 1,
                uploaded: 2,
            },
        };
        assert_eq!(verify.code(), "corrupt");
    }

    #[test]
    fn verify_names_what_differs() {
        let summary = Summary {
            lines: 3,
            ..Summary::default()
        };
        let mut info = ObjectInfo {
            size: 10,
            meta: ObjectMeta::default(),
            etag: None,
        };
        assert!(verify(&info, 10, &summary).is_ok());
        assert_eq!(
            verify(&info, 11, &summary).unwrap_err().to_string(),
            "stored 10 bytes, uploaded 11"
        );
        info.meta
            .user
            .insert(format::META_LINE_COUNT.into(), "4".into());
        assert_eq!(
            verify(&info, 10, &summary).unwrap_err().to_string(),
            "stored object claims 4 lines, uploaded 3"
        );
    }
}
