//! Shared test harness: a real spool directory, a real `LocalDirStore`, and a wrapper that
//! injects the faults a real server cannot produce on demand (fail for a while, hold uploads).

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use archive::{LocalDirStore, ObjectInfo, ObjectMeta, ObjectStore, StoreError};
use engine::{Engine, EngineSettings};
use logservice::{LogEntry, Step};

/// Wraps a real store; every fault is switched on and off by the test.
pub struct FaultyStore {
    pub inner: LocalDirStore,
    /// Every call fails with a transient error (the server is down).
    pub down: AtomicBool,
    /// Every call fails with access denied.
    pub denied: AtomicBool,
    /// The next N `put_file` calls fail.
    pub fail_puts: AtomicU32,
    /// `put_file` waits while this is set (an upload in flight).
    pub hold_puts: AtomicBool,
    pub puts: AtomicU32,
    pub puts_in_flight: AtomicUsize,
    pub max_puts_in_flight: AtomicUsize,
}

impl FaultyStore {
    pub fn new(root: &Path) -> Self {
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

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<FaultyStore>,
    pub engine: Engine,
}

/// Settings for tests: short delays, fast retries.
pub fn fast_settings(spool: PathBuf) -> EngineSettings {
    let mut s = EngineSettings::new(spool);
    s.finalize_delay = Duration::from_millis(200);
    s.idle_timeout = Duration::from_secs(30);
    s.retry_initial = Duration::from_millis(50);
    s.retry_max = Duration::from_millis(200);
    s.sync_interval = Duration::from_millis(100);
    s
}

impl Harness {
    pub async fn new(tune: impl FnOnce(&mut EngineSettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FaultyStore::new(&dir.path().join("archive")));
        let mut settings = fast_settings(dir.path().join("spool"));
        tune(&mut settings);
        let engine = Engine::start(settings, store.clone()).await.unwrap();
        Self { dir, store, engine }
    }

    /// Stops the engine and starts a new one on the same spool and store.
    pub async fn restart(self, tune: impl FnOnce(&mut EngineSettings)) -> Self {
        let Self { dir, store, engine } = self;
        engine.shutdown().await.unwrap();
        let mut settings = fast_settings(dir.path().join("spool"));
        tune(&mut settings);
        let engine = Engine::start(settings, store.clone()).await.unwrap();
        Self { dir, store, engine }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Spool segment files of a step.
    pub fn segments(&self, id: i64) -> Vec<PathBuf> {
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
    pub async fn object(&self, id: i64) -> Option<Vec<LogEntry>> {
        let key = self.engine.object_key(logservice::StepId::new(id).unwrap());
        let (bytes, info) = self.store.inner.get(&key).await.unwrap()?;
        assert_eq!(info.meta.content_type, "application/x-ndjson");
        assert_eq!(info.meta.content_encoding, "zstd");
        Some(engine::format::decode_object(&bytes).unwrap())
    }

    pub fn uploads(&self) -> u64 {
        self.engine.stats().archive_uploads
    }
}

pub fn step(id: i64) -> Step {
    Step {
        id,
        name: format!("step-{id}"),
        ..Step::default()
    }
}

pub fn entry(step_id: i64, line: i64, text: &str) -> LogEntry {
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
pub fn texts(entries: &[LogEntry]) -> Vec<(i64, String)> {
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

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
