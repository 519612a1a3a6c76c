//! The scheduler of database staging and one archive run: read the previous object, stream
//! the step's rows into a build beside it, upload (conditionally), verify, and only then
//! delete the rows of the lines the object now holds.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archive::{ConditionalWrites, StoreError, WriteCondition};
use futures_util::StreamExt;
use logservice::{LogEntry, StepId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{Inner, LineRanges};
use crate::ObjectBuilder;
use crate::archiver::{ArchiveError, MERGE_ROUNDS, MISSING_PATIENCE, verify};
use crate::clock::Passes;
use crate::format::{self, Summary};
use crate::threads::{at_idle_priority, blocking};

/// Steps listed per page by the sweep.
const SWEEP_PAGE: usize = 500;
/// Entries handed to the build at a time.
const BUILD_BATCH: usize = 1000;

/// What a run stored.
struct Stored {
    key: String,
    summary: Summary,
    size: u64,
    rows_deleted: u64,
    /// Where the run read the rows: `memory` (the copy held, see `held.rs`) or `table`.
    rows_from: &'static str,
}

/// The object built from the previous one and the rows, in a scratch file.
struct Built {
    file: tempfile::NamedTempFile,
    size: u64,
    summary: Summary,
    lines: LineRanges,
    rows_from: &'static str,
}

impl Inner {
    /// Runs passes until `stop` holds a grace period; then runs under way get the grace
    /// period and the rest is aborted (its rows stay in the table).
    pub(super) async fn scheduler_loop(
        self: Arc<Self>,
        mut passes: Passes,
        mut stop: watch::Receiver<Option<Duration>>,
    ) {
        let mut jobs = JoinSet::new();
        let mut next_sweep = self.clock.now();
        let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let pass = tokio::select! {
                pass = passes.next() => pass,
                _ = stop.changed() => break,
            };
            while jobs.try_join_next().is_some() {}
            let now = self.clock.now();
            if now >= next_sweep && sweeping.as_ref().is_none_or(|sweep| sweep.is_finished()) {
                next_sweep = now + self.sweep_period();
                let inner = self.clone();
                let sweep = tokio::spawn(async move {
                    if let Err(error) = inner.sweep().await {
                        tracing::warn!(table = %inner.table.describe(), %error,
                            "cannot list the steps staged in the database; retrying at the next sweep");
                    }
                });
                // A manual clock's pass includes the sweep; on the real clock a slow
                // database or archive must not hold up the runs that are due.
                if pass.is_some() {
                    let _ = sweep.await;
                } else {
                    sweeping = Some(sweep);
                }
            }
            self.schedule(&mut jobs);
            if let Some(pass) = pass {
                // A manual clock's pass ends when no run is left.
                while jobs.join_next().await.is_some() {}
                passes.completed(pass);
            }
        }
        let grace = stop.borrow().unwrap_or_default();
        if tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                runs = jobs.len(),
                "archive runs still under way at shutdown were abandoned; their rows stay in the database and are archived after the next start"
            );
        }
        jobs.abort_all();
        if let Some(sweep) = sweeping {
            sweep.abort();
        }
    }

    /// How often the table is listed for steps this process does not know of.
    fn sweep_period(&self) -> Duration {
        (self.settings.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Starts a run for each due step.
    fn schedule(self: &Arc<Self>, jobs: &mut JoinSet<()>) {
        let now = self.clock.now();
        for id in self.steps.take_due(
            now,
            self.settings.finalize_delay,
            self.settings.idle_timeout,
        ) {
            let inner = self.clone();
            jobs.spawn(async move {
                let Ok(_slot) = inner.permits.clone().acquire_owned().await else {
                    return;
                };
                inner.archive_job(id).await;
            });
        }
    }

    /// Lists the steps with rows of staging and makes each known (due after the idle
    /// timeout from its newest row), so that a restarted addon archives what the previous
    /// one left. Rows older than the staging marker are the database store's history.
    async fn sweep(self: &Arc<Self>) -> Result<(), String> {
        let since = *self
            .since
            .get_or_try_init(|| super::since::load_or_claim(self))
            .await?;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let now = self.clock.now();
        let mut after = 0;
        loop {
            let page = self
                .table
                .staged_steps(after, SWEEP_PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.step_id;
            for step in &page {
                if step.last_created < since {
                    continue;
                }
                let Ok(id) = StepId::new(step.step_id) else {
                    continue;
                };
                let age =
                    Duration::from_secs(unix_now.saturating_sub(step.last_created).max(0) as u64);
                self.steps.found(id, now, age);
            }
            if page.len() < SWEEP_PAGE {
                return Ok(());
            }
        }
    }

    async fn archive_job(self: Arc<Self>, id: StepId) {
        let lock = self.steps.run_lock(id);
        let result = {
            let _exclusive = lock.lock().await;
            self.archive(id).await
        };
        let now = self.clock.now();
        match result {
            Ok(Some(stored)) => {
                tracing::info!(step = %id, key = %stored.key, lines = stored.summary.lines,
                    bytes = stored.size, rows_deleted = stored.rows_deleted,
                    rows_from = stored.rows_from,
                    "archived step log; its rows are deleted from the database");
                self.steps.run_ended(id, now, None);
            }
            Ok(None) => self.steps.run_ended(id, now, None),
            Err(error) => {
                self.counters
                    .archive_failures
                    .fetch_add(1, Ordering::Relaxed);
                let backoff = &self.backoff;
                let delay = |failures: u32| backoff.delay(failures);
                self.steps.run_ended(id, now, Some(&delay));
                tracing::warn!(step = %id, %error,
                    "archiving failed; the lines stay in the database and archiving will be retried");
            }
        }
    }

    /// One run; `None` when the step has no rows.
    async fn archive(self: &Arc<Self>, id: StepId) -> Result<Option<Stored>, ArchiveError> {
        let key = format::object_key(&self.settings.key_prefix, id);
        let conditional = match self.store.conditional_writes().await {
            Ok(answer) => answer == ConditionalWrites::Honoured,
            Err(source) => return Err(self.upload_error(&key, source)),
        };
        let mut round = 1;
        let (built, info) = loop {
            match self.merge_round(id, &key, conditional).await {
                Err(ArchiveError::Upload { source, .. })
                    if source.is_precondition_failed() && round < MERGE_ROUNDS =>
                {
                    round += 1;
                }
                Err(ArchiveError::Upload { source, .. }) if source.is_precondition_failed() => {
                    return Err(ArchiveError::Contended {
                        key,
                        store: self.store.describe(),
                        rounds: round,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(done)) => break done,
                Err(e) => return Err(e),
            }
        };
        let Built {
            file,
            size,
            summary,
            lines,
            rows_from,
        } = built;
        blocking(move || drop(file)).await;
        verify(&info, size, &summary).map_err(|source| ArchiveError::Verify {
            key: key.clone(),
            store: self.store.describe(),
            source,
        })?;
        self.steps.object_stored(id);
        self.counters
            .archive_uploads
            .fetch_add(1, Ordering::Relaxed);
        let rows_deleted = self
            .table
            .delete_lines(id, &lines)
            .await
            .map_err(|source| ArchiveError::DeleteRows {
                id,
                table: self.table.describe(),
                source,
            })?;
        self.counters
            .rows_deleted
            .fetch_add(rows_deleted, Ordering::Relaxed);
        self.held.archived(id, &lines);
        Ok(Some(Stored {
            key,
            summary,
            size,
            rows_deleted,
            rows_from,
        }))
    }

    fn upload_error(&self, key: &str, source: StoreError) -> ArchiveError {
        ArchiveError::Upload {
            key: key.to_owned(),
            store: self.store.describe(),
            source,
        }
    }

    /// Reads the previous object, builds it merged with the step's rows, and stores it,
    /// conditional on the version read. `None` when the step has no rows.
    async fn merge_round(
        self: &Arc<Self>,
        id: StepId,
        key: &str,
        conditional: bool,
    ) -> Result<Option<(Built, archive::ObjectInfo)>, ArchiveError> {
        let previous = self
            .store
            .get(key)
            .await
            .map_err(|source| ArchiveError::ReadPrevious {
                key: key.to_owned(),
                store: self.store.describe(),
                source,
            })?;
        let condition = match &previous {
            Some((_, info)) => {
                self.steps.with(id, |state| state.missing_since = None);
                conditional
                    .then(|| info.etag.clone().map(WriteCondition::Matches))
                    .flatten()
            }
            None => {
                let now = self.clock.now();
                let believed = self
                    .steps
                    .with(id, |state| {
                        if !state.archived_here {
                            return true;
                        }
                        let since = *state.missing_since.get_or_insert(now);
                        now.saturating_duration_since(since) >= MISSING_PATIENCE
                    })
                    .unwrap_or(true);
                if !believed {
                    return Err(ArchiveError::MissingPrevious {
                        key: key.to_owned(),
                        store: self.store.describe(),
                    });
                }
                conditional.then_some(WriteCondition::Absent)
            }
        };
        let Some(built) = self
            .build(id, key, previous.map(|(bytes, _)| bytes))
            .await?
        else {
            return Ok(None);
        };
        let meta = built.summary.to_meta(id);
        let info = self
            .store
            .put_file_if(key, built.file.path(), &meta, condition.as_ref())
            .await
            .map_err(|source| self.upload_error(key, source))?;
        Ok(Some((built, info)))
    }

    /// Streams the step's rows into a build on a blocking thread (at idle priority); the
    /// memory held is one page of rows, the sort budget and the previous object. The rows
    /// come from the copy this process held of them when it has one (see `held.rs`), else
    /// from the table.
    async fn build(
        self: &Arc<Self>,
        id: StepId,
        key: &str,
        previous: Option<Vec<u8>>,
    ) -> Result<Option<Built>, ArchiveError> {
        let (tx, mut rx) = mpsc::channel::<Vec<LogEntry>>(2);
        let scratch = self.scratch.clone();
        let level = self.settings.compression_level;
        let sort_budget = self.settings.sort_budget_bytes;
        let held = self.held.snapshot(id);
        let rows_from = if held.is_some() { "memory" } else { "table" };
        let builder = async move {
            at_idle_priority("table-archive-build", move || {
                build_from(
                    previous.as_deref(),
                    &scratch,
                    sort_budget,
                    level,
                    rows_from,
                    &mut rx,
                )
            })
            .await
            .and_then(|built| built)
        };
        let feed = async {
            if let Some(held) = held {
                self.counters
                    .runs_from_memory
                    .fetch_add(1, Ordering::Relaxed);
                let mut held = held.into_iter();
                loop {
                    let batch: Vec<LogEntry> = held.by_ref().take(BUILD_BATCH).collect();
                    if batch.is_empty() || tx.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let mut rows = self.table.read_in_background(id);
            let mut batch = Vec::with_capacity(BUILD_BATCH);
            while let Some(entry) = rows.next().await {
                batch.push(entry.map_err(|source| ArchiveError::ReadRows {
                    id,
                    table: self.table.describe(),
                    source,
                })?);
                if batch.len() == BUILD_BATCH
                    && tx
                        .send(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(BUILD_BATCH),
                        ))
                        .await
                        .is_err()
                {
                    // The build failed; its error is the one to report.
                    return Ok(());
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
            drop(tx);
            Ok::<(), ArchiveError>(())
        };
        let (fed, built) = tokio::join!(feed, builder);
        // Rows that could not be read leave the build short: that error comes first.
        fed?;
        built.map_err(|source| ArchiveError::Build {
            key: key.to_owned(),
            source,
        })
    }
}

/// The build itself: every entry received, merged into `previous` (which wins per line).
/// `None` when no row came (the previous object needs no rewrite).
fn build_from(
    previous: Option<&[u8]>,
    scratch: &std::path::Path,
    sort_budget: usize,
    level: i32,
    rows_from: &'static str,
    rows: &mut mpsc::Receiver<Vec<LogEntry>>,
) -> std::io::Result<Option<Built>> {
    std::fs::create_dir_all(scratch)?;
    let mut builder = ObjectBuilder::new(previous, scratch, sort_budget)?;
    let mut lines = LineRanges::new();
    while let Some(batch) = rows.blocking_recv() {
        for entry in &batch {
            lines.insert(entry.line);
            builder.push(entry)?;
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let file = tempfile::NamedTempFile::new_in(scratch)?;
    let Some((out, summary)) = builder.finish(BufWriter::new(file), level)? else {
        return Ok(None);
    };
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    let size = file.as_file().metadata()?.len();
    Ok(Some(Built {
        file,
        size,
        summary,
        lines,
        rows_from,
    }))
}
