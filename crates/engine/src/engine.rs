//! [`Engine`]: Woodpecker's `LogService` over the spool and an archive [`ObjectStore`]; its
//! start and stop, the write side (append, StepFinished, delete) and the spool's background
//! sync.
//!
//! Appends only touch the local spool, so the network never delays or fails them; archiving
//! (see `archiver.rs`) and reads (see `read.rs`) are elsewhere.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use archive::ObjectStore;
use logservice::{EntryRecords, LogEntry, LogError, LogService, Step, StepId};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::archiver::scheduler_loop;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::format;
use crate::legacy::LegacySources;
use crate::settings::{EngineSettings, SyncMode};
use crate::shared::{Counters, Shared, storage};
use crate::spool::Spool;
use crate::step::{StepState, Steps, lock};
use crate::threads::{Background, blocking};

/// The store engine. Cheap to share behind an `Arc`; call [`Engine::shutdown`] for a clean
/// stop (dropping it stops the background work too, without the final fsync).
pub struct Engine {
    inner: Arc<Shared>,
    background: Background,
    stop: watch::Sender<Option<Duration>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The spool's lock, released when the engine goes.
    _lock: File,
}

/// Counters for operators and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// LogAppend calls that stored lines.
    pub appends: u64,
    /// Log entries those calls stored.
    pub entries_appended: u64,
    /// Bytes written to spool files.
    pub spool_bytes_written: u64,
    /// Spool files flushed to disk by the background sync.
    pub spool_syncs: u64,
    /// Archive objects stored.
    pub archive_uploads: u64,
    /// Compressed bytes of those objects.
    pub archive_bytes_uploaded: u64,
    /// Archive runs that failed (each is retried).
    pub archive_failures: u64,
    /// Steps the engine currently tracks (running, waiting for archiving, recently archived).
    pub steps_tracked: usize,
    /// Steps with lines in the spool that are not archived yet.
    pub steps_pending: usize,
    /// Spool files open right now.
    pub open_spool_files: usize,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool could not be opened or recovered (or another process uses it).
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    /// The thread that runs archiving could not be started.
    #[error("cannot start the archive thread: {0}")]
    Background(std::io::Error),
}

/// The largest batch appended on the calling thread instead of a blocking one: paced agent
/// batches (tens of KiB) skip two thread hand-offs, while a full 1 MiB batch is written on
/// a blocking thread so the caller's thread reads the next request meanwhile.
const INLINE_APPEND: usize = 256 << 10;

impl Engine {
    /// Opens the spool (recovering what a previous run left), and starts the background
    /// sync and the archive scheduler. Needs a Tokio runtime. The store is not contacted.
    pub async fn start(
        settings: EngineSettings,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, StartError> {
        Self::start_with_clock(settings, store, Clock::Real).await
    }

    /// [`Engine::start`] with the archive schedule on `clock`: a [`crate::ManualClock`] lets
    /// tests move time on and wait for the scheduler, instead of sleeping.
    pub async fn start_with_clock(
        settings: EngineSettings,
        store: Arc<dyn ObjectStore>,
        clock: Clock,
    ) -> Result<Self, StartError> {
        let root = settings.spool_dir.clone();
        let max_open = settings.max_open_files;
        let (spool, lock, recovered) = blocking(move || {
            let (spool, lock) = Spool::open(&root, max_open)?;
            let recovered = spool.recover()?;
            Ok::<_, std::io::Error>((spool, lock, recovered))
        })
        .await?;

        let now = clock.now();
        let mut steps = HashMap::new();
        let (mut finished, mut pending) = (0, 0);
        for (id, found) in recovered {
            pending += usize::from(!found.segments.is_empty());
            finished += usize::from(found.finished);
            let state = StepState::recovered(
                now,
                &found.segments,
                found.finished,
                settings.finalize_delay,
            );
            steps.insert(id, state);
        }
        tracing::info!(
            spool = %settings.spool_dir.display(),
            archive = %store.describe(),
            steps_pending = pending,
            steps_finished = finished,
            "log store engine started"
        );

        // On the real clock, a pass every quarter of the shorter timer (10 to 250 ms), so a
        // step is archived soon after it is due.
        let passes = clock.passes(
            (settings.finalize_delay.min(settings.idle_timeout) / 4)
                .clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        let inner = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(settings.archive_concurrency.max(1))),
            backoff: Backoff::new(settings.retry_initial, settings.retry_max),
            settings,
            store,
            spool,
            steps: Steps::new(steps),
            counters: Counters::default(),
            clock,
            legacy: OnceLock::new(),
        });
        let (stop, stop_rx) = watch::channel(None);
        let background = Background::start().map_err(StartError::Background)?;
        let tasks = vec![
            background
                .handle()
                .spawn(sync_loop(inner.clone(), stop_rx.clone())),
            background
                .handle()
                .spawn(scheduler_loop(inner.clone(), passes, stop_rx)),
        ];
        Ok(Self {
            inner,
            background,
            stop,
            tasks: Mutex::new(tasks),
            _lock: lock,
        })
    }

    /// The runtime archiving runs on, for other background work that talks to the archive
    /// (such as a start-up check of the bucket), so that it stays off the caller's threads.
    pub fn background(&self) -> &tokio::runtime::Handle {
        self.background.handle()
    }

    /// Adds the logs written before the switch: read through for steps with neither an
    /// archive object nor spooled lines, and removed by `LogDelete`. Set it before serving;
    /// it can be set once (`false` when it was set already).
    pub fn set_legacy(&self, legacy: LegacySources) -> bool {
        self.inner.legacy.set(legacy).is_ok()
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// The archive.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The spool directory in use, for messages to people.
    pub fn spool_dir(&self) -> &Path {
        self.inner.spool.root()
    }

    /// The archive key of a step (see FORMAT.md).
    pub fn object_key(&self, id: StepId) -> String {
        format::object_key(&self.inner.settings.key_prefix, id)
    }

    /// The counters so far, and the steps tracked now.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let (steps_tracked, steps_pending) = self.inner.steps.counts();
        EngineStats {
            appends: get(&c.appends),
            entries_appended: get(&c.entries_appended),
            spool_bytes_written: get(&c.spool_bytes_written),
            spool_syncs: get(&c.spool_syncs),
            archive_uploads: get(&c.archive_uploads),
            archive_bytes_uploaded: get(&c.archive_bytes_uploaded),
            archive_failures: get(&c.archive_failures),
            steps_tracked,
            steps_pending,
            open_spool_files: self.inner.spool.open_files(),
        }
    }

    /// Flushes every appended line to disk now.
    pub async fn flush(&self) -> Result<(), LogError> {
        let inner = self.inner.clone();
        blocking(move || inner.sync()).await
    }

    /// Stops archiving (an upload in flight is abandoned; its lines stay in the spool and
    /// are archived after the next start), then flushes the spool.
    pub async fn shutdown(self) -> Result<(), LogError> {
        self.shutdown_within(Duration::ZERO).await
    }

    /// Stops archiving gracefully: no new archive run starts, runs already under way get up
    /// to `grace` to finish, and what remains is abandoned (its lines stay in the spool and
    /// are archived after the next start); then flushes the spool. What SIGTERM does. Takes
    /// `&self` so it works while request handlers still hold the engine; appends after it
    /// still reach the spool but are not archived until the next start.
    pub async fn shutdown_within(&self, grace: Duration) -> Result<(), LogError> {
        let _ = self.stop.send(Some(grace));
        // Durable first: the wait for uploads below may outlast the caller's patience.
        self.flush().await?;
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        self.flush().await
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop.send(Some(Duration::ZERO));
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    /// Flushes what was appended since the last sync.
    fn sync(&self) -> Result<(), LogError> {
        let synced = self
            .spool
            .sync_pending()
            .map_err(|e| storage(format!("cannot flush the spool: {e}")))?;
        self.counters
            .spool_syncs
            .fetch_add(synced as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Appends a step's `records` (`entries` of them) to its spool segment.
    fn append(&self, id: StepId, records: &[u8], entries: usize) -> Result<(), LogError> {
        let sync = self.settings.sync == SyncMode::Always;
        self.steps
            .with_state(id, Some(&self.clock), |state| {
                let (segment, len) = state.tail();
                self.spool.append(id, segment, len, records, sync)?;
                state.appended(records.len() as u64, self.clock.now());
                Ok::<_, std::io::Error>(())
            })
            .expect("created on demand")
            .map_err(|e| {
                tracing::error!(step = %id, error = %e, "cannot stage log lines: they are lost");
                storage(format!("cannot stage log lines of step {id}: {e}"))
            })?;
        let c = &self.counters;
        c.appends.fetch_add(1, Ordering::Relaxed);
        c.entries_appended
            .fetch_add(entries as u64, Ordering::Relaxed);
        c.spool_bytes_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// StepFinished: the step is archived after the grace period rather than the idle timeout.
    fn finished(&self, id: StepId) {
        self.steps.with_state(id, Some(&self.clock), |state| {
            if state.finished(self.clock.now()) {
                // Only a hint for recovery: without it the step is archived after the idle
                // timeout instead of right after a restart.
                if let Err(e) = self.spool.mark_finished(id) {
                    tracing::warn!(step = %id, error = %e, "cannot mark step as finished in the spool");
                }
            }
        });
    }

    /// LogDelete: the archived object, the staged segments and the step's state.
    async fn delete(self: &Arc<Self>, id: StepId) -> Result<(), LogError> {
        let key = format::object_key(&self.settings.key_prefix, id);
        let slot = self.steps.get(id);
        // No archive run of this step can start or finish while we hold its lock, so none
        // can store the object again after we delete it.
        let _exclusive = match &slot {
            Some(slot) => Some(slot.archive.lock().await),
            None => None,
        };
        let deleted = self.store.delete(&key).await.map_err(|e| {
            storage(format!(
                "cannot delete the archived log of step {id} ({key} in {}): {e}",
                self.store.describe()
            ))
        });
        let inner = self.clone();
        let removed = slot.clone();
        blocking(move || {
            inner.steps.remove(id, removed.as_ref(), |segments| {
                inner.spool.remove(id, segments)
            })
        })
        .await
        .map_err(|e| storage(format!("cannot delete the staged log of step {id}: {e}")))?;
        // The legacy copy last: if it cannot be removed now, the host reports the error and
        // a retry finds nothing else left to delete.
        if let Some(legacy) = self.legacy.get() {
            legacy
                .delete(id)
                .await
                .map_err(|e| storage(format!("cannot delete the legacy log of step {id}: {e}")))?;
        }
        deleted
    }
}

/// Flushes the spool every `sync_interval` and keeps the file pool filled, until `stop`.
async fn sync_loop(inner: Arc<Shared>, mut stop: watch::Receiver<Option<Duration>>) {
    let mut tick = tokio::time::interval(inner.settings.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let worker = inner.clone();
        blocking(move || {
            if let Err(e) = worker.sync() {
                tracing::error!(error = %e, "spool fsync failed");
            }
            if let Err(e) = worker.spool.pool().refill() {
                tracing::warn!(error = %e, "cannot prepare empty spool files");
            }
        })
        .await;
    }
}

impl LogService for Engine {
    async fn log_find(&self, step: &Step) -> Result<Vec<LogEntry>, LogError> {
        let json = self.log_find_json(step).await?;
        serde_json::from_slice(&json).map_err(|e| storage(format!("decoding the log: {e}")))
    }

    async fn log_find_json(&self, step: &Step) -> Result<Vec<u8>, LogError> {
        self.inner.find(StepId::of(step)?).await
    }

    async fn log_append(&self, step: &Step, entries: Vec<LogEntry>) -> Result<(), LogError> {
        self.log_append_records(step, EntryRecords::from_entries(&entries))
            .await
    }

    /// The records go to the spool as the host wrote them (see [`EntryRecords`]).
    async fn log_append_records(&self, step: &Step, records: EntryRecords) -> Result<(), LogError> {
        let id = StepId::of(step)?;
        if records.is_empty() {
            return Ok(());
        }
        // A small batch is one write() into the page cache, a few microseconds: done here, it
        // spares the call two thread hand-offs, which on a busy machine are what makes an
        // append slow. fsync and large batches go to a blocking thread.
        if self.inner.settings.sync != SyncMode::Always
            && records.as_ndjson().len() <= INLINE_APPEND
        {
            return self.inner.append(id, records.as_ndjson(), records.len());
        }
        let inner = self.inner.clone();
        blocking(move || {
            if records.as_ndjson().len() <= format::MAX_RECORD_BYTES {
                return inner.append(id, records.as_ndjson(), records.len());
            }
            // Readers refuse records this large (a bound against corrupt files), so one
            // could never be read back: keep the rest of the batch, report these.
            let mut kept = Vec::with_capacity(records.as_ndjson().len());
            let mut oversized = Vec::new();
            for record in records.iter() {
                if record.len() < format::MAX_RECORD_BYTES {
                    kept.extend_from_slice(record);
                    kept.push(b'\n');
                } else {
                    oversized.push(logservice::canonical_line(record).unwrap_or_default());
                }
            }
            if !kept.is_empty() {
                inner.append(id, &kept, records.len() - oversized.len())?;
            }
            Err(storage(format!(
                "step {id}: dropped line(s) {oversized:?}: a log entry may be at most {} MiB",
                format::MAX_RECORD_BYTES >> 20
            )))
        })
        .await
    }

    async fn log_delete(&self, step: &Step) -> Result<(), LogError> {
        self.inner.delete(StepId::of(step)?).await
    }

    async fn step_finished(&self, step: &Step) {
        match StepId::of(step) {
            Ok(id) => {
                let inner = self.inner.clone();
                blocking(move || inner.finished(id)).await;
            }
            Err(e) => tracing::warn!(error = %e, "ignoring StepFinished"),
        }
    }
}
