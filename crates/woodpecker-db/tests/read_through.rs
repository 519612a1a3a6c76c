//! Woodpecker's database as a legacy source, on real SQLite files and (when
//! `scripts/db/start.sh` ran) real PostgreSQL and MariaDB servers: reads equal to
//! Woodpecker's own `LogFind` query, read-through in the engine only where nothing else
//! holds the step, `LogDelete` removing the rows, and the bad cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archive::LocalDirStore;
use engine::legacy::{LegacyError, LegacyLogs, LegacySources};
use engine::{Engine, EngineSettings};
use logservice::{LogEntry, LogError, LogService, Step, StepId};
use woodpecker_db::testing::TestDb;
use woodpecker_db::{DataSource, Database, Driver};

fn entry(line: i64, data: Option<&[u8]>) -> LogEntry {
    LogEntry {
        line,
        time: 1_700_000_000 + line,
        data: data.map(<[u8]>::to_vec),
        entry_type: line % 3,
        ..LogEntry::default()
    }
}

fn lines(range: std::ops::Range<i64>) -> Vec<LogEntry> {
    range
        .map(|line| entry(line, Some(format!("line {line} of the step\n").as_bytes())))
        .collect()
}

/// The steps of the fixture, written as Woodpecker's database store writes them.
const STEPS: [i64; 6] = [11, 12, 13, 14, 15, 16];

/// A row with a negative step id (no Woodpecker step has one): never listed or served.
const NEGATIVE: i64 = -3;

async fn fill(db: &TestDb) {
    db.append(11, &lines(0..40)).await.unwrap();
    // Null, empty, non-UTF-8, multi-byte and an exit-code line.
    let odd = [
        entry(0, None),
        entry(1, Some(b"")),
        entry(2, Some(&[0xff, 0xfe, 0x00, b'\n', 0x80])),
        entry(3, Some("ünïcödé ✓ \u{1b}[31mred\u{1b}[0m".as_bytes())),
        LogEntry {
            entry_type: 2,
            ..entry(4, Some(b"0"))
        },
    ];
    db.append(12, &odd).await.unwrap();
    // Batches out of order, as agents retry them.
    db.append(13, &lines(10..20)).await.unwrap();
    db.append(13, &lines(0..10)).await.unwrap();
    db.append(13, &lines(20..25)).await.unwrap();
    // A retried batch overlapping stored lines is refused whole by the unique index.
    db.append(14, &lines(0..5)).await.unwrap();
    let duplicate = db.append(14, &lines(3..8)).await;
    assert!(
        duplicate.is_err(),
        "{:?}: the unique index must refuse",
        db.driver
    );
    assert_eq!(db.count_log_rows(14).await, 5);
    db.append(14, &lines(5..8)).await.unwrap();
    // More than one insert batch (Woodpecker inserts 1000 per statement).
    db.append(15, &lines(0..2500)).await.unwrap();
    // One long line.
    db.append(16, &[entry(0, Some(&vec![b'x'; 256 << 10]))])
        .await
        .unwrap();
    db.append(NEGATIVE, &lines(0..3)).await.unwrap();
}

fn json(entries: &[LogEntry]) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        logservice::push_entry(e, &mut out);
    }
    out.push(b']');
    out
}

fn step(id: i64) -> Step {
    Step {
        id,
        ..Step::default()
    }
}

/// A source that counts the reads reaching it: proves when the engine does NOT query.
struct Counting {
    inner: Arc<dyn LegacyLogs>,
    finds: AtomicUsize,
}

#[async_trait::async_trait]
impl LegacyLogs for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, LegacyError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.inner.find(id).await
    }
    async fn delete(&self, id: StepId) -> Result<(), LegacyError> {
        self.inner.delete(id).await
    }
    async fn step_ids(&self, after: i64, limit: usize) -> Result<Vec<i64>, LegacyError> {
        self.inner.step_ids(after, limit).await
    }
    async fn entries(
        &self,
        id: StepId,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LegacyError> {
        self.inner.entries(id, after, limit).await
    }
    async fn running(&self, id: StepId) -> Result<bool, LegacyError> {
        self.inner.running(id).await
    }
}

struct Addon {
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn engine_with(legacy: LegacySources) -> Addon {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = EngineSettings::new(dir.path().join("spool"));
    settings.finalize_delay = Duration::from_millis(20);
    let store = Arc::new(LocalDirStore::new(dir.path().join("archive")).unwrap());
    let engine = Engine::start(settings, store).await.unwrap();
    assert!(engine.set_legacy(legacy));
    Addon { engine, _dir: dir }
}

#[tokio::test]
async fn reads_equal_woodpeckers_own_log_find_for_every_step() {
    for db in TestDb::every().await {
        fill(&db).await;
        let database = db.database();
        let listed = database.log_step_ids(0, 1000).await.unwrap();
        assert_eq!(listed, STEPS, "{:?}", db.driver);
        let addon = engine_with(LegacySources::new(vec![Arc::new(database.clone())])).await;
        for id in STEPS.into_iter().chain([NEGATIVE]) {
            let reference = db.woodpecker_log_find(id).await;
            let ours = json(&database.log_find(id).await.unwrap());
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&reference),
                "{:?} step {id}",
                db.driver
            );
            if id > 0 {
                let served = addon.engine.log_find_json(&step(id)).await.unwrap();
                assert_eq!(
                    served, reference,
                    "{:?} step {id} through LogFind",
                    db.driver
                );
            }
        }
        // The reference really holds what was written (the comparison is not vacuous).
        let odd: Vec<LogEntry> = serde_json::from_slice(&db.woodpecker_log_find(12).await).unwrap();
        let data: Vec<Option<Vec<u8>>> = odd.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data[0], None, "{:?}: NULL stays null", db.driver);
        assert_eq!(
            data[1],
            Some(Vec::new()),
            "{:?}: empty stays empty",
            db.driver
        );
        assert_eq!(
            data[2].as_deref(),
            Some(&[0xff, 0xfe, 0x00, b'\n', 0x80][..])
        );
        let out_of_order: Vec<LogEntry> =
            serde_json::from_slice(&addon.engine.log_find_json(&step(13)).await.unwrap()).unwrap();
        assert_eq!(
            out_of_order.iter().map(|e| e.line).collect::<Vec<_>>(),
            (0..25).collect::<Vec<_>>()
        );
        assert!(matches!(
            addon.engine.log_find_json(&step(NEGATIVE)).await,
            Err(LogError::InvalidStepId(NEGATIVE))
        ));
    }
}

#[tokio::test]
async fn pages_and_lists_cover_a_step_in_bounded_pieces() {
    for db in TestDb::every().await {
        fill(&db).await;
        let database = db.database();
        let id = StepId::new(15).unwrap();
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = LegacyLogs::entries(database, id, after, 700).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 700);
            after = page.last().map(|e| e.line);
            paged.extend(page);
        }
        assert_eq!(
            paged,
            database.log_find(15).await.unwrap(),
            "{:?}",
            db.driver
        );
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = LegacyLogs::step_ids(database, after, 4).await.unwrap();
            let Some(&last) = page.last() else { break };
            after = last;
            ids.extend(page);
        }
        assert_eq!(ids, STEPS, "{:?}", db.driver);
    }
}

#[tokio::test]
async fn no_query_when_the_archive_or_the_spool_holds_the_step() {
    for db in TestDb::every().await {
        fill(&db).await;
        let counting = Arc::new(Counting {
            inner: Arc::new(db.database().clone()),
            finds: AtomicUsize::new(0),
        });
        let addon = engine_with(LegacySources::new(vec![counting.clone()])).await;
        let engine = &addon.engine;

        // Nothing in the addon: one query, Woodpecker's answer.
        assert_eq!(
            engine.log_find_json(&step(11)).await.unwrap(),
            db.woodpecker_log_find(11).await
        );
        assert_eq!(counting.finds.load(Ordering::SeqCst), 1);

        // A step with spooled lines: served from the spool, no query.
        let new = step(500);
        engine.log_append(&new, lines(0..3)).await.unwrap();
        assert_eq!(engine.log_find(&new).await.unwrap().len(), 3);
        assert_eq!(counting.finds.load(Ordering::SeqCst), 1);

        // Archived: served from the object, no query.
        engine.step_finished(&new).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while engine.stats().archive_uploads == 0 || engine.stats().steps_pending > 0 {
            assert!(std::time::Instant::now() < deadline, "not archived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(engine.log_find(&new).await.unwrap().len(), 3);
        assert_eq!(counting.finds.load(Ordering::SeqCst), 1, "{:?}", db.driver);
    }
}

#[tokio::test]
async fn log_delete_removes_the_rows_and_only_the_steps() {
    for db in TestDb::every().await {
        fill(&db).await;
        let addon = engine_with(LegacySources::new(vec![Arc::new(db.database().clone())])).await;
        assert_eq!(db.count_log_rows(15).await, 2500);
        addon.engine.log_delete(&step(15)).await.unwrap();
        assert_eq!(db.count_log_rows(15).await, 0, "{:?}", db.driver);
        assert_eq!(addon.engine.log_find_json(&step(15)).await.unwrap(), b"[]");
        assert_eq!(db.count_log_rows(11).await, 40, "other steps stay");
        // Deleting again (nothing left anywhere) succeeds.
        addon.engine.log_delete(&step(15)).await.unwrap();
    }
}

#[tokio::test]
async fn running_steps_are_recognised() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for db in TestDb::every().await {
        db.add_step(1, 1, 1, "running", 0).await;
        db.add_step(2, 1, 2, "pending", 0).await;
        db.add_step(3, 1, 3, "success", now - 3600).await;
        db.add_step(4, 1, 4, "failure", now - 5).await;
        let database = db.database();
        let running = |id| async move { database.running(StepId::new(id).unwrap()).await.unwrap() };
        assert!(running(1).await, "{:?}", db.driver);
        assert!(running(2).await);
        assert!(!running(3).await);
        assert!(
            running(4).await,
            "finished moments ago: late lines may still come"
        );
        assert!(!running(99).await, "a deleted step");
    }
}

#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    for driver in [Driver::Sqlite, Driver::Postgres, Driver::MySql] {
        let Some(db) = TestDb::create_empty(driver).await else {
            continue;
        };
        let error = db.database().check().await.unwrap_err();
        assert!(error.is_missing_table(), "{driver}: {error}");
        assert!(!error.is_unavailable(), "{driver}: {error}");
        let text = error.to_string();
        assert!(text.contains("log_entries"), "{text}");
        assert!(text.contains("Woodpecker's database"), "{text}");
        let addon = engine_with(LegacySources::new(vec![Arc::new(db.database().clone())])).await;
        let Err(LogError::Storage(message)) = addon.engine.log_find_json(&step(1)).await else {
            panic!("{driver}: LogFind must fail");
        };
        assert!(message.contains("legacy log of step 1"), "{message}");
    }
}

#[tokio::test]
async fn unreachable_databases_name_the_variable_and_mask_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/woodpecker.sqlite");
    for (driver, dsn) in [
        (
            Driver::Postgres,
            "postgres://wp:s3cret@127.0.0.1:1/wp?sslmode=disable&connect_timeout=1".to_owned(),
        ),
        (Driver::Postgres, "host=127.0.0.1 port=1 user=wp password=s3cret dbname=wp sslmode=disable connect_timeout=1".to_owned()),
        (Driver::MySql, "wp:s3cret@tcp(127.0.0.1:1)/wp?timeout=1s".to_owned()),
        (Driver::Sqlite, missing.to_string_lossy().into_owned()),
    ] {
        let source =
            DataSource::parse(driver, "WOODPECKER_DATABASE_DATASOURCE", &dsn).unwrap();
        let error = Database::connect(source).await.unwrap_err();
        let text = error.to_string();
        assert!(error.is_unavailable(), "{driver}: {text}");
        assert!(text.contains("WOODPECKER_DATABASE_DATASOURCE="), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(driver.name()), "{text}");
        if driver != Driver::Sqlite {
            assert!(text.contains("***"), "{text}");
        }
        // As a legacy source, the outage is reported as one (retry later).
        let db = Database::connect_lazy(
            DataSource::parse(driver, "WOODPECKER_DATABASE_DATASOURCE", &dsn).unwrap(),
        );
        let error = LegacyLogs::find(&db, StepId::new(1).unwrap()).await.unwrap_err();
        assert!(matches!(error, LegacyError::Unavailable { .. }), "{error}");
    }
}
