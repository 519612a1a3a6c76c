//! Tests of interleavings that timing alone would hit only now and then: a test hook pauses
//! a spool reader at a chosen point, the test does what must not disturb it, then lets the
//! reader go on. No sleeps: each step waits for the one before it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archive::LocalDirStore;
use logservice::{LogEntry, LogService, Step, StepId};

use crate::{Clock, Engine, EngineSettings, ManualClock};

type Hook = Box<dyn FnOnce() + Send>;

/// What runs when a reader has just opened the spool file at a path (once per hook).
static SEGMENT_OPENED: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

/// Called by the spool's readers right after they open a segment file.
pub(crate) fn segment_opened(path: &Path) {
    let hook = {
        let mut hooks = SEGMENT_OPENED.lock().unwrap_or_else(|e| e.into_inner());
        let found = hooks.iter().position(|(p, _)| p == path);
        found.map(|n| hooks.swap_remove(n).1)
    };
    if let Some(hook) = hook {
        hook();
    }
}

/// Pauses the next reader that opens `path` until the returned sender is used (or
/// dropped); the returned receiver says when the reader holds the file.
fn pause_reader_at(
    path: &Path,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hook: Hook = Box::new(move || {
        let _ = opened_tx.send(());
        let _ = go_rx.recv();
    });
    SEGMENT_OPENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.to_owned(), hook));
    (opened_rx, go_tx)
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
    let mut settings = EngineSettings::new(dir.join("spool"));
    settings.finalize_delay = Duration::ZERO;
    settings.sync_interval = Duration::from_secs(3600);
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
