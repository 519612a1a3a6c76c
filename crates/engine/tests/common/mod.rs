//! Shared test harness: a real spool directory, a real `LocalDirStore`, and a wrapper that
//! injects the faults a real server cannot produce on demand (fail for a while, hold uploads).

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use archive::{LocalDirStore, ObjectInfo, ObjectMeta, ObjectStore, StoreError};
use engine::{Clock, Engine, EngineSettings, ManualClock};
use logservice::{LogEntry, Step};

/// Wraps a real store; every fault is switched on and off by the test.
pub(crate) struct FaultyStore {
    pub(crate) inner: LocalDirStore,
    /// Every call fails with a transient error (the server is down).
    pub(crate) down: AtomicBool,
    /// Every call fails with access denied.
    pub(crate) denied: AtomicBool,
    /// The next N `put_file` calls fail.
    pub(crate) fail_puts: AtomicU32,
    /// `put_file` waits while this is set (an upload in flight).
    pub(crate) hold_puts: AtomicBool,
    pub(crate) puts: AtomicU32,
    pub(crate) puts_in_flight: AtomicUsize,
    pub(crate) max_puts_in_flight: AtomicUsize,
}

impl FaultyStore {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            inner: LocalDirStore::new(root).unwrap(),
            down: AtomicBool::new(false),
            denied: AtomicBool::new(false),
            fail_puts: AtomicU32::new(0),
            hold_puts: AtomicBool::new(false),
            puts: AtomicU32::new(0),
            puts_in_flight: AtomicUsize::new(0),
            max_puts_in_flight: AtomicUsize::new(0),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.denied.load(Ordering::SeqCst) {
            return Err(StoreError::denied("AccessDenied: test says no"));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::transient("connection refused (test outage)"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError> {
        let now = self.puts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_puts_in_flight.fetch_max(now, Ordering::SeqCst);
        while self.hold_puts.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let result = async {
            self.check()?;
            if self
                .fail_puts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::transient("503 SlowDown (test fault)"));
            }
            let info = self.inner.put_file(key, body, meta).await?;
            self.puts.fetch_add(1, Ordering::SeqCst);
            Ok(info)
        }
        .await;
        self.puts_in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.check()?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Arc<FaultyStore>,
    pub(crate) engine: Engine,
    /// The clock of the engine's archive schedule; `None` on the real clock.
    pub(crate) clock: Option<ManualClock>,
}

/// The longest retry backoff of [`fast_settings`]: advancing by it makes any due retry run.
pub(crate) const RETRY_MAX: Duration = Duration::from_millis(200);

/// Settings for tests: short delays, fast retries.
pub(crate) fn fast_settings(spool: PathBuf) -> EngineSettings {
    let mut s = EngineSettings::new(spool);
    s.finalize_delay = Duration::from_millis(200);
    s.idle_timeout = Duration::from_secs(30);
    s.retry_initial = Duration::from_millis(50);
    s.retry_max = RETRY_MAX;
    s.sync_interval = Duration::from_millis(100);
    s
}

impl Harness {
    /// An engine whose archive schedule runs on a manual clock: time moves on only through
    /// [`Harness::advance`].
    pub(crate) async fn new(tune: impl FnOnce(&mut EngineSettings)) -> Self {
        Self::start(Some(ManualClock::new()), tune).await
    }

    /// An engine on the real clock, for end-to-end tests of the timers and of work that
    /// overlaps in time.
    pub(crate) async fn real_time(tune: impl FnOnce(&mut EngineSettings)) -> Self {
        Self::start(None, tune).await
    }

    async fn start(clock: Option<ManualClock>, tune: impl FnOnce(&mut EngineSettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultyStore::new(&dir.path().join("archive")));
        Self::open(dir, store, clock, tune).await
    }

    /// An engine on the spool under `dir`, `store` and `clock`.
    async fn open(
        dir: tempfile::TempDir,
        store: Arc<FaultyStore>,
        clock: Option<ManualClock>,
        tune: impl FnOnce(&mut EngineSettings),
    ) -> Self {
        let mut settings = fast_settings(dir.path().join("spool"));
        tune(&mut settings);
        let engine = start_engine(settings, store.clone(), clock.clone()).await;
        Self {
            dir,
            store,
            engine,
            clock,
        }
    }

    /// Stops the engine and starts a new one on the same spool, store and clock.
    pub(crate) async fn restart(self, tune: impl FnOnce(&mut EngineSettings)) -> Self {
        let Self {
            dir,
            store,
            engine,
            clock,
        } = self;
        engine.shutdown().await.unwrap();
        Self::open(dir, store, clock, tune).await
    }

    /// The manual clock of the engine's schedule.
    pub(crate) fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("a harness on a manual clock")
    }

    /// Moves the schedule's time on by `by` and waits until the engine has run every archive
    /// due by then (successfully or not).
    pub(crate) async fn advance(&self, by: Duration) {
        self.clock().advance(by);
        self.clock().settle().await;
    }

    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Spool segment files of a step.
    pub(crate) fn segments(&self, id: i64) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.spool_dir().join("steps"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(&format!("{id}.")) && name.ends_with(".ndjson")
            })
            .collect();
        found.sort();
        found
    }

    /// The archive object of a step, decoded, read straight from the store.
    pub(crate) async fn object(&self, id: i64) -> Option<Vec<LogEntry>> {
        let key = self.engine.object_key(logservice::StepId::new(id).unwrap());
        let (bytes, info) = self.store.inner.get(&key).await.unwrap()?;
        assert_eq!(info.meta.content_type, "application/x-ndjson");
        assert_eq!(info.meta.content_encoding, "zstd");
        Some(engine::format::decode_object(&bytes).unwrap())
    }

    pub(crate) fn uploads(&self) -> u64 {
        self.engine.stats().archive_uploads
    }
}

/// Starts an engine on `clock`, or on the real clock.
pub(crate) async fn start_engine(
    settings: EngineSettings,
    store: Arc<FaultyStore>,
    clock: Option<ManualClock>,
) -> Engine {
    let clock = clock.map_or(Clock::Real, Clock::Manual);
    let engine = Engine::start_with_clock(settings, store, clock)
        .await
        .unwrap();
    // Open before the test goes on, so that a test starting a second engine on the same
    // spool finds this one holding it.
    engine.ready().await.unwrap();
    engine
}

pub(crate) fn step(id: i64) -> Step {
    Step {
        id,
        name: format!("step-{id}"),
        ..Step::default()
    }
}

pub(crate) fn entry(step_id: i64, line: i64, text: &str) -> LogEntry {
    LogEntry {
        step_id,
        line,
        time: line * 10,
        data: Some(text.as_bytes().to_vec()),
        entry_type: 0,
        ..LogEntry::default()
    }
}

/// `(line, text)` pairs for compact assertions.
pub(crate) fn texts(entries: &[LogEntry]) -> Vec<(i64, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.line,
                String::from_utf8_lossy(e.data.as_deref().unwrap_or(b"<nil>")).into_owned(),
            )
        })
        .collect()
}

/// Polls `cond` until it holds; panics with `what` after `timeout`. For work that overlaps in
/// real time (uploads held open); the schedule's timers are driven by [`Harness::advance`].
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
