//! Database staging end to end: the [`TableEngine`] over Woodpecker's real `log_entries`
//! (SQLite, and PostgreSQL and MariaDB when `scripts/db/start.sh` ran) with a real archive
//! (a local directory; SeaweedFS when `scripts/s3/start.sh` ran), its schedule on a
//! [`ManualClock`]. The invariants of DESIGN.md re-run in this mode: Woodpecker-exact reads
//! in every phase, first write wins, late lines merged, StepFinished and idle archiving,
//! complete deletion, a restart that sweeps only staging's rows, S3 trouble, switching
//! between the spool and the table, and hostile input.
//!
//! Faults a real server does not produce on demand come from a wrapper around the real
//! store ([`Switch`]: down, or an upload held) or, for SeaweedFS, from a TCP proxy in front
//! of it that drops every connection while "down" ([`TcpSwitch`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::{
    ConditionalWrites, LocalDirStore, ObjectInfo, ObjectMeta, ObjectStore, S3Settings, S3Store,
    StoreError, WriteCondition,
};
use engine::format::{decode_object, object_key};
use engine::table::{TableEngine, drain_table, import_spool, read_since_marker};
use engine::{Clock, Engine, EngineSettings, ManualClock};
use logservice::{LogEntry, LogService, Step, StepId};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use woodpecker_db::Driver;
use woodpecker_db::staging::LogEntriesStaging;
use woodpecker_db::testing::TestDb;

const FINALIZE: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(4);
const SECOND: Duration = Duration::from_secs(1);

fn step(id: i64) -> Step {
    Step {
        id,
        ..Step::default()
    }
}

fn entry(step_id: i64, line: i64, data: &[u8]) -> LogEntry {
    LogEntry {
        step_id,
        line,
        time: 1_700_000_000 + line / 3,
        data: Some(data.to_vec()),
        entry_type: line % 3,
        ..LogEntry::default()
    }
}

/// Lines `range` of a step, each `"<tag> <line>"`.
fn lines(step_id: i64, range: std::ops::Range<i64>, tag: &str) -> Vec<LogEntry> {
    range
        .map(|line| entry(step_id, line, format!("{tag} {line}").as_bytes()))
        .collect()
}

/// (line, text) of entries: what assertions compare.
fn texts(entries: &[LogEntry]) -> Vec<(i64, String)> {
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

fn expect(range: std::ops::Range<i64>, tag: &str) -> Vec<(i64, String)> {
    range.map(|line| (line, format!("{tag} {line}"))).collect()
}

fn key(id: i64) -> String {
    object_key("", StepId::new(id).unwrap())
}

/// Woodpecker's own LogFind on the step's rows, each entry without its row id: the
/// addon answers entries as the agent sent them (no id), the same in both staging modes
/// and before and after archiving. Every other field, and the encoding, byte for byte.
async fn woodpecker_log_find(db: &TestDb, id: i64) -> Vec<u8> {
    let reference = db.woodpecker_log_find(id).await;
    let entries: Vec<LogEntry> = serde_json::from_slice(&reference).unwrap();
    let out = json_array(entries.iter().map(|e| LogEntry { id: 0, ..e.clone() }));
    // The re-encoding changes nothing but the ids.
    let with_ids = json_array(entries.iter().cloned());
    assert!(with_ids == reference, "re-encoding Woodpecker's answer");
    out
}

/// Entries encoded as a JSON array, as LogFind answers them.
fn json_array(entries: impl Iterator<Item = LogEntry>) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        logservice::push_entry(&e, &mut out);
    }
    out.push(b']');
    out
}

/// Wraps a real store: while `down`, every call fails as an unreachable server does;
/// uploads can be held before or after they reach the store.
struct Switch {
    inner: Arc<dyn ObjectStore>,
    down: AtomicBool,
    /// Only uploads fail (reads work): a full bucket, a policy denying PutObject.
    fail_puts: AtomicBool,
    hold_before_put: AtomicBool,
    hold_after_put: AtomicBool,
    /// Uploads that reached `put_file_if` / completed.
    puts_started: AtomicU32,
    puts_done: AtomicU32,
}

impl Switch {
    fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            fail_puts: AtomicBool::new(false),
            hold_before_put: AtomicBool::new(false),
            hold_after_put: AtomicBool::new(false),
            puts_started: AtomicU32::new(0),
            puts_done: AtomicU32::new(0),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::transient("connection refused (test outage)"));
        }
        Ok(())
    }

    async fn hold(flag: &AtomicBool) {
        while flag.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Switch {
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_file_if(key, body, meta, None).await
    }

    async fn put_file_if(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<ObjectInfo, StoreError> {
        self.puts_started.fetch_add(1, Ordering::SeqCst);
        Self::hold(&self.hold_before_put).await;
        self.check()?;
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(StoreError::denied("AccessDenied: PutObject (test fault)"));
        }
        let info = self.inner.put_file_if(key, body, meta, condition).await?;
        self.puts_done.fetch_add(1, Ordering::SeqCst);
        Self::hold(&self.hold_after_put).await;
        Ok(info)
    }

    async fn conditional_writes(&self) -> Result<ConditionalWrites, StoreError> {
        self.check()?;
        self.inner.conditional_writes().await
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

/// A TCP proxy in front of a real server that, while down, closes every connection it is
/// given and cuts the ones open: the client sees the server go away.
struct TcpSwitch {
    endpoint: String,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpSwitch {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (down, connections) = (down.clone(), connections.clone());
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            }
        });
        Self {
            endpoint,
            down,
            connections,
            accept,
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for task in self.connections.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for TcpSwitch {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// SeaweedFS from `scripts/s3/start.sh`, or `None` with a notice.
struct Seaweed {
    endpoint: String,
    access_key: String,
    secret_key: String,
    bucket: String,
}

fn seaweed() -> Option<Seaweed> {
    let var = |what: &str| std::env::var(format!("ARCHIVE_TEST_SEAWEEDFS_{what}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        eprintln!(
            "SKIPPED the SeaweedFS case: ARCHIVE_TEST_SEAWEEDFS_ENDPOINT is unset (eval \"$(scripts/s3/start.sh)\" to run it)"
        );
        return None;
    };
    Some(Seaweed {
        endpoint,
        access_key: var("ACCESS_KEY").unwrap_or_else(|| "test".into()),
        secret_key: var("SECRET_KEY").unwrap_or_else(|| "test".into()),
        bucket: var("BUCKET").unwrap_or_else(|| "ci-logs".into()),
    })
}

impl Seaweed {
    /// A store on `endpoint` (the server or a proxy) in a folder of its own, one attempt
    /// per request (an outage fails at once instead of after the SDK's backoff).
    async fn store(&self, endpoint: &str, folder: &str) -> S3Store {
        let mut settings = S3Settings::new(&self.bucket);
        settings.endpoint = Some(endpoint.to_owned());
        settings.path_style = true;
        settings.region = Some("us-east-1".into());
        settings.folder = folder.to_owned();
        settings.connect_timeout = Duration::from_secs(2);
        settings.operation_timeout = Duration::from_secs(30);
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_credential_types::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "table-engine-tests",
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1));
        S3Store::connect_with(settings, loader).await.unwrap()
    }
}

fn unique_folder(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("table-engine/{name}-{nanos}/")
}

fn settings(scratch: &Path) -> EngineSettings {
    let mut s = EngineSettings::new(scratch.join("spool-unused"));
    s.finalize_delay = FINALIZE;
    s.idle_timeout = IDLE;
    s.retry_initial = SECOND;
    s.retry_max = RETRY_MAX;
    s
}

/// A TableEngine on a database and an archive, its schedule on a manual clock.
struct Rig {
    driver: Driver,
    table: Arc<LogEntriesStaging>,
    /// The real store, not through the switch.
    direct: Arc<dyn ObjectStore>,
    /// What the engine uses.
    switch: Arc<Switch>,
    engine: Arc<TableEngine>,
    clock: ManualClock,
    _scratch: tempfile::TempDir,
}

impl Rig {
    fn start(db: &TestDb, direct: Arc<dyn ObjectStore>) -> Self {
        let switch = Arc::new(Switch::new(direct.clone()));
        Self::start_on(db, direct, switch.clone(), switch)
    }

    /// On a local directory archive, returned with the rig to live as long as it.
    fn local(db: &TestDb) -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().unwrap();
        let rig = Self::start(db, local_store(&dir));
        (dir, rig)
    }

    fn start_on(
        db: &TestDb,
        direct: Arc<dyn ObjectStore>,
        switch: Arc<Switch>,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let table = Arc::new(LogEntriesStaging::new(db.database().clone()));
        let clock = ManualClock::new();
        let engine = Arc::new(TableEngine::start(
            settings(scratch.path()),
            store,
            table.clone(),
            scratch.path().join("builds"),
            Clock::Manual(clock.clone()),
        ));
        Self {
            driver: db.driver,
            table,
            direct,
            switch,
            engine,
            clock,
            _scratch: scratch,
        }
    }

    /// Moves time on and waits for every archive run then due.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.clock.settle().await;
    }

    /// Moves time on `times` times by `by`, waiting for the runs due after each step.
    async fn advance_times(&self, by: Duration, times: u32) {
        for _ in 0..times {
            self.advance(by).await;
        }
    }

    /// Enough time for several retries of a failed run.
    async fn retry_rounds(&self) {
        self.advance_times(RETRY_MAX, 3).await;
    }

    /// Moves time on; the runs then due go on in a task (for a test to hold them).
    fn advance_in_background(&self, by: Duration) -> JoinHandle<()> {
        self.clock.advance(by);
        let clock = self.clock.clone();
        tokio::spawn(async move { clock.settle().await })
    }

    /// StepFinished, then the finalize delay: the step's archive run is done.
    async fn finish(&self, id: i64) {
        self.engine.step_finished(&step(id)).await;
        self.advance(FINALIZE).await;
    }

    async fn append(&self, id: i64, entries: Vec<LogEntry>) {
        self.engine
            .log_append(&step(id), entries)
            .await
            .unwrap_or_else(|e| panic!("{:?}: append to step {id}: {e}", self.driver));
    }

    async fn find(&self, id: i64) -> Vec<(i64, String)> {
        texts(
            &self
                .engine
                .log_find(&step(id))
                .await
                .unwrap_or_else(|e| panic!("{:?}: LogFind of step {id}: {e}", self.driver)),
        )
    }

    async fn find_json(&self, id: i64) -> Vec<u8> {
        self.engine
            .log_find_json(&step(id))
            .await
            .unwrap_or_else(|e| panic!("{:?}: LogFind of step {id}: {e}", self.driver))
    }

    /// The step's object as stored, decoded.
    async fn object(&self, id: i64) -> Option<Vec<LogEntry>> {
        let (bytes, _) = self.direct.get(&key(id)).await.unwrap()?;
        Some(decode_object(&bytes).unwrap())
    }

    async fn object_texts(&self, id: i64) -> Option<Vec<(i64, String)>> {
        self.object(id).await.map(|o| texts(&o))
    }
}

fn local_store(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(LocalDirStore::new(dir.path().join("archive")).unwrap())
}

/// Lines `range` of step `id` (tagged "history") written by the database store an hour ago.
async fn history_rows(db: &TestDb, id: i64, range: std::ops::Range<i64>) {
    db.append(id, &lines(id, range, "history")).await.unwrap();
    age_rows(db, id, 3600).await;
}

/// Marks a step's rows as written `age_secs` ago (the database store's history is older
/// than the staging marker).
async fn age_rows(db: &TestDb, id: i64, age_secs: i64) {
    db.execute(&format!(
        "UPDATE log_entries SET created = created - {age_secs} WHERE step_id = {id}"
    ))
    .await;
}

/// Waits (real time) until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- 1. The invariants in this mode ----------------------------------------------------

/// Reads equal Woodpecker's own LogFind while the step runs, and the same bytes after it
/// is archived and with late lines; the first write of a line wins within a batch, across
/// batches, and against the archive; StepFinished archives after the finalize delay and
/// deletes the rows; late lines are merged into the object and their rows deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_woodpecker_exact_in_every_phase_and_the_first_write_wins() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;

        // Running: a batch with line 2 twice, then an overlapping retry out of order.
        let mut first = lines(11, 0..5, "first");
        first.insert(3, entry(11, 2, b"second copy within the batch"));
        rig.append(11, first).await;
        let mut retry = lines(11, 3..8, "retry");
        retry.reverse();
        rig.append(11, retry).await;
        let mut expected = expect(0..5, "first");
        expected.extend(expect(5..8, "retry"));
        assert_eq!(rig.find(11).await, expected, "{d:?}: running");
        let running = rig.find_json(11).await;
        assert_eq!(
            String::from_utf8_lossy(&running),
            String::from_utf8_lossy(&woodpecker_log_find(&db, 11).await),
            "{d:?}: Woodpecker's LogFind on the same rows"
        );
        assert_eq!(db.count_log_rows(11).await, 8, "{d:?}");

        // Finished: archived after the finalize delay, not before; then the rows are gone.
        rig.engine.step_finished(&step(11)).await;
        rig.advance(FINALIZE - SECOND).await;
        assert!(rig.object(11).await.is_none(), "{d:?}: archived too early");
        assert_eq!(rig.find_json(11).await, running, "{d:?}: finished");
        rig.advance(SECOND).await;
        assert_eq!(
            rig.object_texts(11).await,
            Some(expected.clone()),
            "{d:?}: archived"
        );
        assert_eq!(db.count_log_rows(11).await, 0, "{d:?}: rows deleted");
        assert_eq!(
            String::from_utf8_lossy(&rig.find_json(11).await),
            String::from_utf8_lossy(&running),
            "{d:?}: the archived log reads as the rows did (times, types, nil data included)"
        );

        // Late lines, with a retry of an archived line: merged, the archive's line wins.
        let mut late = lines(11, 8..10, "late");
        late.push(entry(11, 1, b"late retry of line 1"));
        rig.append(11, late).await;
        assert_eq!(db.count_log_rows(11).await, 3, "{d:?}");
        let mut with_late = expected.clone();
        with_late.extend(expect(8..10, "late"));
        assert_eq!(rig.find(11).await, with_late, "{d:?}: archive + late rows");
        rig.advance(IDLE).await;
        assert_eq!(
            rig.object_texts(11).await,
            Some(with_late.clone()),
            "{d:?}: late lines merged"
        );
        assert_eq!(db.count_log_rows(11).await, 0, "{d:?}: late rows deleted");
        assert_eq!(rig.find(11).await, with_late, "{d:?}: after the merge");
        let stats = rig.engine.stats();
        assert_eq!(
            (
                stats.archive_uploads,
                stats.archive_failures,
                stats.pending_steps,
                stats.runs_from_memory,
                stats.held_bytes,
            ),
            (2, 0, 0, 1, 0),
            "{d:?}: the first object built from the lines held in memory, the late lines \
             from the table (the copy ends with the first archive)"
        );
        // Nothing more happens.
        rig.advance(IDLE * 3).await;
        assert_eq!(rig.engine.stats().archive_uploads, 2, "{d:?}");
    }
}

/// A step that never gets StepFinished (cancelled, killed agent) is archived once it was
/// quiet for the idle timeout, counted from its last append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_stepfinished_is_archived_after_the_idle_timeout() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        rig.append(12, lines(12, 0..3, "a")).await;
        rig.advance(IDLE / 2).await;
        rig.append(12, lines(12, 3..5, "a")).await;
        rig.advance(IDLE - SECOND).await;
        assert!(rig.object(12).await.is_none(), "{d:?}: archived too early");
        assert_eq!(db.count_log_rows(12).await, 5, "{d:?}");
        assert_eq!(rig.find(12).await, expect(0..5, "a"), "{d:?}");
        rig.advance(SECOND).await;
        assert_eq!(rig.object_texts(12).await, Some(expect(0..5, "a")), "{d:?}");
        assert_eq!(db.count_log_rows(12).await, 0, "{d:?}");
        assert_eq!(rig.find(12).await, expect(0..5, "a"), "{d:?}");
    }
}

/// LogFind while an archive run is under way (before its upload, and between the upload
/// and the deletion of the rows) returns every line once; LogDelete during a run waits for
/// it and then removes object and rows, and nothing resurfaces afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_delete_during_a_run_removes_everything_and_reads_see_each_line_once() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        rig.append(21, lines(21, 0..3, "a")).await;
        rig.finish(21).await;
        assert_eq!(rig.object_texts(21).await, Some(expect(0..3, "a")), "{d:?}");
        rig.append(21, lines(21, 3..6, "a")).await;

        // A re-archive held between its upload and the deletion of the rows.
        rig.switch.hold_after_put.store(true, Ordering::SeqCst);
        let done = rig.switch.puts_done.load(Ordering::SeqCst);
        let settle = rig.advance_in_background(IDLE);
        let switch = rig.switch.clone();
        wait_until("the re-archive is uploaded", || {
            switch.puts_done.load(Ordering::SeqCst) > done
        })
        .await;
        assert_eq!(
            db.count_log_rows(21).await,
            3,
            "{d:?}: rows not yet deleted"
        );
        assert_eq!(
            rig.find(21).await,
            expect(0..6, "a"),
            "{d:?}: object and rows both hold lines 3..6"
        );
        rig.switch.hold_after_put.store(false, Ordering::SeqCst);
        settle.await.unwrap();
        assert_eq!(db.count_log_rows(21).await, 0, "{d:?}");

        // Late lines again; their run held before the upload; LogDelete meanwhile.
        rig.append(21, lines(21, 6..8, "a")).await;
        rig.switch.hold_before_put.store(true, Ordering::SeqCst);
        let started = rig.switch.puts_started.load(Ordering::SeqCst);
        let settle = rig.advance_in_background(IDLE);
        wait_until("the run is uploading", || {
            switch.puts_started.load(Ordering::SeqCst) > started
        })
        .await;
        assert_eq!(
            rig.find(21).await,
            expect(0..8, "a"),
            "{d:?}: during the upload"
        );
        let delete = tokio::spawn({
            let engine = rig.engine.clone();
            async move { engine.log_delete(&step(21)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !delete.is_finished(),
            "{d:?}: LogDelete must wait for the run under way"
        );
        rig.switch.hold_before_put.store(false, Ordering::SeqCst);
        settle.await.unwrap();
        delete.await.unwrap().unwrap();
        assert!(rig.object(21).await.is_none(), "{d:?}: object deleted");
        assert_eq!(db.count_log_rows(21).await, 0, "{d:?}: rows deleted");
        assert!(rig.find(21).await.is_empty(), "{d:?}");
        assert_eq!(rig.find_json(21).await, b"[]", "{d:?}");
        rig.advance(IDLE * 3).await;
        assert!(rig.object(21).await.is_none(), "{d:?}: resurfaced");
        assert!(rig.find(21).await.is_empty(), "{d:?}: resurfaced");

        // A step never archived: its rows go too, and nothing is archived later.
        rig.append(22, lines(22, 0..4, "b")).await;
        rig.engine.step_finished(&step(22)).await;
        rig.engine.log_delete(&step(22)).await.unwrap();
        assert_eq!(db.count_log_rows(22).await, 0, "{d:?}");
        rig.advance(IDLE * 2).await;
        assert!(rig.object(22).await.is_none(), "{d:?}");
        assert!(rig.find(22).await.is_empty(), "{d:?}");
    }
}

/// The copy in memory an archive run builds from holds only what this engine appended: rows
/// of lines it never saw (written by an earlier process) are neither lost nor deleted. They
/// stay in the table, reads merge them, and the sweep archives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_copy_in_memory_never_saw_stay_until_the_sweep_archives_them() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        rig.advance(Duration::ZERO).await;
        db.append(13, &lines(13, 1..3, "earlier")).await.unwrap();
        let mut appended = lines(13, 0..1, "a");
        appended.extend(lines(13, 3..5, "a"));
        rig.append(13, appended).await;
        let mut all = expect(0..1, "a");
        all.extend(expect(1..3, "earlier"));
        all.extend(expect(3..5, "a"));

        rig.finish(13).await;
        assert_eq!(rig.engine.stats().runs_from_memory, 1, "{d:?}");
        let mut held = expect(0..1, "a");
        held.extend(expect(3..5, "a"));
        assert_eq!(rig.object_texts(13).await, Some(held), "{d:?}");
        assert_eq!(
            db.count_log_rows(13).await,
            2,
            "{d:?}: the rows not in the object stay"
        );
        assert_eq!(rig.find(13).await, all, "{d:?}: object and rows");

        rig.advance_times(IDLE, 3).await;
        assert_eq!(
            rig.object_texts(13).await,
            Some(all.clone()),
            "{d:?}: swept"
        );
        assert_eq!(db.count_log_rows(13).await, 0, "{d:?}");
        assert_eq!(rig.find(13).await, all, "{d:?}");
    }
}

// --- 2. Restart ------------------------------------------------------------------------

/// A second engine on the same database and archive, with no state of the first: its
/// sweep finds the steps the first left (rows newer than the staging marker) and archives
/// them after the idle timeout; rows of the database store's history (older than the
/// marker) are never swept, and are read through LogFind exactly as Woodpecker reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_sweeps_what_the_first_left_and_not_the_history() {
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let d = db.driver;
        // Logs from the database store, an hour old.
        history_rows(&db, 31, 0..4).await;

        let first = Rig::start(&db, local_store(&dir));
        first.advance(Duration::ZERO).await;
        let since = read_since_marker(&*first.direct, "")
            .await
            .unwrap()
            .expect("the marker is written at the first sweep");
        first.append(32, lines(32, 0..3, "finished")).await;
        first.engine.step_finished(&step(32)).await;
        first.append(33, lines(33, 0..2, "running")).await;
        let created = db
            .query_i64("SELECT MIN(created) FROM log_entries WHERE step_id IN (32, 33)")
            .await;
        assert!(
            created >= since,
            "{d:?}: staging's rows are not before the marker"
        );
        // Killed: no shutdown, nothing archived.
        drop(first);

        let second = Rig::start(&db, local_store(&dir));
        second.advance(Duration::ZERO).await;
        assert_eq!(
            read_since_marker(&*second.direct, "").await.unwrap(),
            Some(since),
            "{d:?}: the marker is kept"
        );
        for (id, want) in [
            (31, expect(0..4, "history")),
            (32, expect(0..3, "finished")),
            (33, expect(0..2, "running")),
        ] {
            assert_eq!(second.find(id).await, want, "{d:?}: step {id}");
        }
        // The age of a found step counts from its newest row's `created` (whole seconds,
        // and some real time passed since): not due at half the idle timeout, due at it.
        second.advance(IDLE / 2).await;
        assert!(second.object(32).await.is_none(), "{d:?}: swept too early");
        second.advance(IDLE / 2).await;
        assert_eq!(
            second.object_texts(32).await,
            Some(expect(0..3, "finished")),
            "{d:?}"
        );
        assert_eq!(
            second.object_texts(33).await,
            Some(expect(0..2, "running")),
            "{d:?}"
        );
        assert_eq!(db.count_log_rows(32).await, 0, "{d:?}");
        assert_eq!(db.count_log_rows(33).await, 0, "{d:?}");

        // The history stays where it is, and reads as Woodpecker reads it.
        second.advance(IDLE * 3).await;
        assert!(second.object(31).await.is_none(), "{d:?}: history swept");
        assert_eq!(db.count_log_rows(31).await, 4, "{d:?}");
        assert_eq!(
            String::from_utf8_lossy(&second.find_json(31).await),
            String::from_utf8_lossy(&woodpecker_log_find(&db, 31).await),
            "{d:?}: history read through"
        );
    }
}

// --- 3. S3 trouble ---------------------------------------------------------------------

/// The archive goes away: appends still succeed and their rows stay; a step whose line 0
/// this engine took reads from its rows; one it did not (rows written by someone else)
/// fails rather than answering part of a log; archiving retries, and only once the store is
/// back is the object stored and are the rows deleted.
async fn outage_case(db: &TestDb, rig: &Rig, set_down: &dyn Fn(bool)) {
    let d = db.driver;
    rig.advance(Duration::ZERO).await;
    // Rows another process wrote: this engine has not seen the step's first line.
    db.append(52, &lines(52, 0..3, "other")).await.unwrap();

    set_down(true);
    rig.append(51, lines(51, 0..4, "a")).await;
    rig.engine.step_finished(&step(51)).await;
    assert_eq!(
        rig.find(51).await,
        expect(0..4, "a"),
        "{d:?}: served from the rows"
    );
    assert!(
        rig.engine.log_find(&step(52)).await.is_err(),
        "{d:?}: rows of a step whose first line came from elsewhere may not be the whole log"
    );
    rig.advance(FINALIZE).await;
    let failures = rig.engine.stats().archive_failures;
    assert!(failures >= 1, "{d:?}: the run failed");
    assert_eq!(db.count_log_rows(51).await, 4, "{d:?}: rows kept");
    rig.retry_rounds().await;
    assert!(
        rig.engine.stats().archive_failures > failures,
        "{d:?}: retried"
    );
    rig.append(51, lines(51, 4..6, "a")).await;
    assert_eq!(db.count_log_rows(51).await, 6, "{d:?}: rows kept");
    assert_eq!(rig.find(51).await, expect(0..6, "a"), "{d:?}");
    assert!(rig.object(51).await.is_none(), "{d:?}");

    set_down(false);
    rig.advance(FINALIZE.max(RETRY_MAX)).await;
    assert_eq!(
        rig.object_texts(51).await,
        Some(expect(0..6, "a")),
        "{d:?}: archived once the store is back"
    );
    assert_eq!(
        db.count_log_rows(51).await,
        0,
        "{d:?}: rows deleted after the upload"
    );
    assert_eq!(rig.find(51).await, expect(0..6, "a"), "{d:?}");
    assert_eq!(rig.find(52).await, expect(0..3, "other"), "{d:?}");
    assert_eq!(rig.engine.stats().pending_steps, 0, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_local_archive_keeps_rows_until_it_is_back() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let switch = rig.switch.clone();
        outage_case(&db, &rig, &|down| switch.down.store(down, Ordering::SeqCst)).await;
    }
}

/// Reads of the store work but uploads fail: the run reads the rows and builds the object,
/// and still deletes nothing until an upload succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_keep_the_rows_until_one_succeeds() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        rig.append(53, lines(53, 0..3, "a")).await;
        rig.finish(53).await;
        rig.append(53, lines(53, 3..5, "a")).await;
        rig.switch.fail_puts.store(true, Ordering::SeqCst);
        rig.advance(IDLE).await;
        rig.retry_rounds().await;
        assert_eq!(db.count_log_rows(53).await, 2, "{d:?}: rows kept");
        assert!(rig.engine.stats().archive_failures >= 2, "{d:?}: retried");
        assert_eq!(rig.object_texts(53).await, Some(expect(0..3, "a")), "{d:?}");
        assert_eq!(rig.find(53).await, expect(0..5, "a"), "{d:?}");
        rig.switch.fail_puts.store(false, Ordering::SeqCst);
        rig.advance(RETRY_MAX).await;
        assert_eq!(rig.object_texts(53).await, Some(expect(0..5, "a")), "{d:?}");
        assert_eq!(db.count_log_rows(53).await, 0, "{d:?}");
    }
}

/// The same on SeaweedFS, the outage a proxy in front of it that drops every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_seaweedfs_keeps_rows_until_it_is_back() {
    let Some(server) = seaweed() else {
        return;
    };
    for db in TestDb::every().await {
        let proxy = TcpSwitch::start(&server.endpoint).await;
        let folder = unique_folder(&format!("outage-{}", db.driver.name()));
        let direct: Arc<dyn ObjectStore> = Arc::new(server.store(&server.endpoint, &folder).await);
        let through: Arc<dyn ObjectStore> = Arc::new(server.store(&proxy.endpoint, &folder).await);
        let switch = Arc::new(Switch::new(through.clone()));
        let rig = Rig::start_on(&db, direct.clone(), switch, through);
        outage_case(&db, &rig, &|down| proxy.set_down(down)).await;
        assert_eq!(
            direct.conditional_writes().await.unwrap(),
            ConditionalWrites::Honoured
        );
        rig.engine.log_delete(&step(51)).await.unwrap();
        rig.engine.log_delete(&step(52)).await.unwrap();
    }
}

// --- 4. Switching staging modes --------------------------------------------------------

/// Lines a spool engine left behind (appended, never archived, the engine dropped) are
/// moved into the table; the TableEngine archives them: the finished step after its
/// finalize delay, the unfinished one after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_the_spool_engine_is_imported_and_archived() {
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let d = db.driver;
        let spool_dir = dir.path().join("spool");
        left_spool(&spool_dir, local_store(&dir)).await;

        let rig = Rig::start(&db, local_store(&dir));
        rig.advance(Duration::ZERO).await;
        let moved = import_spool(&spool_dir, &*rig.table).await.unwrap();
        let mut steps: Vec<(i64, bool)> =
            moved.steps.iter().map(|(id, f)| (id.get(), *f)).collect();
        steps.sort();
        assert_eq!(steps, [(61, true), (62, false)], "{d:?}");
        assert_eq!(moved.entries, 6, "{d:?}");
        assert_eq!(db.count_log_rows(61).await, 3, "{d:?}");
        assert_eq!(db.count_log_rows(62).await, 2, "{d:?}");
        assert_eq!(rig.find(61).await, spool_61(), "{d:?}");
        assert_eq!(rig.find(62).await, expect(0..2, "spooled"), "{d:?}");
        // Importing again finds nothing left.
        let again = import_spool(&spool_dir, &*rig.table).await.unwrap();
        assert_eq!(again.entries, 0, "{d:?}");
        assert_eq!(db.count_log_rows(61).await, 3, "{d:?}");

        // As the addon does for finished steps.
        rig.finish(61).await;
        assert_eq!(rig.object_texts(61).await, Some(spool_61()), "{d:?}");
        assert_eq!(db.count_log_rows(61).await, 0, "{d:?}");
        rig.advance_times(IDLE, 3).await;
        assert_eq!(
            rig.object_texts(62).await,
            Some(expect(0..2, "spooled")),
            "{d:?}: the unfinished imported step is swept"
        );
        assert_eq!(db.count_log_rows(62).await, 0, "{d:?}");
    }
}

/// Step 61 as spooled: a retry overlapping line 1 (the first write wins).
fn spool_61() -> Vec<(i64, String)> {
    expect(0..3, "spooled")
}

/// A spool engine (the TableEngine's finalize delay and idle timeout) on `clock`, ready.
async fn start_spool_engine(
    spool_dir: &Path,
    store: Arc<dyn ObjectStore>,
    clock: ManualClock,
) -> Engine {
    let mut s = EngineSettings::new(spool_dir);
    s.finalize_delay = FINALIZE;
    s.idle_timeout = IDLE;
    let spool = Engine::start_with_clock(s, store, Clock::Manual(clock))
        .await
        .unwrap();
    spool.ready().await.unwrap();
    spool
}

/// A spool engine appends steps 61 (finished) and 62 (running) and is dropped without
/// archiving anything, as a killed addon leaves its spool.
async fn left_spool(spool_dir: &Path, store: Arc<dyn ObjectStore>) {
    let spool = start_spool_engine(spool_dir, store, ManualClock::new()).await;
    spool
        .log_append(&step(61), lines(61, 0..2, "spooled"))
        .await
        .unwrap();
    let mut retry = lines(61, 1..3, "spooled");
    retry[0] = entry(61, 1, b"retry of line 1");
    spool.log_append(&step(61), retry).await.unwrap();
    spool.step_finished(&step(61)).await;
    spool
        .log_append(&step(62), lines(62, 0..2, "spooled"))
        .await
        .unwrap();
    spool.flush().await.unwrap();
    drop(spool);
}

/// The archive is unreachable when the TableEngine starts, so the staging marker cannot be
/// written yet; a spool is imported meanwhile. When the store is back, the marker must not
/// make the imported (unfinished) step look like the database store's history: it is
/// swept and archived like any step of staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_imported_while_the_archive_is_down_are_still_swept() {
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let d = db.driver;
        let spool_dir = dir.path().join("spool");
        left_spool(&spool_dir, local_store(&dir)).await;

        let rig = Rig::start(&db, local_store(&dir));
        rig.switch.down.store(true, Ordering::SeqCst);
        rig.advance(Duration::ZERO).await;
        import_spool(&spool_dir, &*rig.table).await.unwrap();
        assert_eq!(db.count_log_rows(62).await, 2, "{d:?}");
        // The store comes back a while later (the marker's time has whole seconds).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        rig.switch.down.store(false, Ordering::SeqCst);
        rig.advance_times(IDLE, 3).await;
        assert!(
            read_since_marker(&*rig.direct, "").await.unwrap().is_some(),
            "{d:?}: marker written"
        );
        assert_eq!(
            rig.object_texts(62).await,
            Some(expect(0..2, "spooled")),
            "{d:?}: the imported step was taken for history and never archived"
        );
        assert_eq!(db.count_log_rows(62).await, 0, "{d:?}");
    }
}

/// Back from database to spool staging: the rows of staging (newer than the marker) move
/// into a spool engine, which serves them merged with the objects and archives them; the
/// database store's history stays in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_staging_are_drained_into_a_spool_engine() {
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let d = db.driver;
        history_rows(&db, 73, 0..2).await;

        let rig = Rig::start(&db, local_store(&dir));
        rig.advance(Duration::ZERO).await;
        rig.append(71, lines(71, 0..3, "t")).await;
        rig.finish(71).await;
        assert_eq!(rig.object_texts(71).await, Some(expect(0..3, "t")), "{d:?}");
        rig.append(71, lines(71, 3..5, "t")).await;
        rig.append(72, lines(72, 0..2, "t")).await;
        let table = rig.table.clone();
        drop(rig);

        let since = read_since_marker(&*local_store(&dir), "")
            .await
            .unwrap()
            .unwrap();
        let clock = ManualClock::new();
        let spool =
            start_spool_engine(&dir.path().join("spool"), local_store(&dir), clock.clone()).await;
        let moved = drain_table(&*table, since, &spool).await.unwrap();
        let steps: Vec<i64> = moved.steps.iter().map(|(id, _)| id.get()).collect();
        assert_eq!(steps, [71, 72], "{d:?}");
        assert_eq!(moved.entries, 4, "{d:?}");
        assert_eq!(db.count_log_rows(71).await, 0, "{d:?}");
        assert_eq!(db.count_log_rows(72).await, 0, "{d:?}");
        assert_eq!(db.count_log_rows(73).await, 2, "{d:?}: history stays");
        assert_eq!(
            texts(&spool.log_find(&step(71)).await.unwrap()),
            expect(0..5, "t"),
            "{d:?}"
        );
        assert_eq!(
            texts(&spool.log_find(&step(72)).await.unwrap()),
            expect(0..2, "t"),
            "{d:?}"
        );
        clock.advance(IDLE);
        clock.settle().await;
        let archive = local_store(&dir);
        for (id, want) in [(71, expect(0..5, "t")), (72, expect(0..2, "t"))] {
            let (bytes, _) = archive.get(&key(id)).await.unwrap().unwrap();
            assert_eq!(
                texts(&decode_object(&bytes).unwrap()),
                want,
                "{d:?}: step {id}"
            );
        }
        spool.shutdown().await.unwrap();
    }
}

// --- 5. Hostile and bad input ----------------------------------------------------------

/// Step ids Woodpecker never gives out are refused by every call, and nothing is written
/// to the table or the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_step_ids_are_refused_and_nothing_is_written() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        for bad in [0, -1, i64::MIN] {
            let entries = lines(bad, 0..3, "bad");
            assert!(
                rig.engine.log_append(&step(bad), entries).await.is_err(),
                "{d:?}: append to step {bad}"
            );
            rig.engine.step_finished(&step(bad)).await;
            assert!(rig.engine.log_find(&step(bad)).await.is_err(), "{d:?}");
            assert!(rig.engine.log_delete(&step(bad)).await.is_err(), "{d:?}");
        }
        rig.advance(IDLE * 2).await;
        assert_eq!(
            db.query_i64("SELECT COUNT(*) FROM log_entries").await,
            0,
            "{d:?}: rows written"
        );
        let keys = rig.direct.list("").await.unwrap();
        assert!(
            keys.iter().all(|k| !k.starts_with("v1/")),
            "{d:?}: objects written: {keys:?}"
        );
        assert_eq!(rig.engine.stats().appends, 0, "{d:?}");
    }
}

/// `len` bytes that do not compress (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Nil and empty data, bytes that are not UTF-8, escapes and a 5 MiB line go through the
/// table and the archive unchanged, and read as Woodpecker reads the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bytes_and_a_5_mib_line_round_trip_through_the_archive() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        let huge = noise(5 << 20);
        let sent = vec![
            LogEntry {
                data: None,
                ..entry(81, 0, b"")
            },
            entry(81, 1, b""),
            entry(81, 2, &[0xff, 0xfe, 0x00, b'\n', 0x80, b'"', b'\\']),
            entry(81, 3, "ünïcödé ✓ \u{1b}[31mred\u{1b}[0m\r\n".as_bytes()),
            entry(81, 4, &huge),
            entry(81, 5, b"after the huge one"),
        ];
        rig.append(81, sent.clone()).await;
        let data = |entries: &[LogEntry]| -> Vec<Option<Vec<u8>>> {
            entries.iter().map(|e| e.data.clone()).collect()
        };
        let running = rig.engine.log_find(&step(81)).await.unwrap();
        assert!(data(&running) == data(&sent), "{d:?}: changed in the table");
        let json = rig.find_json(81).await;
        assert!(
            json == woodpecker_log_find(&db, 81).await,
            "{d:?}: differs from Woodpecker's LogFind"
        );

        rig.finish(81).await;
        let object = rig.object(81).await.expect("archived");
        assert!(
            data(&object) == data(&sent),
            "{d:?}: changed in the archive"
        );
        assert_eq!(db.count_log_rows(81).await, 0, "{d:?}");
        assert!(
            rig.find_json(81).await == json,
            "{d:?}: the archived log reads differently"
        );
    }
}

/// The step's previous object is damaged (not zstd; a valid object cut short): the run
/// fails, every retry fails, the damaged object is not replaced and no row is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_previous_object_fails_the_run_and_keeps_the_rows() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        // A valid object of step 92 to cut short.
        rig.append(92, lines(92, 0..200, "valid")).await;
        rig.finish(92).await;
        let (valid, info) = rig.direct.get(&key(92)).await.unwrap().unwrap();

        let scratch = tempfile::tempdir().unwrap();
        for (id, damaged) in [
            (91, b"this is not a zstd frame".to_vec()),
            (92, valid[..valid.len() / 2].to_vec()),
        ] {
            let path = scratch.path().join(format!("damaged-{id}"));
            std::fs::write(&path, &damaged).unwrap();
            rig.direct
                .put_file(&key(id), &path, &info.meta)
                .await
                .unwrap();
            let late = if id == 92 { 200..203 } else { 0..3 };
            rig.append(id, lines(id, late.clone(), "late")).await;
            rig.engine.step_finished(&step(id)).await;
            let failures = rig.engine.stats().archive_failures;
            rig.advance(FINALIZE).await;
            rig.retry_rounds().await;
            assert!(
                rig.engine.stats().archive_failures > failures,
                "{d:?}: step {id}: the run did not fail"
            );
            assert_eq!(db.count_log_rows(id).await, 3, "{d:?}: step {id}: rows");
            let (now, _) = rig.direct.get(&key(id)).await.unwrap().unwrap();
            assert!(now == damaged, "{d:?}: step {id}: the object was replaced");
            assert!(
                rig.engine.log_find(&step(id)).await.is_err(),
                "{d:?}: step {id}: a damaged archive must not read as a shorter log"
            );
        }
    }
}

/// A long line of one repeated byte (a progress bar redrawn with `\r`, `yes`) compresses
/// far beyond the read's plausibility bound (`format::bounded::MAX_COMPRESSION_RATIO`,
/// 1024): the object is stored, its rows deleted, and then LogFind refuses it as a
/// decompression bomb although its `uncompressed-size` metadata is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known issue in engine/src/format/bounded.rs (not database staging): an archived log compressing more than 1024:1 is unreadable"]
async fn a_5_mib_line_of_one_repeated_byte_reads_back_after_archiving() {
    let db = TestDb::sqlite().await;
    let (_dir, rig) = Rig::local(&db);
    rig.append(82, vec![entry(82, 0, &vec![b'='; 5 << 20])])
        .await;
    rig.finish(82).await;
    assert!(rig.object(82).await.is_some(), "archived");
    assert_eq!(db.count_log_rows(82).await, 0);
    let read = rig.engine.log_find(&step(82)).await.unwrap();
    assert_eq!(read.len(), 1);
}

/// An agent's retry of a batch holding line 0 arrives after the step was archived (and its
/// rows deleted), then the archive becomes unreachable: the rows are not the whole log, so
/// LogFind fails rather than answering the retried lines alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_retry_of_line_0_does_not_make_rows_the_whole_log() {
    for db in TestDb::every().await {
        let (_dir, rig) = Rig::local(&db);
        let d = db.driver;
        rig.append(54, lines(54, 0..5, "a")).await;
        rig.finish(54).await;
        assert_eq!(rig.object_texts(54).await, Some(expect(0..5, "a")), "{d:?}");
        assert_eq!(db.count_log_rows(54).await, 0, "{d:?}");
        rig.append(54, lines(54, 0..2, "a")).await;
        rig.switch.down.store(true, Ordering::SeqCst);
        if let Ok(read) = rig.engine.log_find(&step(54)).await {
            assert_eq!(texts(&read), expect(0..5, "a"), "{d:?}: a partial log");
        }
        rig.switch.down.store(false, Ordering::SeqCst);
        assert_eq!(rig.find(54).await, expect(0..5, "a"), "{d:?}");
    }
}
