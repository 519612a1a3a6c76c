//! Woodpecker's file log store directory as a legacy source: `<step id>.json` NDJSON files
//! written as Woodpecker's file store writes them (one `json.Marshal`ed entry per line,
//! appended batch by batch, retries included).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use archive::LocalDirStore;
use engine::legacy::{LegacyError, LegacyLogs, LegacySources};
use engine::{Engine, EngineSettings};
use logservice::{LogEntry, LogService, Step, StepId};
use woodpecker_db::FileStoreLogs;
use woodpecker_db::testing::TestDb;

fn entry(step_id: i64, line: i64, data: Option<&[u8]>) -> LogEntry {
    LogEntry {
        step_id,
        line,
        time: 100 + line,
        data: data.map(<[u8]>::to_vec),
        ..LogEntry::default()
    }
}

/// Appends a batch as Woodpecker's file store does.
fn append(dir: &Path, step_id: i64, batch: &[LogEntry]) {
    use std::io::Write;
    let mut bytes = Vec::new();
    for e in batch {
        logservice::push_entry(e, &mut bytes);
        bytes.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{step_id}.json")))
        .unwrap();
    file.write_all(&bytes).unwrap();
}

fn id(n: i64) -> StepId {
    StepId::new(n).unwrap()
}

#[tokio::test]
async fn files_read_by_line_first_write_winning() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStoreLogs::new(dir.path());
    append(
        dir.path(),
        7,
        &[entry(7, 2, Some(b"two")), entry(7, 3, None)],
    );
    // A retried batch (line 2 again, other bytes) and an earlier batch arriving late.
    append(
        dir.path(),
        7,
        &[entry(7, 2, Some(b"retry")), entry(7, 0, Some(b""))],
    );
    append(dir.path(), 7, &[entry(7, 1, Some(&[0xff, 0x00]))]);
    std::fs::write(dir.path().join("8.json"), "\n  \n").unwrap();
    let found = store.find(id(7)).await.unwrap();
    let got: Vec<(i64, Option<Vec<u8>>)> = found.iter().map(|e| (e.line, e.data.clone())).collect();
    assert_eq!(
        got,
        [
            (0, Some(Vec::new())),
            (1, Some(vec![0xff, 0x00])),
            (2, Some(b"two".to_vec())),
            (3, None)
        ]
    );
    assert!(
        store.find(id(8)).await.unwrap().is_empty(),
        "blank lines are skipped"
    );
    assert!(
        store.find(id(9)).await.unwrap().is_empty(),
        "no file, no log"
    );
    // Pages agree with the whole read, bounded in size.
    let first = store.entries(id(7), None, 2).await.unwrap();
    let rest = store.entries(id(7), Some(1), 10).await.unwrap();
    assert_eq!([first, rest].concat(), found);
}

#[tokio::test]
async fn lists_step_files_only_and_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStoreLogs::new(dir.path());
    for step in [30, 4, 12, 100] {
        append(dir.path(), step, &[entry(step, 0, Some(b"x"))]);
    }
    for other in ["notes.txt", "-3.json", "12.json.tmp", "x1.json"] {
        std::fs::write(dir.path().join(other), "{}").unwrap();
    }
    assert_eq!(store.step_ids(0, 10).await.unwrap(), [4, 12, 30, 100]);
    assert_eq!(store.step_ids(4, 2).await.unwrap(), [12, 30]);
    store.delete(id(12)).await.unwrap();
    assert!(!dir.path().join("12.json").exists());
    store.delete(id(12)).await.unwrap();
    assert_eq!(store.step_ids(0, 10).await.unwrap(), [4, 30, 100]);
    assert!(store.running(id(4)).await.unwrap(), "just written");
    assert!(!store.running(id(5)).await.unwrap());
}

#[tokio::test]
async fn a_damaged_file_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), 5, &[entry(5, 0, Some(b"ok"))]);
    std::fs::write(
        dir.path().join("6.json"),
        "{\"line\":0,\"data\":\"b2s=\"}\n{\"line\":1,\"data\":\"%%\"}\n",
    )
    .unwrap();
    let error = FileStoreLogs::new(dir.path())
        .find(id(6))
        .await
        .unwrap_err();
    assert!(matches!(error, LegacyError::Failed { .. }));
    let text = error.to_string();
    assert!(text.contains("6.json: line 2"), "{text}");
    let missing = FileStoreLogs::new(dir.path().join("unmounted"));
    assert!(matches!(
        missing.step_ids(0, 10).await.unwrap_err(),
        LegacyError::Unavailable { .. }
    ));
}

/// Read-through and LogDelete with both sources: the database first, then the files;
/// LogDelete removes the step from both.
#[tokio::test]
async fn the_engine_reads_and_deletes_both_sources() {
    let db = TestDb::sqlite().await;
    let files = tempfile::tempdir().unwrap();
    db.append(1, &[entry(1, 0, Some(b"from the database"))])
        .await
        .unwrap();
    append(files.path(), 2, &[entry(2, 0, Some(b"from a file"))]);
    append(files.path(), 1, &[entry(1, 0, Some(b"stale file copy"))]);

    let dir = tempfile::tempdir().unwrap();
    let mut settings = EngineSettings::new(dir.path().join("spool"));
    settings.finalize_delay = Duration::from_millis(20);
    let store = Arc::new(LocalDirStore::new(dir.path().join("archive")).unwrap());
    let engine = Engine::start(settings, store).await.unwrap();
    engine.set_legacy(LegacySources::new(vec![
        Arc::new(db.database().clone()),
        Arc::new(FileStoreLogs::new(files.path())),
    ]));
    let step = |id| Step {
        id,
        ..Step::default()
    };
    let data = |entries: Vec<LogEntry>| -> Vec<Vec<u8>> {
        entries.into_iter().map(|e| e.data.unwrap()).collect()
    };
    assert_eq!(
        data(engine.log_find(&step(1)).await.unwrap()),
        [b"from the database".to_vec()]
    );
    assert_eq!(
        data(engine.log_find(&step(2)).await.unwrap()),
        [b"from a file".to_vec()]
    );
    engine.log_delete(&step(1)).await.unwrap();
    assert_eq!(db.count_log_rows(1).await, 0);
    assert!(
        !files.path().join("1.json").exists(),
        "every legacy copy goes"
    );
    assert!(engine.log_find(&step(1)).await.unwrap().is_empty());
    engine.log_delete(&step(2)).await.unwrap();
    assert!(!files.path().join("2.json").exists());
}

/// An unreachable database does not hide the file store's copy; a step neither has is an
/// error then (the database might hold it), not an empty log.
#[tokio::test]
async fn a_failing_source_does_not_hide_another() {
    use woodpecker_db::{DataSource, Database, Driver};
    let files = tempfile::tempdir().unwrap();
    append(files.path(), 3, &[entry(3, 0, Some(b"kept in a file"))]);
    let down = Database::connect_lazy(
        DataSource::parse(
            Driver::MySql,
            "WOODPECKER_DATABASE_DATASOURCE",
            "wp:pw@tcp(127.0.0.1:1)/wp?timeout=1s",
        )
        .unwrap(),
    );
    let sources = LegacySources::new(vec![
        Arc::new(down),
        Arc::new(FileStoreLogs::new(files.path())),
    ]);
    let found = sources.find(id(3)).await.unwrap();
    assert_eq!(found[0].data.as_deref(), Some(&b"kept in a file"[..]));
    assert!(matches!(
        sources.find(id(4)).await,
        Err(LegacyError::Unavailable { .. })
    ));
}
