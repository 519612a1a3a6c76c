//! Staging in a database table (`WOODPECKER_LOG_STORE_S3_STAGING=database`): running steps'
//! lines live in rows (Woodpecker's own `log_entries`, see the `woodpecker-db` crate) instead
//! of the spool, so the server needs no persistent volume.
//!
//! [`TableEngine`] is Woodpecker's `LogService` over a [`TableStaging`] and an archive
//! [`archive::ObjectStore`], with the spool engine's guarantees: an append is acknowledged
//! once its rows are committed; a step is archived after `StepFinished` + finalize delay or
//! after the idle timeout; late lines are merged into the object again; reads merge object
//! and rows by line, first write winning; rows are deleted only after their object is
//! verified, and only the lines it holds.
//!
//! Nothing is kept on local disk: an archive build spills only past the sort budget and its
//! output goes to an unlinked-on-drop temporary file in a scratch directory (removed after
//! each upload). Whatever a killed addon left is found again in the table: start-up and a
//! periodic sweep list the steps with rows ([`TableStaging::staged_steps`]).
//!
//! Where things are: `mod.rs` (the trait and the handle), `steps.rs` (per-step state and
//! what is due), `run.rs` (one archive run), `find.rs` (LogFind), `since.rs` (which rows
//! are staging's, as opposed to the database store's history), `switch.rs` (moving lines
//! between the spool and the table when the mode changes), `lines.rs` ([`LineRanges`]).

mod find;
mod held;
mod lines;
mod run;
mod since;
mod steps;
mod switch;

use std::error::Error;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use archive::ObjectStore;
use futures_core::Stream;
use logservice::{LogEntry, LogError, LogService, Step, StepId};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use find::read_table_step_log;
pub(crate) use find::rows_as_staged;
pub use lines::LineRanges;
pub use since::{SINCE_MARKER_NAME, read_since_marker, since_marker_key};
pub use switch::{Moved, drain_table, import_spool, spool_holds_lines};

use crate::backoff::Backoff;
use crate::budget::ReadBudget;
use crate::clock::Clock;
use crate::legacy::LegacySources;
use crate::settings::EngineSettings;
use crate::shared::storage;
use steps::StepBook;

/// A step that has rows staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedStep {
    /// The step.
    pub step_id: i64,
    /// Its rows.
    pub rows: i64,
    /// The largest row id (grows with every append that added rows).
    pub max_id: i64,
    /// The newest row's insertion time (unix seconds): the idle signal after a restart.
    pub last_created: i64,
}

/// A failed table operation; its text names the step, the operation and the database.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct TableError {
    unavailable: bool,
    source: Box<dyn Error + Send + Sync>,
}

impl TableError {
    /// An error; `unavailable` when the database could not be reached (retry later).
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>, unavailable: bool) -> Self {
        Self {
            unavailable,
            source: source.into(),
        }
    }

    /// Whether the database could not be reached, as opposed to refusing the operation.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// A step's staged entries by ascending line, one per line (its first write), fetched in
/// bounded pages.
pub type EntryStream<'a> = Pin<Box<dyn Stream<Item = Result<LogEntry, TableError>> + Send + 'a>>;

/// Where running steps' lines are staged: a database table, one row per line.
#[async_trait::async_trait]
pub trait TableStaging: Send + Sync + 'static {
    /// The table and database, for messages (no password).
    fn describe(&self) -> String;

    /// Stores `entries` (lines the step already has are skipped: the first write wins);
    /// committed before it returns. Returns the rows added.
    async fn append(&self, step: StepId, entries: &[LogEntry]) -> Result<u64, TableError>;

    /// The step's staged entries, as [`EntryStream`] says.
    fn read(&self, step: StepId) -> EntryStream<'_>;

    /// [`TableStaging::read`] for background work nobody waits on (archive runs, moves to
    /// the spool): the table may let appends go first. The same read by default.
    fn read_in_background(&self, step: StepId) -> EntryStream<'_> {
        self.read(step)
    }

    /// Up to `limit` steps with rows, by ascending id above `after`.
    async fn staged_steps(&self, after: i64, limit: usize) -> Result<Vec<StagedStep>, TableError>;

    /// Deletes the step's rows of the `lines` a verified archive holds (paced, so that
    /// appends get the table in between); rows of other lines stay. Returns the rows.
    async fn delete_lines(&self, step: StepId, lines: &LineRanges) -> Result<u64, TableError>;

    /// Deletes all of the step's rows (`LogDelete`). Returns the rows.
    async fn delete_step(&self, step: StepId) -> Result<u64, TableError>;
}

/// The store engine with database staging. Cheap to share behind an `Arc`; call
/// [`TableEngine::shutdown_within`] for a clean stop (dropping it stops the background work).
pub struct TableEngine {
    inner: Arc<Inner>,
    stop: watch::Sender<Option<Duration>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the calls and the background loop share.
struct Inner {
    settings: EngineSettings,
    store: Arc<dyn ObjectStore>,
    table: Arc<dyn TableStaging>,
    steps: StepBook,
    /// What this process staged for running steps, for archive runs.
    held: held::HeldLines,
    /// Upload slots: `archive_concurrency` runs at once.
    permits: Arc<Semaphore>,
    read_budget: ReadBudget,
    backoff: Backoff,
    clock: Clock,
    /// Where builds write their object before the upload (files removed after each one).
    scratch: PathBuf,
    /// Since when (unix seconds) rows belong to staging; rows older than that are the
    /// database store's history (read through, archived by `migrate`, never swept).
    since: tokio::sync::OnceCell<i64>,
    /// When this engine started (unix seconds): the time a marker it writes records, so
    /// that rows it acknowledged before the store first answered count as staging's.
    started: i64,
    legacy: OnceLock<LegacySources>,
    /// A spool left by spool staging whose lines are being moved into the table: reads
    /// merge it until the move is done ([`TableEngine::read_spool_too`]).
    spool_left: Mutex<Option<PathBuf>>,
    /// Held by a step's move from the spool and by LogDelete while one is under way, so
    /// that a deleted step's lines are not moved back in.
    moving: tokio::sync::Mutex<()>,
    counters: TableCounters,
}

/// What operators and tests are told.
#[derive(Default)]
struct TableCounters {
    appends: AtomicU64,
    archive_uploads: AtomicU64,
    archive_failures: AtomicU64,
    rows_deleted: AtomicU64,
    runs_from_memory: AtomicU64,
}

/// Counters of a [`TableEngine`] since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Acknowledged appends.
    pub appends: u64,
    /// Objects stored.
    pub archive_uploads: u64,
    /// Archive runs that failed (and are retried).
    pub archive_failures: u64,
    /// Rows deleted after their object was verified.
    pub rows_deleted: u64,
    /// Objects built from the lines this process held in memory, without reading the rows.
    pub runs_from_memory: u64,
    /// Bytes of lines held in memory for archive runs.
    pub held_bytes: u64,
    /// Steps with staged lines not yet in a verified object, as far as this process knows.
    pub pending_steps: u64,
}

impl TableEngine {
    /// Starts the archive scheduler (and the sweep that finds steps a previous run left in
    /// the table). `scratch` is where builds write their object before uploading it. Needs a
    /// Tokio runtime; contacts neither the database nor the store before returning.
    pub fn start(
        settings: EngineSettings,
        store: Arc<dyn ObjectStore>,
        table: Arc<dyn TableStaging>,
        scratch: PathBuf,
        clock: Clock,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(None);
        let passes = clock.passes(
            (settings.finalize_delay.min(settings.idle_timeout) / 4)
                .clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.archive_concurrency.max(1))),
            read_budget: ReadBudget::new(settings.read_memory),
            backoff: Backoff::new(settings.retry_initial, settings.retry_max),
            held: held::HeldLines::new(settings.staged_copy_bytes),
            settings,
            store,
            table,
            steps: StepBook::default(),
            clock,
            scratch,
            since: tokio::sync::OnceCell::new(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            legacy: OnceLock::new(),
            spool_left: Mutex::new(None),
            moving: tokio::sync::Mutex::new(()),
            counters: TableCounters::default(),
        });
        let scheduler = tokio::spawn(inner.clone().scheduler_loop(passes, stop_rx));
        Self {
            inner,
            stop,
            tasks: Mutex::new(vec![scheduler]),
        }
    }

    /// Logs from before the switch that are not in the table (Woodpecker's file store),
    /// read through and deleted with the rest. Set once; later calls are ignored.
    pub fn set_legacy(&self, sources: LegacySources) {
        let _ = self.inner.legacy.set(sources);
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Moves the lines the spool configured at `dir` holds into the table (see
    /// [`import_spool`]), one step at a time under the lock LogDelete takes while reads
    /// merge the spool ([`TableEngine::read_spool_too`]).
    pub async fn import_spool(&self, dir: &std::path::Path) -> Result<Moved, std::io::Error> {
        switch::import_spool_with(dir, &*self.inner.table, Some(&self.inner.moving)).await
    }

    /// While the lines a spool holds are moved into the table (see [`import_spool`]),
    /// reads merge the step's spool segments in the spool configured at `dir` too (`Some`);
    /// `None` when the move is done.
    pub fn read_spool_too(&self, dir: Option<PathBuf>) {
        *self
            .inner
            .spool_left
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = dir;
    }

    /// Counters since the start.
    pub fn stats(&self) -> TableStats {
        let c = &self.inner.counters;
        TableStats {
            appends: c.appends.load(Ordering::Relaxed),
            archive_uploads: c.archive_uploads.load(Ordering::Relaxed),
            archive_failures: c.archive_failures.load(Ordering::Relaxed),
            rows_deleted: c.rows_deleted.load(Ordering::Relaxed),
            runs_from_memory: c.runs_from_memory.load(Ordering::Relaxed),
            held_bytes: self.inner.held.bytes(),
            pending_steps: self.inner.steps.pending(),
        }
    }

    /// Stops archiving: runs under way get `grace` to finish, the rest is abandoned (its
    /// rows stay in the table and are archived after the next start).
    pub async fn shutdown_within(&self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for TableEngine {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            task.abort();
        }
    }
}

impl LogService for TableEngine {
    async fn log_find(&self, step: &Step) -> Result<Vec<LogEntry>, LogError> {
        let json = self.log_find_json(step).await?;
        serde_json::from_slice(&json).map_err(|e| storage(format!("decoding the log: {e}")))
    }

    async fn log_find_json(&self, step: &Step) -> Result<Vec<u8>, LogError> {
        let id = StepId::of(step)?;
        self.inner.find(id).await
    }

    async fn log_append(&self, step: &Step, entries: Vec<LogEntry>) -> Result<(), LogError> {
        let id = StepId::of(step)?;
        if entries.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let saw_first_line = entries.iter().any(|entry| entry.line == 0);
        // Only a first batch may start a copy: the step book is not asked on every append.
        let may_hold = saw_first_line && !inner.steps.archived_here(id);
        inner.held.begin(id, &entries, may_hold);
        let appended = inner.table.append(id, &entries).await;
        inner
            .held
            .end(id, &entries, appended.as_ref().ok().copied());
        appended.map_err(|e| {
            storage(format!(
                "cannot stage {} log lines of step {id} in {}: {e}",
                entries.len(),
                inner.table.describe()
            ))
        })?;
        inner.counters.appends.fetch_add(1, Ordering::Relaxed);
        inner.steps.appended(id, inner.clock.now(), saw_first_line);
        Ok(())
    }

    async fn log_delete(&self, step: &Step) -> Result<(), LogError> {
        let id = StepId::of(step)?;
        self.inner.delete(id).await
    }

    async fn step_finished(&self, step: &Step) {
        if let Ok(id) = StepId::of(step) {
            self.inner.steps.finished(id, self.inner.clock.now());
        }
    }
}

impl Inner {
    /// LogDelete: the object, the rows and any legacy copy; waits for an archive run of the
    /// step under way, so that it cannot store the step again afterwards.
    async fn delete(self: &Arc<Self>, id: StepId) -> Result<(), LogError> {
        let lock = self.steps.run_lock(id);
        let _exclusive = lock.lock().await;
        let spool_left = self
            .spool_left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _moving = match &spool_left {
            Some(_) => Some(self.moving.lock().await),
            None => None,
        };
        if let Some(dir) = spool_left {
            crate::threads::blocking(move || {
                for path in crate::spool::list_segments(&dir, id)? {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| storage(format!("cannot delete the spooled log of step {id}: {e}")))?;
        }
        // First: a run after a delete that failed half-way must read what is left in the
        // table, not bring the deleted lines back from memory.
        self.held.forget(id);
        let key = crate::format::object_key(&self.settings.key_prefix, id);
        self.store.delete(&key).await.map_err(|e| {
            storage(format!(
                "cannot delete the archived log of step {id} ({key} in {}): {e}",
                self.store.describe()
            ))
        })?;
        self.table.delete_step(id).await.map_err(|e| {
            storage(format!(
                "cannot delete the staged log of step {id} from {}: {e}",
                self.table.describe()
            ))
        })?;
        if let Some(legacy) = self.legacy.get() {
            legacy
                .delete(id)
                .await
                .map_err(|e| storage(e.to_string()))?;
        }
        self.steps.forget(id);
        Ok(())
    }
}
