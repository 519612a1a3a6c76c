//! [`Engine`]: Woodpecker's `LogService` over the spool and an archive [`ObjectStore`]; its
//! start and stop, the write side (append, StepFinished, delete) and the spool's background
//! sync.
//!
//! Appends only touch the local spool, so the network never delays or fails them; archiving
//! (see `archiver.rs`) and reads (see `read.rs`) are elsewhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use archive::ObjectStore;
use logservice::{EntryRecords, LogEntry, LogError, LogService, Step, StepId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::format;
use crate::legacy::LegacySources;
use crate::open::{Opener, Phase};
use crate::settings::{EngineSettings, SyncMode};
use crate::shared::{Shared, storage};
use crate::spool::{Spool, SpoolDirError};
use crate::step::lock;
use crate::threads::{Background, blocking};

/// The store engine. Cheap to share behind an `Arc`; call [`Engine::shutdown`] for a clean
/// stop (dropping it stops the background work too, without the final fsync).
///
/// The spool opens in the background (see `open.rs`): calls made before it is open wait
/// for it; [`Engine::ready`] and [`Engine::recovered`] tell when it is.
pub struct Engine {
    settings: EngineSettings,
    store: Arc<dyn ObjectStore>,
    /// The spool's directory, chosen and checked at start.
    root: PathBuf,
    phase: watch::Receiver<Phase>,
    background: Background,
    stop: watch::Sender<Option<Duration>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The spool's lock once the opening task took it; released when the engine goes (the
    /// opening task, which shares it, may end a little later).
    spool_lock: Arc<Mutex<Option<File>>>,
    /// Logs from before the switch; shared with the engine's state once the spool is open.
    legacy: Arc<OnceLock<LegacySources>>,
    /// Rows of database staging being moved into the spool; shared with the engine's state.
    pub(crate) draining: crate::shared::Draining,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool could not be opened or recovered (or another process uses it).
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    /// The configured spool directory is not one the spool may use.
    #[error(transparent)]
    SpoolDir(#[from] SpoolDirError),
    /// The engine stopped before its spool was open.
    #[error("the log store engine stopped before its spool was open")]
    Stopped,
    /// The thread that runs archiving could not be started.
    #[error("cannot start the archive thread: {0}")]
    Background(std::io::Error),
}

/// The largest batch appended on the calling thread instead of a blocking one: paced agent
/// batches (tens of KiB) skip two thread hand-offs, while a full 1 MiB batch is written on
/// a blocking thread so the caller's thread reads the next request meanwhile.
const INLINE_APPEND: usize = 256 << 10;

impl Engine {
    /// Checks the spool directory, then opens the spool in the background (recovering what
    /// a previous run left) and starts the background sync and the archive scheduler. Returns
    /// without waiting for the spool: see [`Engine::ready`]. Needs a Tokio runtime. The store
    /// is not contacted.
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
        let configured = settings.spool_dir.clone();
        let root = blocking(move || Spool::prepare(&configured)).await?;
        let background = Background::start().map_err(StartError::Background)?;
        let (stop, stop_rx) = watch::channel(None);
        let (phase_tx, phase) = watch::channel(Phase::Opening);
        let spool_lock = Arc::new(Mutex::new(None));
        let legacy = Arc::new(OnceLock::new());
        let draining = crate::shared::Draining::default();
        // On the real clock, a pass every quarter of the shorter timer (10 to 250 ms), so a
        // step is archived soon after it is due.
        let passes = clock.passes(
            (settings.finalize_delay.min(settings.idle_timeout) / 4)
                .clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        let opener = Opener {
            settings: settings.clone(),
            store: store.clone(),
            clock,
            passes,
            root: root.clone(),
            phase: phase_tx,
            stop: stop_rx,
            lock: spool_lock.clone(),
            legacy: legacy.clone(),
            draining: draining.clone(),
        };
        let tasks = vec![background.handle().spawn(opener.run())];
        Ok(Self {
            settings,
            store,
            root,
            phase,
            legacy,
            draining,
            background,
            stop,
            tasks: Mutex::new(tasks),
            spool_lock,
        })
    }

    /// Waits until the spool is open and calls are served: the lock taken and the spool
    /// listed, which does not depend on its size. Fails when the spool cannot be used (held
    /// by another process, unreadable), as every call then does.
    pub async fn ready(&self) -> Result<(), Arc<StartError>> {
        self.wait_for(|phase| !matches!(phase, Phase::Opening))
            .await
            .map(drop)
    }

    /// Waits until every step found in the spool at start is checked for a torn tail too.
    pub async fn recovered(&self) -> Result<(), Arc<StartError>> {
        self.wait_for(|phase| matches!(phase, Phase::Recovered(_) | Phase::Failed(_)))
            .await
            .map(drop)
    }

    /// Waits for a phase that `done` accepts; the engine's state, or why there is none.
    async fn wait_for(
        &self,
        done: impl FnMut(&Phase) -> bool,
    ) -> Result<Arc<Shared>, Arc<StartError>> {
        let mut phase = self.phase.clone();
        let phase = match phase.wait_for(done).await {
            Ok(phase) => phase.clone(),
            Err(_) => return Err(Arc::new(StartError::Stopped)),
        };
        match phase {
            Phase::Open(inner) | Phase::Recovered(inner) => Ok(inner),
            Phase::Failed(e) => Err(e),
            Phase::Opening => Err(Arc::new(StartError::Stopped)),
        }
    }

    /// The engine's state for a call, once the spool is open.
    async fn inner(&self) -> Result<Arc<Shared>, LogError> {
        self.wait_for(|phase| !matches!(phase, Phase::Opening))
            .await
            .map_err(|e| storage(format!("the log store cannot work: {e}")))
    }

    /// The engine's state if the spool is open now.
    fn inner_now(&self) -> Option<Arc<Shared>> {
        match &*self.phase.borrow() {
            Phase::Open(inner) | Phase::Recovered(inner) => Some(inner.clone()),
            Phase::Opening | Phase::Failed(_) => None,
        }
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
        self.legacy.set(legacy).is_ok()
    }

    /// While the rows a run with database staging left are moved into the spool (see
    /// [`crate::table::drain_table`]), reads merge a step's rows too (`Some`); `None` when
    /// the move is done.
    pub fn read_table_too(&self, table: Option<Arc<dyn crate::table::TableStaging>>) {
        self.draining.set(table);
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The archive.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The spool directory in use, for messages to people.
    pub fn spool_dir(&self) -> &Path {
        &self.root
    }

    /// The archive key of a step (see FORMAT.md).
    pub fn object_key(&self, id: StepId) -> String {
        format::object_key(&self.settings.key_prefix, id)
    }

    /// The counters so far, and the steps, the spool and the archive queue now (all zero
    /// until the spool is open).
    pub fn stats(&self) -> crate::EngineStats {
        self.inner_now()
            .map_or_else(Default::default, |inner| crate::stats::snapshot(&inner))
    }

    /// Flushes every appended line to disk now (nothing to do before the spool is open).
    pub async fn flush(&self) -> Result<(), LogError> {
        let Some(inner) = self.inner_now() else {
            return Ok(());
        };
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
        drop(lock(&self.spool_lock).take());
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
                let error = match e.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        spool_full(self.spool.root(), &e)
                    }
                    _ => e.to_string(),
                };
                tracing::error!(step = %id, error, "cannot stage log lines: they are lost");
                storage(format!("cannot stage log lines of step {id}: {error}"))
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
        // Rows of database staging being moved in: not while this step's are, or they
        // would come back after the delete (the legacy source deletes the rows).
        let _moving = match self.draining.table() {
            Some(_) => Some(self.draining.moving.lock().await),
            None => None,
        };
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
        if let Some(slot) = &slot {
            let segments = self.steps.remove(id, slot, self.clock.now());
            let inner = self.clone();
            blocking(move || {
                #[cfg(test)]
                crate::interleavings::reached(&format!(
                    "delete {id} in {}",
                    inner.spool.root().display()
                ));
                inner.spool.remove(id, segments)
            })
            .await
            .map_err(|e| storage(format!("cannot delete the staged log of step {id}: {e}")))?;
        }
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

/// What an admin reads when the spool's file system is full: where, and what to do.
fn spool_full(root: &std::path::Path, e: &std::io::Error) -> String {
    format!(
        "{e}: the spool directory {root} is full: free space on its file system or give {var} \
         more room; appends work again by themselves as soon as archived steps leave the spool \
         (if it stays full, archiving is failing: see the warnings)",
        root = root.display(),
        var = crate::settings::SPOOL_DIR.name,
    )
}

/// Flushes the spool every `sync_interval` and keeps the file pool filled, until `stop`.
pub(crate) async fn sync_loop(inner: Arc<Shared>, mut stop: watch::Receiver<Option<Duration>>) {
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
        let id = StepId::of(step)?;
        let inner = self.inner().await?;
        inner.counters.finds.fetch_add(1, Ordering::Relaxed);
        inner.find(id).await
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
        let inner = self.inner().await?;
        // A small batch is one write() into the page cache, a few microseconds: done here, it
        // spares the call two thread hand-offs, which on a busy machine are what makes an
        // append slow. fsync and large batches go to a blocking thread.
        if inner.settings.sync != SyncMode::Always && records.as_ndjson().len() <= INLINE_APPEND {
            return inner.append(id, records.as_ndjson(), records.len());
        }
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
        let id = StepId::of(step)?;
        let inner = self.inner().await?;
        inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
        inner.delete(id).await
    }

    async fn step_finished(&self, step: &Step) {
        let id = match StepId::of(step) {
            Ok(id) => id,
            Err(e) => return tracing::warn!(error = %e, "ignoring StepFinished"),
        };
        match self.inner().await {
            Ok(inner) => blocking(move || inner.finished(id)).await,
            Err(e) => tracing::warn!(step = %id, error = %e, "ignoring StepFinished"),
        }
    }
}
