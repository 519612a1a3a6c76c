//! Tests of interleavings that timing alone would hit only now and then: a test hook pauses
//! a spool reader at a chosen point, the test does what must not disturb it, then lets the
//! reader go on. No sleeps: each step waits for the one before it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::LocalDirStore;
use logservice::{LogEntry, LogService, Step, StepId};

use crate::{Clock, Engine, EngineSettings, ManualClock, SyncMode};

type Hook = Box<dyn FnOnce() + Send>;

/// What runs when the engine reaches a labelled point (once per hook).
static HOOKS: Mutex<Vec<(String, Hook)>> = Mutex::new(Vec::new());

/// Called by the engine at a point a test may pause: `opened <path>` right after a reader
/// opened a segment file, `repair <step>` before the torn tails of a step found at start
/// are cut.
pub(crate) fn reached(point: &str) {
    let hook = {
        let mut hooks = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        let found = hooks.iter().position(|(p, _)| p == point);
        found.map(|n| hooks.swap_remove(n).1)
    };
    if let Some(hook) = hook {
        hook();
    }
}

/// Failures a test makes the engine meet at a labelled point, once each: what a real disk
/// cannot be made to do on demand (an fsync that fails).
static FAULTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Called by the engine where a test may inject an I/O error: `fsync <path>` before a spool
/// file is flushed.
pub(crate) fn injected(point: &str) -> std::io::Result<()> {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    match faults.iter().position(|p| p == point) {
        Some(n) => {
            faults.swap_remove(n);
            Err(std::io::Error::other(format!(
                "injected failure at {point}"
            )))
        }
        None => Ok(()),
    }
}

/// Makes the engine fail the next time it reaches `point` (see [`injected`]).
pub(crate) fn fail_at(point: String) {
    FAULTS.lock().unwrap_or_else(|e| e.into_inner()).push(point);
}

/// Pauses the engine the next time it reaches `point` until the returned sender is used
/// (or dropped); the returned receiver says when it is there.
fn pause_at(
    point: String,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (there_tx, there_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hook: Hook = Box::new(move || {
        let _ = there_tx.send(());
        let _ = go_rx.recv();
    });
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((point, hook));
    (there_rx, go_tx)
}

/// Pauses the next reader that opens `path`, right after it did.
fn pause_reader_at(
    path: &Path,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    pause_at(format!("opened {}", path.display()))
}

fn step(id: i64) -> Step {
    Step {
        id,
        ..Step::default()
    }
}

fn entry(step_id: i64, line: i64, text: &str) -> LogEntry {
    LogEntry {
        step_id,
        line,
        data: Some(text.as_bytes().to_vec()),
        ..LogEntry::default()
    }
}

fn texts(entries: &[LogEntry]) -> Vec<(i64, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.line,
                String::from_utf8_lossy(e.data.as_deref().unwrap_or_default()).into(),
            )
        })
        .collect()
}

/// An engine on a manual clock that archives finished steps at the next pass, and whose
/// file pool only holds files given back (no background refill).
async fn engine(dir: &Path) -> (Arc<Engine>, ManualClock) {
    engine_syncing(dir, SyncMode::Interval).await
}

/// [`engine`] with the given `SPOOL_SYNC` mode.
async fn engine_syncing(dir: &Path, sync: SyncMode) -> (Arc<Engine>, ManualClock) {
    let mut settings = EngineSettings::new(dir.join("spool"));
    settings.finalize_delay = Duration::ZERO;
    settings.sync_interval = Duration::from_secs(3600);
    settings.sync = sync;
    let store = Arc::new(LocalDirStore::new(dir.join("archive")).unwrap());
    let clock = ManualClock::new();
    let engine = Engine::start_with_clock(settings, store, Clock::Manual(clock.clone()))
        .await
        .unwrap();
    (Arc::new(engine), clock)
}

/// Finding 4 of issue 12: a LogFind holding a segment open while the step is archived, its
/// segment removed and another step's first segment created, reads only its own step. (The
/// other step's record is shorter than the reader's limit on the segment it read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_the_lines_of_a_step_that_reuses_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = engine(dir.path()).await;
    engine
        .log_append(&step(1), vec![entry(1, 0, "a line of step 1")])
        .await
        .unwrap();
    engine.step_finished(&step(1)).await;
    let segment = dir.path().join("spool/steps/1.0.ndjson");
    let (opened, go) = pause_reader_at(&segment);
    let reader = tokio::spawn({
        let engine = engine.clone();
        async move { engine.log_find(&step(1)).await }
    });
    opened.await.unwrap();
    let held = std::fs::metadata(&segment).unwrap().ino();

    clock.settle().await;
    assert_eq!(engine.stats().archive_uploads, 1, "step 1 archived");
    assert!(!segment.exists(), "its segment removed");
    engine
        .log_append(&step(2), vec![entry(2, 7, "secret")])
        .await
        .unwrap();
    let reused = std::fs::metadata(dir.path().join("spool/steps/2.0.ndjson")).unwrap();
    go.send(()).unwrap();

    let found = reader.await.unwrap().unwrap();
    assert_eq!(texts(&found), [(0, "a line of step 1".to_string())]);
    assert_ne!(
        reused.ino(),
        held,
        "a file a reader holds is never recycled"
    );
}

/// The same for a reader outside the engine (`get` beside a running addon), which the engine
/// cannot know about: what it read from a file that left its path meanwhile is dropped (the
/// step's lines are in the object it reads next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_beside_the_engine_never_sees_another_steps_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = engine(dir.path()).await;
    engine
        .log_append(&step(1), vec![entry(1, 0, "a line of step 1")])
        .await
        .unwrap();
    engine.step_finished(&step(1)).await;
    let segment = dir.path().join("spool/steps/1.0.ndjson");
    let (opened, go) = pause_reader_at(&segment);
    let reader = tokio::spawn({
        let engine = engine.clone();
        async move {
            let id = StepId::new(1).unwrap();
            crate::read_step_log(engine.settings(), &**engine.store(), id).await
        }
    });
    opened.await.unwrap();
    clock.settle().await;
    assert_eq!(engine.stats().archive_uploads, 1, "step 1 archived");
    engine
        .log_append(&step(2), vec![entry(2, 7, "secret")])
        .await
        .unwrap();
    go.send(()).unwrap();

    let json = reader.await.unwrap().unwrap();
    let found: Vec<LogEntry> = serde_json::from_slice(&json).unwrap();
    assert_eq!(texts(&found), [(0, "a line of step 1".to_string())]);
}

/// A spool left by a crash: step 1 with lines 0..3 and a torn last record, step 2 with one
/// line. Returns the length of step 1's complete records.
async fn crashed_spool(dir: &Path) -> u64 {
    let (engine, _clock) = engine(dir).await;
    let lines = (0..3).map(|n| entry(1, n, "before the crash")).collect();
    engine.log_append(&step(1), lines).await.unwrap();
    engine
        .log_append(&step(2), vec![entry(2, 0, "other step")])
        .await
        .unwrap();
    engine.flush().await.unwrap();
    drop(engine);
    let segment = dir.join("spool/steps/1.0.ndjson");
    let complete = std::fs::metadata(&segment).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, br#"{"id":0,"step_id":1,"line":3,"da"#).unwrap();
    complete
}

/// Finding 1 of issue 12: calls are served while the torn tails of the steps found at start
/// are still being cut. Paused right before step 1's tail is cut (its archive lock held):
/// reads see every complete line, appends are kept, an archive run waits; once the cut is
/// done, the object holds every line and the torn record is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_appends_racing_recovery_keep_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let complete = crashed_spool(dir.path()).await;
    let segment = dir.path().join("spool/steps/1.0.ndjson");
    let spool = dir.path().join("spool");
    let (repairing, go) = pause_at(format!("repair 1 in {}", spool.display()));
    let (engine, clock) = engine(dir.path()).await;
    engine.ready().await.unwrap();
    repairing.await.unwrap();

    let before: Vec<_> = (0..3)
        .map(|n| (n, "before the crash".to_string()))
        .collect();
    assert_eq!(texts(&engine.log_find(&step(1)).await.unwrap()), before);
    engine
        .log_append(&step(1), vec![entry(1, 3, "during recovery")])
        .await
        .unwrap();
    let mut all = before.clone();
    all.push((3, "during recovery".to_string()));
    assert_eq!(texts(&engine.log_find(&step(1)).await.unwrap()), all);
    assert_eq!(
        texts(&engine.log_find(&step(2)).await.unwrap()),
        [(0, "other step".to_string())]
    );
    engine.step_finished(&step(1)).await;
    let archiving = tokio::spawn({
        let clock = clock.clone();
        async move { clock.settle().await }
    });
    assert!(
        std::fs::metadata(&segment).unwrap().len() > complete,
        "not cut yet"
    );

    go.send(()).unwrap();
    engine.recovered().await.unwrap();
    archiving.await.unwrap();
    assert_eq!(engine.stats().archive_uploads, 1);
    assert_eq!(texts(&engine.log_find(&step(1)).await.unwrap()), all);
    assert!(!segment.exists(), "archived and removed");
}

/// Calls made while another engine still holds the spool (an addon on its way out) wait for
/// the lock, and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_the_spool_is_open_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _clock) = engine(dir.path()).await;
    first
        .log_append(&step(1), vec![entry(1, 0, "first engine")])
        .await
        .unwrap();
    let (second, _clock) = engine(dir.path()).await;
    let append = tokio::spawn({
        let second = second.clone();
        async move {
            second
                .log_append(&step(1), vec![entry(1, 1, "second engine")])
                .await
        }
    });
    let first = Arc::into_inner(first).expect("only the test holds the first engine");
    first.shutdown().await.unwrap();
    append.await.unwrap().unwrap();
    assert_eq!(
        texts(&second.log_find(&step(1)).await.unwrap()),
        [
            (0, "first engine".to_string()),
            (1, "second engine".to_string())
        ]
    );
}

/// Finding 8 of issue 12: with `SPOOL_SYNC=always`, an append whose fsync fails is reported
/// failed and cut back off its segment, so neither a read nor the archive ever shows its
/// lines, and the appends after it read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_fsync_failed_is_never_read_or_archived() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = engine_syncing(dir.path(), SyncMode::Always).await;
    engine
        .log_append(&step(1), vec![entry(1, 0, "acknowledged")])
        .await
        .unwrap();
    let segment = dir.path().join("spool/steps/1.0.ndjson");
    fail_at(format!("fsync {}", segment.display()));
    let err = engine
        .log_append(&step(1), vec![entry(1, 1, "reported failed")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot fsync"), "{err}");
    engine
        .log_append(&step(1), vec![entry(1, 2, "acknowledged too")])
        .await
        .unwrap();
    let acknowledged = [
        (0, "acknowledged".to_string()),
        (2, "acknowledged too".to_string()),
    ];
    assert_eq!(
        texts(&engine.log_find(&step(1)).await.unwrap()),
        acknowledged
    );

    engine.step_finished(&step(1)).await;
    clock.settle().await;
    assert_eq!(engine.stats().archive_uploads, 1);
    assert!(!segment.exists(), "archived and removed");
    assert_eq!(
        texts(&engine.log_find(&step(1)).await.unwrap()),
        acknowledged
    );
}

/// Finding 8 of issue 12: LogDelete removes a step's files without holding the steps map.
/// Paused while it removes them, appends of another step and of the deleted step itself go
/// through, and no deleted line comes back, neither in reads nor in the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_delete_neither_wait_nor_bring_deleted_lines_back() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = engine(dir.path()).await;
    let deleted = (0..3).map(|n| entry(1, n, "deleted")).collect();
    engine.log_append(&step(1), deleted).await.unwrap();
    engine
        .log_append(&step(2), vec![entry(2, 0, "other step")])
        .await
        .unwrap();
    let spool = dir.path().join("spool");
    let (removing, go) = pause_at(format!("delete 1 in {}", spool.display()));
    let delete = tokio::spawn({
        let engine = engine.clone();
        async move { engine.log_delete(&step(1)).await }
    });
    removing.await.unwrap();

    let mut appends = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .log_append(&step(2), vec![entry(2, 1, "other step, meanwhile")])
                .await
                .unwrap();
            engine
                .log_append(&step(1), vec![entry(1, 1, "after the delete")])
                .await
                .unwrap();
        }
    });
    // A deadlock detector, not a timing: before, these appends waited for the delete, which
    // waits for this test.
    let appended = tokio::time::timeout(Duration::from_secs(30), &mut appends).await;
    go.send(()).unwrap();
    match appended {
        Ok(result) => result.unwrap(),
        Err(_) => {
            appends.await.unwrap();
            panic!("appends waited for the removal of another step's files");
        }
    }
    delete.await.unwrap().unwrap();

    let after = [(1, "after the delete".to_string())];
    assert_eq!(texts(&engine.log_find(&step(1)).await.unwrap()), after);
    assert_eq!(
        texts(&engine.log_find(&step(2)).await.unwrap()),
        [
            (0, "other step".to_string()),
            (1, "other step, meanwhile".to_string())
        ]
    );
    engine.step_finished(&step(1)).await;
    clock.settle().await;
    assert_eq!(engine.stats().archive_uploads, 1);
    assert_eq!(texts(&engine.log_find(&step(1)).await.unwrap()), after);
}

/// Woodpecker's `log_entries` as database staging and the legacy read-through both see it:
/// one row per `(step, line)`, the first write kept.
#[derive(Default)]
struct Rows(Mutex<std::collections::BTreeMap<(i64, i64), LogEntry>>);

impl Rows {
    fn of(&self, step: StepId) -> Vec<LogEntry> {
        let rows = self.0.lock().unwrap();
        rows.range((step.get(), i64::MIN)..=(step.get(), i64::MAX))
            .map(|(_, entry)| entry.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl crate::TableStaging for Rows {
    fn describe(&self) -> String {
        "log_entries in memory".into()
    }

    async fn append(
        &self,
        step: StepId,
        entries: &[LogEntry],
    ) -> Result<u64, crate::table::TableError> {
        let mut rows = self.0.lock().unwrap();
        let before = rows.len();
        for entry in entries {
            rows.entry((step.get(), entry.line))
                .or_insert_with(|| entry.clone());
        }
        Ok((rows.len() - before) as u64)
    }

    fn read(&self, step: StepId) -> crate::table::EntryStream<'_> {
        Box::pin(futures::stream::iter(self.of(step).into_iter().map(Ok)))
    }

    async fn staged_steps(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::table::StagedStep>, crate::table::TableError> {
        let mut counts = std::collections::BTreeMap::<i64, i64>::new();
        for &(step_id, _) in self.0.lock().unwrap().keys() {
            *counts.entry(step_id).or_default() += 1;
        }
        Ok(counts
            .range(after + 1..)
            .take(limit)
            .map(|(&step_id, &rows)| crate::table::StagedStep {
                step_id,
                rows,
                max_id: 0,
                last_created: i64::MAX,
            })
            .collect())
    }

    async fn delete_lines(
        &self,
        step: StepId,
        lines: &crate::table::LineRanges,
    ) -> Result<u64, crate::table::TableError> {
        let mut rows = self.0.lock().unwrap();
        let before = rows.len();
        for &(first, last) in lines.ranges() {
            rows.retain(|&(s, line), _| s != step.get() || !(first..=last).contains(&line));
        }
        Ok((before - rows.len()) as u64)
    }

    async fn delete_step(&self, step: StepId) -> Result<u64, crate::table::TableError> {
        let mut rows = self.0.lock().unwrap();
        let before = rows.len();
        rows.retain(|&(s, _), _| s != step.get());
        Ok((before - rows.len()) as u64)
    }
}

#[async_trait::async_trait]
impl crate::legacy::LegacyLogs for Rows {
    fn describe(&self) -> String {
        "log_entries in memory".into()
    }

    async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, crate::legacy::LegacyError> {
        Ok(self.of(id))
    }

    async fn delete(&self, id: StepId) -> Result<(), crate::legacy::LegacyError> {
        self.0.lock().unwrap().retain(|&(s, _), _| s != id.get());
        Ok(())
    }

    async fn step_ids(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, crate::legacy::LegacyError> {
        let mut ids: Vec<i64> = self.0.lock().unwrap().keys().map(|&(s, _)| s).collect();
        ids.dedup();
        Ok(ids.into_iter().filter(|&s| s > after).take(limit).collect())
    }

    async fn entries(
        &self,
        id: StepId,
        after_line: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, crate::legacy::LegacyError> {
        Ok(self
            .of(id)
            .into_iter()
            .filter(|e| after_line.is_none_or(|after| e.line > after))
            .take(limit)
            .collect())
    }

    async fn running(&self, _id: StepId) -> Result<bool, crate::legacy::LegacyError> {
        Ok(false)
    }
}

/// Switching from database staging back to the spool (TestStagingSwitchModes read 0 of 100
/// lines once in a clean-clone CI run): a read takes the step's rows, finds the spool
/// empty, and before it asks the legacy source (the same table) the move appends the rows to
/// the spool and deletes them. The read must not answer with the emptied table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_the_move_from_the_table_into_the_spool_sees_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _clock) = engine(dir.path()).await;
    let rows = Arc::new(Rows::default());
    let id = StepId::new(6).unwrap();
    let written: Vec<LogEntry> = (0..100)
        .map(|n| entry(6, n, "staged in the table"))
        .collect();
    crate::TableStaging::append(&*rows, id, &written)
        .await
        .unwrap();
    engine.set_legacy(crate::legacy::LegacySources::new(vec![rows.clone()]));
    engine.read_table_too(Some(rows.clone()));

    let (planned, go) = pause_at(format!("planned {id}"));
    let reader = tokio::spawn({
        let engine = engine.clone();
        async move { engine.log_find(&step(6)).await }
    });
    planned.await.unwrap();
    let moved = crate::table::drain_table(&*rows, 0, &engine).await.unwrap();
    assert_eq!(moved.entries, 100);
    assert!(rows.of(id).is_empty(), "the rows were deleted once moved");
    go.send(()).unwrap();

    let found = reader.await.unwrap().unwrap();
    assert_eq!(texts(&found), texts(&written));
}
