//! [`Engine`]: Woodpecker's `LogService` over the spool and an archive [`ObjectStore`].
//!
//! Appends only touch the local spool, so the network never delays or fails them. A
//! scheduler archives a step when it is due (StepFinished + grace period, or idle), one
//! upload per step at a time and a bounded number overall; a failed upload is retried with
//! backoff while the spool keeps the lines and reads merge object + spool.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use archive::{ObjectInfo, ObjectStore, StoreError};
use logservice::{EntryRecords, LogEntry, LogError, LogService, Step, StepId};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::build::build;
use crate::format::{self, Summary};
use crate::read::{Staged, log_json};
use crate::settings::{EngineSettings, SyncMode};
use crate::spool::Spool;

/// The store engine. Cheap to share behind an `Arc`; call [`Engine::shutdown`] for a clean
/// stop (dropping it stops the background work too, without the final fsync).
pub struct Engine {
    inner: Arc<Inner>,
    background: Background,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The spool's lock, released when the engine goes.
    _lock: File,
}

/// The engine's own Tokio runtime, on a thread of its own, where archiving and the spool's
/// housekeeping run: uploads (the S3 client's signing, HTTP and XML work) then never take the
/// thread that answers the host's calls, which keeps LogAppend fast while archives upload.
struct Background {
    handle: tokio::runtime::Handle,
    /// Dropped with the engine: the thread then stops its runtime, abandoning what runs.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Background {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("archive-blocking")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("archive".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

/// Counters for operators and the benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub appends: u64,
    pub entries_appended: u64,
    pub spool_bytes_written: u64,
    /// Spool files flushed to disk by the background sync.
    pub spool_syncs: u64,
    pub archive_uploads: u64,
    pub archive_bytes_uploaded: u64,
    pub archive_failures: u64,
    /// Steps the engine currently tracks (running, waiting for archiving, recently archived).
    pub steps_tracked: usize,
    /// Steps with lines in the spool that are not archived yet.
    pub steps_pending: usize,
    pub open_spool_files: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("cannot start the archive thread: {0}")]
    Background(std::io::Error),
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    entries_appended: AtomicU64,
    spool_bytes_written: AtomicU64,
    spool_syncs: AtomicU64,
    archive_uploads: AtomicU64,
    archive_bytes_uploaded: AtomicU64,
    archive_failures: AtomicU64,
}

struct Inner {
    settings: EngineSettings,
    store: Arc<dyn ObjectStore>,
    spool: Spool,
    steps: Mutex<HashMap<StepId, Arc<Slot>>>,
    permits: Arc<Semaphore>,
    counters: Counters,
}

/// One step's small in-memory state; never any of its lines.
struct Slot {
    state: Mutex<StepState>,
    /// Held by an archive run and by LogDelete: one of them at a time per step.
    archive: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct StepState {
    /// The slot left the map (deleted or forgotten): look the step up again.
    removed: bool,
    /// Segments `first_segment..segment` are sealed; `segment` takes appends.
    first_segment: u32,
    segment: u32,
    /// Acknowledged bytes in `segment`.
    segment_len: u64,
    last_append: Instant,
    finished_at: Option<Instant>,
    archived_at: Option<Instant>,
    /// An archive object of this step may exist (we stored one, or the step predates this
    /// start). While false, the spool holds the whole log.
    maybe_archived: bool,
    archiving: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Wait,
    Archive,
    Forget,
}

impl StepState {
    fn new(now: Instant) -> Self {
        Self {
            removed: false,
            first_segment: 0,
            segment: 0,
            segment_len: 0,
            last_append: now,
            finished_at: None,
            archived_at: None,
            maybe_archived: false,
            archiving: false,
            failures: 0,
            retry_at: None,
        }
    }

    fn has_data(&self) -> bool {
        self.first_segment < self.segment || self.segment_len > 0
    }

    /// What the scheduler should do with the step now.
    ///
    /// A step with spool data is due `finalize_delay` after StepFinished or its last line,
    /// whichever is later, or `idle_timeout` after its last line if it never finished. A step
    /// without spool data is kept for `idle_timeout` after its last activity, so late lines
    /// of a finished step are re-archived after the short grace period, then forgotten.
    fn action(&self, now: Instant, settings: &EngineSettings) -> Action {
        if self.removed || self.archiving {
            return Action::Wait;
        }
        if self.has_data() {
            let due = match self.finished_at {
                Some(finished) => finished.max(self.last_append) + settings.finalize_delay,
                None => self.last_append + settings.idle_timeout,
            };
            let due = self.retry_at.map_or(due, |retry| retry.max(due));
            return if now >= due {
                Action::Archive
            } else {
                Action::Wait
            };
        }
        let last = [Some(self.last_append), self.finished_at, self.archived_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.last_append);
        if now >= last + settings.idle_timeout {
            Action::Forget
        } else {
            Action::Wait
        }
    }
}

/// The wait before retry number `failures`: doubling from `initial`, capped at `max`, with
/// jitter (half to all of it) so that the steps of an outage do not retry in lockstep.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let base = initial
        .checked_mul(1u32 << failures.saturating_sub(1).min(20))
        .unwrap_or(max)
        .min(max);
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// The largest batch appended on the calling thread instead of a blocking one: paced agent
/// batches (tens of KiB) skip two thread hand-offs, while a full 1 MiB batch is written on
/// a blocking thread so the caller's thread reads the next request meanwhile.
const INLINE_APPEND: usize = 256 << 10;

/// Locks ignoring poison: the state stays consistent field by field, and a panic elsewhere
/// must not take every later call down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn storage(text: String) -> LogError {
    LogError::Storage(text)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs CPU-heavy background work (building an archive: sorting, zstd) on a thread of its
/// own under Linux's `SCHED_IDLE` policy, so that on a busy machine the appends' spool writes
/// and the protocol's tasks always run first: LogAppend latency must not depend on how many
/// archives are being built. `SCHED_IDLE` rather than nice 19 because the scheduler counts a
/// CPU running only such threads as idle when it places a waking thread, so a waking append
/// preempts a build at once instead of queueing behind another busy CPU (measured with
/// `perf sched`: nice-19 builds still delayed the runtime's threads by up to 3 ms). Builds
/// still progress on a saturated machine, at a small share. A fresh thread, because a
/// thread's policy cannot be raised again without privileges, so a pooled one would stay
/// slow for whatever runs on it next.
async fn background<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(std::io::Error::other(format!("the {name} thread vanished"))),
    }
}

/// Puts the calling thread under `SCHED_IDLE`, or at nice 19 where that is refused. A
/// failure of both leaves the default priority: correct, just less considerate.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both calls only read their arguments; on Linux, id 0 is the calling thread.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

impl Engine {
    /// Opens the spool (recovering what a previous run left), and starts the background
    /// sync and the archive scheduler. Needs a Tokio runtime. The store is not contacted.
    pub async fn start(
        settings: EngineSettings,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, StartError> {
        let root = settings.spool_dir.clone();
        let max_open = settings.max_open_files;
        let (spool, lock, recovered) = blocking(move || {
            let (spool, lock) = Spool::open(&root, max_open)?;
            let recovered = spool.recover()?;
            Ok::<_, std::io::Error>((spool, lock, recovered))
        })
        .await?;

        let now = Instant::now();
        let mut steps = HashMap::new();
        let (mut finished, mut pending) = (0, 0);
        for (id, found) in recovered {
            let mut state = StepState::new(now);
            state.maybe_archived = true;
            if let (Some(first), Some(last)) = (found.segments.first(), found.segments.last()) {
                state.first_segment = *first;
                // Never append behind a repaired tail: new lines start a new segment.
                state.segment = last + 1;
                pending += 1;
            }
            if found.finished {
                // Due now: the grace period passed while the addon was down.
                let due = now.checked_sub(settings.finalize_delay).unwrap_or(now);
                state.finished_at = Some(due);
                state.last_append = due;
                finished += 1;
            }
            steps.insert(
                id,
                Arc::new(Slot {
                    state: Mutex::new(state),
                    archive: tokio::sync::Mutex::new(()),
                }),
            );
        }
        tracing::info!(
            spool = %settings.spool_dir.display(),
            archive = %store.describe(),
            steps_pending = pending,
            steps_finished = finished,
            "log store engine started"
        );

        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.archive_concurrency.max(1))),
            settings,
            store,
            spool,
            steps: Mutex::new(steps),
            counters: Counters::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let background = Background::start().map_err(StartError::Background)?;
        let tasks = vec![
            background
                .handle
                .spawn(sync_loop(inner.clone(), stop_rx.clone())),
            background
                .handle
                .spawn(scheduler_loop(inner.clone(), stop_rx)),
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
        &self.background.handle
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

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

    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let slots: Vec<_> = lock(&self.inner.steps).values().cloned().collect();
        let steps_pending = slots.iter().filter(|s| lock(&s.state).has_data()).count();
        EngineStats {
            appends: get(&c.appends),
            entries_appended: get(&c.entries_appended),
            spool_bytes_written: get(&c.spool_bytes_written),
            spool_syncs: get(&c.spool_syncs),
            archive_uploads: get(&c.archive_uploads),
            archive_bytes_uploaded: get(&c.archive_bytes_uploaded),
            archive_failures: get(&c.archive_failures),
            steps_tracked: slots.len(),
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
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        self.flush().await
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Inner {
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

    /// Runs `f` on the step's live state, creating it when asked.
    fn with_state<T>(
        &self,
        id: StepId,
        create: bool,
        mut f: impl FnMut(&mut StepState) -> T,
    ) -> Option<T> {
        loop {
            let slot = {
                let mut steps = lock(&self.steps);
                match steps.get(&id) {
                    Some(slot) => slot.clone(),
                    None if create => steps
                        .entry(id)
                        .or_insert_with(|| {
                            Arc::new(Slot {
                                state: Mutex::new(StepState::new(Instant::now())),
                                archive: tokio::sync::Mutex::new(()),
                            })
                        })
                        .clone(),
                    None => return None,
                }
            };
            let mut state = lock(&slot.state);
            if !state.removed {
                return Some(f(&mut state));
            }
        }
    }

    fn append(&self, id: StepId, records: &[u8], entries: usize) -> Result<(), LogError> {
        let sync = self.settings.sync == SyncMode::Always;
        self.with_state(id, true, |state| {
            self.spool
                .append(id, state.segment, state.segment_len, records, sync)?;
            state.segment_len += records.len() as u64;
            state.last_append = Instant::now();
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

    fn finished(&self, id: StepId) {
        self.with_state(id, true, |state| {
            if state.finished_at.is_none() {
                state.finished_at = Some(Instant::now());
                // Only a hint for recovery: without it the step is archived after the idle
                // timeout instead of right after a restart.
                if let Err(e) = self.spool.mark_finished(id) {
                    tracing::warn!(step = %id, error = %e, "cannot mark step as finished in the spool");
                }
            }
        });
    }

    /// The staged records of a step, first write per line, and whether an archive object
    /// may hold more.
    fn read_staged(&self, id: StepId) -> Result<(Staged, bool), LogError> {
        let Some((segments, len, maybe_archived)) = self.with_state(id, false, |state| {
            (
                state.first_segment..state.segment + 1,
                state.segment_len,
                state.maybe_archived,
            )
        }) else {
            return Ok((Staged::default(), true));
        };
        let current = segments.end - 1;
        let mut staged = Staged::default();
        for segment in segments {
            let limit = (segment == current).then_some(len);
            staged
                .read_segment(&self.spool.segment_path(id, segment), limit)
                .map_err(|e| storage(format!("cannot read the staged log of step {id}: {e}")))?;
        }
        Ok((staged, maybe_archived))
    }

    /// Starts archive runs of due steps while upload slots are free; forgets idle ones.
    fn schedule(self: &Arc<Self>, jobs: &mut JoinSet<()>) {
        let now = Instant::now();
        let slots: Vec<(StepId, Arc<Slot>)> = lock(&self.steps)
            .iter()
            .map(|(id, slot)| (*id, slot.clone()))
            .collect();
        let mut forget = Vec::new();
        for (id, slot) in slots {
            let mut state = lock(&slot.state);
            match state.action(now, &self.settings) {
                Action::Wait => {}
                Action::Forget => forget.push((id, slot.clone())),
                Action::Archive => {
                    let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                        continue;
                    };
                    state.archiving = true;
                    drop(state);
                    let inner = self.clone();
                    jobs.spawn(async move {
                        inner.archive_job(id, slot).await;
                        drop(permit);
                    });
                }
            }
        }
        if forget.is_empty() {
            return;
        }
        let mut steps = lock(&self.steps);
        for (id, slot) in forget {
            let mut state = lock(&slot.state);
            if state.action(now, &self.settings) != Action::Forget {
                continue;
            }
            state.removed = true;
            steps.remove(&id);
        }
    }

    async fn archive_job(self: Arc<Self>, id: StepId, slot: Arc<Slot>) {
        /// Clears the archiving flag even when the run panics or is aborted (then as a
        /// failure, so the step is retried later).
        struct Done<'a> {
            inner: &'a Inner,
            slot: &'a Slot,
            ok: bool,
        }
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut state = lock(&self.slot.state);
                state.archiving = false;
                if self.ok {
                    state.failures = 0;
                    state.retry_at = None;
                    state.archived_at = Some(Instant::now());
                } else {
                    state.failures += 1;
                    let settings = &self.inner.settings;
                    let delay = backoff(settings.retry_initial, settings.retry_max, state.failures);
                    state.retry_at = Some(Instant::now() + delay);
                }
            }
        }
        let mut done = Done {
            inner: &self,
            slot: &slot,
            ok: false,
        };
        let started = Instant::now();
        match self.archive(id, &slot).await {
            Ok(Some((key, summary, size))) => {
                done.ok = true;
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
            Ok(None) => done.ok = true,
            Err(e) => {
                self.counters
                    .archive_failures
                    .fetch_add(1, Ordering::Relaxed);
                let failures = lock(&slot.state).failures + 1;
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
    /// only then delete the sealed segments. Returns what was stored, or `None` when there
    /// was nothing to do.
    async fn archive(
        self: &Arc<Self>,
        id: StepId,
        slot: &Slot,
    ) -> Result<Option<(String, Summary, u64)>, String> {
        let _exclusive = slot.archive.lock().await;
        let sealed = {
            let mut state = lock(&slot.state);
            if state.removed {
                return Ok(None);
            }
            if state.segment_len > 0 {
                self.spool.forget_handle(id, state.segment);
                state.segment += 1;
                state.segment_len = 0;
            }
            state.first_segment..state.segment
        };
        if sealed.is_empty() {
            return Ok(None);
        }
        let paths: Vec<PathBuf> = sealed
            .clone()
            .map(|s| self.spool.segment_path(id, s))
            .collect();
        let key = format::object_key(&self.settings.key_prefix, id);
        let store = self.store.describe();

        let previous = self
            .store
            .get(&key)
            .await
            .map_err(|e| format!("reading the previous archive {key} from {store}: {e}"))?
            .map(|(bytes, _)| bytes);

        let inner = self.clone();
        let build_paths = paths.clone();
        let built = background("archive-build", move || {
            for path in &build_paths {
                match inner.spool.sync_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            build(
                previous.as_deref(),
                &build_paths,
                inner.spool.tmp_dir(),
                inner.settings.compression_level,
                inner.settings.sort_budget_bytes,
                inner.spool.pool(),
            )
        })
        .await
        .and_then(|built| built)
        .map_err(|e| format!("building the archive {key}: {e}"))?;

        let stored = match built {
            // The sealed segments held no readable record: nothing to keep.
            None => None,
            Some(built) => {
                let meta = built.summary.to_meta(id);
                // Even a failed upload may have stored the object.
                lock(&slot.state).maybe_archived = true;
                let uploaded = async {
                    let info = self
                        .store
                        .put_file(&key, built.file.path(), &meta)
                        .await
                        .map_err(|e| format!("uploading {key} to {store}: {e}"))?;
                    verify(&info, built.size, &built.summary)
                        .map_err(|e| format!("verifying {key} in {store}: {e}"))
                }
                .await;
                let (file, size, summary) = (built.file, built.size, built.summary);
                // Recycling the file frees its blocks, which can take milliseconds (the
                // file system may discard them on the device): never on the runtime.
                blocking(move || drop(file)).await;
                uploaded?;
                self.counters
                    .archive_uploads
                    .fetch_add(1, Ordering::Relaxed);
                self.counters
                    .archive_bytes_uploaded
                    .fetch_add(size, Ordering::Relaxed);
                Some((key, summary, size))
            }
        };
        self.drop_sealed(id, slot, sealed).await?;
        Ok(stored)
    }

    async fn drop_sealed(
        self: &Arc<Self>,
        id: StepId,
        slot: &Slot,
        sealed: Range<u32>,
    ) -> Result<(), String> {
        let inner = self.clone();
        let segments = sealed.clone();
        blocking(move || inner.spool.remove(id, segments))
            .await
            .map_err(|e| format!("removing archived spool segments: {e}"))?;
        let mut state = lock(&slot.state);
        state.first_segment = state.first_segment.max(sealed.end);
        Ok(())
    }

    async fn find(self: &Arc<Self>, id: StepId) -> Result<Vec<u8>, LogError> {
        // The spool first, the object second: an archive run deletes segments only after
        // their object is stored, so lines missing from the segments read here are in the
        // object read next.
        let inner = self.clone();
        let (staged, maybe_archived) = blocking(move || inner.read_staged(id)).await?;
        let key = format::object_key(&self.settings.key_prefix, id);
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
        splice(&*self.store, id, &key, staged, object).await
    }

    async fn delete(self: &Arc<Self>, id: StepId) -> Result<(), LogError> {
        let key = format::object_key(&self.settings.key_prefix, id);
        let slot = lock(&self.steps).get(&id).cloned();
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
            let mut steps = lock(&inner.steps);
            let segments = match &removed {
                Some(slot) => {
                    let mut state = lock(&slot.state);
                    state.removed = true;
                    if steps.get(&id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                        steps.remove(&id);
                    }
                    state.first_segment..state.segment + 1
                }
                None => 0..0,
            };
            inner.spool.remove(id, segments)
        })
        .await
        .map_err(|e| storage(format!("cannot delete the staged log of step {id}: {e}")))?;
        deleted
    }
}

/// The step's log as LogFind's JSON: the archived object (if any) wins over the `staged`
/// records, which were all written after it.
async fn splice(
    store: &dyn ObjectStore,
    id: StepId,
    key: &str,
    staged: Staged,
    object: Option<(Vec<u8>, ObjectInfo)>,
) -> Result<Vec<u8>, LogError> {
    blocking(move || {
        log_json(
            object.as_ref().map(|(bytes, info)| (&bytes[..], info)),
            &staged,
        )
    })
    .await
    .map_err(|e| {
        storage(format!(
            "the archived log of step {id} ({key} in {}) is corrupt: {e}",
            store.describe()
        ))
    })
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
    let steps = settings.spool_dir.join("steps");
    let staged = blocking(move || {
        let mut segments = Vec::new();
        let listing = match std::fs::read_dir(&steps) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Staged::default()),
            Err(e) => return Err(e),
        };
        let prefix = format!("{id}.");
        for item in listing {
            let name = item?.file_name();
            let segment = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".ndjson"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(segment) = segment {
                segments.push(segment);
            }
        }
        segments.sort_unstable();
        let mut staged = Staged::default();
        for segment in segments {
            staged.read_segment(&steps.join(format!("{id}.{segment}.ndjson")), None)?;
        }
        Ok(staged)
    })
    .await
    .map_err(|e| storage(format!("cannot read the staged log of step {id}: {e}")))?;
    let key = format::object_key(&settings.key_prefix, id);
    let object = store.get(&key).await.map_err(|e| {
        storage(format!(
            "cannot read the archived log of step {id} ({key} in {}): {e}",
            store.describe()
        ))
    })?;
    splice(store, id, &key, staged, object).await
}

/// Checks what the store reports holding after an upload against what was built, before the
/// spool segments are deleted.
fn verify(info: &ObjectInfo, size: u64, summary: &Summary) -> Result<(), StoreError> {
    if info.size != size {
        return Err(StoreError::corrupt(format!(
            "stored {} bytes, uploaded {size}",
            info.size
        )));
    }
    // Some S3-compatible servers drop user metadata; only a contradiction is an error.
    if let Some(lines) = info.meta.user.get(format::META_LINE_COUNT)
        && *lines != summary.lines.to_string()
    {
        return Err(StoreError::corrupt(format!(
            "stored object claims {lines} lines, uploaded {}",
            summary.lines
        )));
    }
    Ok(())
}

async fn sync_loop(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
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

async fn scheduler_loop(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let period = (inner
        .settings
        .finalize_delay
        .min(inner.settings.idle_timeout)
        / 4)
    .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut jobs = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        while let Some(result) = jobs.try_join_next() {
            if let Err(e) = result
                && e.is_panic()
            {
                tracing::error!(error = %e, "an archive run panicked; it will be retried");
            }
        }
        inner.schedule(&mut jobs);
    }
    jobs.shutdown().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EngineSettings {
        let mut s = EngineSettings::new("/unused");
        s.finalize_delay = Duration::from_secs(5);
        s.idle_timeout = Duration::from_secs(600);
        s
    }

    #[test]
    fn finished_steps_are_due_after_the_grace_period_from_their_last_line() {
        let s = settings();
        let t0 = Instant::now();
        let mut state = StepState::new(t0);
        state.segment_len = 10;
        state.finished_at = Some(t0);
        assert_eq!(state.action(t0 + Duration::from_secs(4), &s), Action::Wait);
        assert_eq!(
            state.action(t0 + Duration::from_secs(5), &s),
            Action::Archive
        );
        state.last_append = t0 + Duration::from_secs(3);
        assert_eq!(state.action(t0 + Duration::from_secs(7), &s), Action::Wait);
        assert_eq!(
            state.action(t0 + Duration::from_secs(8), &s),
            Action::Archive
        );
        state.archiving = true;
        assert_eq!(state.action(t0 + Duration::from_secs(60), &s), Action::Wait);
    }

    #[test]
    fn unfinished_steps_wait_for_the_idle_timeout_and_retries_for_backoff() {
        let s = settings();
        let t0 = Instant::now();
        let mut state = StepState::new(t0);
        state.segment_len = 1;
        assert_eq!(
            state.action(t0 + Duration::from_secs(599), &s),
            Action::Wait
        );
        assert_eq!(
            state.action(t0 + Duration::from_secs(600), &s),
            Action::Archive
        );
        state.retry_at = Some(t0 + Duration::from_secs(900));
        assert_eq!(
            state.action(t0 + Duration::from_secs(899), &s),
            Action::Wait
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (5000, 300)] {
            let full = Duration::from_secs(full);
            for _ in 0..100 {
                let delay = backoff(initial, max, failures);
                assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
            }
        }
    }

    #[test]
    fn steps_without_data_are_forgotten_after_the_idle_timeout() {
        let s = settings();
        let t0 = Instant::now();
        let mut state = StepState::new(t0);
        state.archived_at = Some(t0 + Duration::from_secs(10));
        assert_eq!(
            state.action(t0 + Duration::from_secs(609), &s),
            Action::Wait
        );
        assert_eq!(
            state.action(t0 + Duration::from_secs(610), &s),
            Action::Forget
        );
    }
}
