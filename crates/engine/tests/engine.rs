//! The engine against a real spool directory and a real `LocalDirStore`.

mod common;

use archive::ObjectStore;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use logservice::{LogEntry, LogError, LogService, MemoryStore};

const WAIT: Duration = Duration::from_secs(10);

/// Resent and reordered batches, interleaved steps: the engine reads exactly like the
/// reference store, before archiving, after it, and after late lines are merged in.
///
/// On the real clock: the end-to-end check of the schedule's timers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_match_the_reference_across_spool_and_archive() {
    let h = Harness::real_time(|_| {}).await;
    let reference = MemoryStore::new();
    let batches: Vec<(i64, Vec<LogEntry>)> = vec![
        (1, vec![entry(1, 2, "c"), entry(1, 0, "a")]),
        (2, vec![entry(2, 0, "other step")]),
        (1, vec![entry(1, 1, "b"), entry(1, 2, "resent c")]),
        (1, vec![entry(1, 5, "f"), entry(1, 3, "d")]),
        (1, vec![entry(1, 0, "resent a"), entry(1, 4, "e")]),
    ];
    for (id, batch) in &batches {
        h.engine
            .log_append(&step(*id), batch.clone())
            .await
            .unwrap();
        reference
            .log_append(&step(*id), batch.clone())
            .await
            .unwrap();
    }
    let expected = reference.log_find(&step(1)).await.unwrap();
    assert_eq!(h.engine.log_find(&step(1)).await.unwrap(), expected);

    h.engine.step_finished(&step(1)).await;
    wait_until("step 1 archived", WAIT, async || h.uploads() == 1).await;
    assert_eq!(h.object(1).await.unwrap(), expected);
    wait_until("spool of step 1 emptied", WAIT, async || {
        h.segments(1).is_empty()
    })
    .await;
    assert_eq!(h.engine.log_find(&step(1)).await.unwrap(), expected);
    // Step 2 never finished: still staged, still readable.
    assert_eq!(
        texts(&h.engine.log_find(&step(2)).await.unwrap()),
        vec![(0, "other step".into())]
    );

    // Late lines, one of them a resend of an archived line: the archived line wins.
    let late = vec![entry(1, 7, "h"), entry(1, 3, "late d"), entry(1, 6, "g")];
    h.engine.log_append(&step(1), late.clone()).await.unwrap();
    reference.log_append(&step(1), late).await.unwrap();
    let expected = reference.log_find(&step(1)).await.unwrap();
    assert_eq!(h.engine.log_find(&step(1)).await.unwrap(), expected);
    wait_until("late lines re-archived", WAIT, async || h.uploads() == 2).await;
    assert_eq!(h.object(1).await.unwrap(), expected);
    assert_eq!(h.engine.log_find(&step(1)).await.unwrap(), expected);
    wait_until("spool of step 1 emptied", WAIT, async || {
        h.segments(1).is_empty()
    })
    .await;
}

/// `data` keeps nil apart from empty, binary bytes, and every other field as sent.
#[tokio::test]
async fn entries_come_back_exactly_as_sent() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    let sent = vec![
        LogEntry {
            id: 9,
            step_id: 3,
            time: 1_700_000_000,
            line: 0,
            data: None,
            entry_type: 2,
        },
        LogEntry {
            id: 0,
            step_id: 3,
            time: -1,
            line: 1,
            data: Some(vec![]),
            entry_type: 1,
        },
        LogEntry {
            id: 0,
            step_id: 99,
            time: 5,
            line: 2,
            data: Some(vec![0, 0xff, b'\n', b'"']),
            entry_type: 7,
        },
    ];
    h.engine.log_append(&step(3), sent.clone()).await.unwrap();
    assert_eq!(h.engine.log_find(&step(3)).await.unwrap(), sent);
    h.engine.step_finished(&step(3)).await;
    h.advance(Duration::ZERO).await;
    assert_eq!(h.uploads(), 1, "archived");
    assert_eq!(h.object(3).await.unwrap(), sent);
    assert_eq!(h.engine.log_find(&step(3)).await.unwrap(), sent);
}

/// The agent's last batch lands ~0.1 s after StepFinished: it is in the first object.
/// Lines long after the archive exists are merged into it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_lines_after_finish_and_after_archive() {
    let h = Harness::new(|s| s.finalize_delay = Duration::from_millis(500)).await;
    h.engine
        .log_append(&step(4), vec![entry(4, 0, "a"), entry(4, 1, "b")])
        .await
        .unwrap();
    h.engine.step_finished(&step(4)).await;
    h.advance(Duration::from_millis(100)).await;
    h.engine
        .log_append(&step(4), vec![entry(4, 2, "c")])
        .await
        .unwrap();
    // The grace period counts from the last line.
    h.advance(Duration::from_millis(499)).await;
    assert_eq!(h.uploads(), 0, "archived before the grace period");
    h.advance(Duration::from_millis(1)).await;
    assert_eq!(h.uploads(), 1, "archived");
    assert_eq!(
        texts(&h.object(4).await.unwrap()),
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );

    h.engine
        .log_append(&step(4), vec![entry(4, 4, "e"), entry(4, 3, "d")])
        .await
        .unwrap();
    // Readable right away, before the re-archive.
    assert_eq!(h.engine.log_find(&step(4)).await.unwrap().len(), 5);
    h.advance(Duration::from_millis(500)).await;
    assert_eq!(h.uploads(), 2, "re-archived");
    let lines: Vec<i64> = h.object(4).await.unwrap().iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![0, 1, 2, 3, 4]);
    assert!(h.segments(4).is_empty(), "spool emptied");
}

/// Lines that arrive while an upload is in flight go to a new segment and survive the
/// deletion of the archived one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_during_an_upload_are_kept() {
    let h = Harness::real_time(|s| s.finalize_delay = Duration::ZERO).await;
    h.store.hold_puts.store(true, Ordering::SeqCst);
    h.engine
        .log_append(&step(5), vec![entry(5, 0, "a")])
        .await
        .unwrap();
    h.engine.step_finished(&step(5)).await;
    wait_until("upload started", WAIT, async || {
        h.store.puts_in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    h.engine
        .log_append(&step(5), vec![entry(5, 1, "during upload")])
        .await
        .unwrap();
    h.store.hold_puts.store(false, Ordering::SeqCst);
    wait_until("both archived", WAIT, async || {
        h.object(5).await.is_some_and(|o| o.len() == 2)
    })
    .await;
    wait_until("spool emptied", WAIT, async || h.segments(5).is_empty()).await;
    assert_eq!(h.engine.log_find(&step(5)).await.unwrap().len(), 2);
}

/// The archive is down for a while: appends never fail, reads are served from the spool,
/// and once it is back everything is archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_outage_loses_nothing() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    h.store.down.store(true, Ordering::SeqCst);
    for line in 0..50 {
        h.engine
            .log_append(&step(6), vec![entry(6, line, "x")])
            .await
            .unwrap();
    }
    h.engine.step_finished(&step(6)).await;
    h.advance(Duration::ZERO).await;
    h.advance(RETRY_MAX).await;
    h.advance(RETRY_MAX).await;
    assert!(
        h.engine.stats().archive_failures >= 3,
        "several failed attempts"
    );
    assert_eq!(
        h.engine.stats().archive_failures,
        3,
        "one attempt per retry"
    );
    assert_eq!(h.engine.log_find(&step(6)).await.unwrap().len(), 50);
    // A step nobody knows cannot be answered while the archive is down: the error says why.
    let err = h.engine.log_find(&step(77)).await.unwrap_err().to_string();
    assert!(
        err.contains("test outage") && err.contains("step 77"),
        "{err}"
    );
    assert_eq!(
        h.segments(6).len(),
        1,
        "spool must keep the lines meanwhile"
    );

    h.store.down.store(false, Ordering::SeqCst);
    h.engine
        .log_append(&step(6), vec![entry(6, 50, "after outage")])
        .await
        .unwrap();
    h.advance(RETRY_MAX).await;
    assert!(
        h.object(6).await.is_some_and(|o| o.len() == 51),
        "archived after the outage"
    );
    assert!(h.segments(6).is_empty(), "spool emptied");
    assert_eq!(h.engine.log_find(&step(6)).await.unwrap().len(), 51);
}

/// Uploads that fail a few times are retried until they succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_are_retried() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    h.store.fail_puts.store(3, Ordering::SeqCst);
    h.engine
        .log_append(&step(8), vec![entry(8, 0, "a")])
        .await
        .unwrap();
    h.engine.step_finished(&step(8)).await;
    h.advance(Duration::ZERO).await;
    for failures in 1..=3 {
        assert_eq!(h.engine.stats().archive_failures, failures);
        assert_eq!(h.uploads(), 0);
        h.advance(RETRY_MAX).await;
    }
    assert_eq!(h.uploads(), 1, "archived");
    assert_eq!(h.engine.stats().archive_failures, 3);
    assert_eq!(texts(&h.object(8).await.unwrap()), vec![(0, "a".into())]);
}

/// No StepFinished (a cancelled step): the sweeper archives it after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_archives_steps_that_never_finish() {
    let h = Harness::new(|s| s.idle_timeout = Duration::from_millis(400)).await;
    h.engine
        .log_append(&step(10), vec![entry(10, 0, "a")])
        .await
        .unwrap();
    h.advance(Duration::from_millis(399)).await;
    assert_eq!(h.uploads(), 0, "archived before the idle timeout");
    h.advance(Duration::from_millis(1)).await;
    assert_eq!(h.uploads(), 1, "swept");
    assert_eq!(texts(&h.object(10).await.unwrap()), vec![(0, "a".into())]);
}

/// At most `archive_concurrency` uploads run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_bounded() {
    let h = Harness::real_time(|s| {
        s.finalize_delay = Duration::ZERO;
        s.archive_concurrency = 2;
    })
    .await;
    h.store.hold_puts.store(true, Ordering::SeqCst);
    for id in 20..26 {
        h.engine
            .log_append(&step(id), vec![entry(id, 0, "a")])
            .await
            .unwrap();
        h.engine.step_finished(&step(id)).await;
    }
    // Builds run at idle CPU priority, so on a busy machine the first two uploads may take
    // a while to start: wait for them, then give a third the chance to start were the
    // bound broken.
    wait_until("two uploads held", WAIT, async || {
        h.store.puts_in_flight.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.store.max_puts_in_flight.load(Ordering::SeqCst), 2);
    h.store.hold_puts.store(false, Ordering::SeqCst);
    wait_until("all archived", WAIT, async || h.uploads() == 6).await;
    assert_eq!(h.store.max_puts_in_flight.load(Ordering::SeqCst), 2);
}

/// LogDelete removes object, spool and marker; it is idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_everything() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    h.engine
        .log_append(&step(11), vec![entry(11, 0, "secret")])
        .await
        .unwrap();
    h.engine.step_finished(&step(11)).await;
    h.advance(Duration::ZERO).await;
    assert_eq!(h.uploads(), 1, "archived");
    h.engine
        .log_append(&step(11), vec![entry(11, 1, "late secret")])
        .await
        .unwrap();
    assert_eq!(h.segments(11).len(), 1);

    h.engine.log_delete(&step(11)).await.unwrap();
    assert!(h.engine.log_find(&step(11)).await.unwrap().is_empty());
    assert!(h.object(11).await.is_none());
    let left: Vec<_> = std::fs::read_dir(h.spool_dir().join("steps"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
    h.engine.log_delete(&step(11)).await.unwrap();
    h.engine.log_delete(&step(12345)).await.unwrap();
    h.advance(Duration::from_secs(60)).await;
    assert!(h.object(11).await.is_none(), "deleted log resurfaced");
}

/// An upload in flight during LogDelete, and an archive run waiting for a retry, cannot
/// bring a deleted log back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_beats_pending_archives() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    // In flight.
    h.store.hold_puts.store(true, Ordering::SeqCst);
    h.engine
        .log_append(&step(13), vec![entry(13, 0, "secret")])
        .await
        .unwrap();
    h.engine.step_finished(&step(13)).await;
    h.clock().advance(Duration::ZERO);
    wait_until("upload started", WAIT, async || {
        h.store.puts_in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let step13 = step(13);
    let (deleted, ()) = tokio::join!(h.engine.log_delete(&step13), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.store.hold_puts.store(false, Ordering::SeqCst);
    });
    deleted.unwrap();
    assert!(h.object(13).await.is_none());

    // Waiting for a retry.
    h.store.fail_puts.store(u32::MAX, Ordering::SeqCst);
    h.engine
        .log_append(&step(14), vec![entry(14, 0, "secret")])
        .await
        .unwrap();
    h.engine.step_finished(&step(14)).await;
    h.advance(Duration::ZERO).await;
    assert!(h.engine.stats().archive_failures >= 1, "a failed attempt");
    h.engine.log_delete(&step(14)).await.unwrap();
    h.store.fail_puts.store(0, Ordering::SeqCst);
    h.advance(Duration::from_secs(60)).await;
    assert!(h.object(13).await.is_none(), "step 13 resurfaced");
    assert!(h.object(14).await.is_none(), "step 14 resurfaced");
    assert!(h.engine.log_find(&step(14)).await.unwrap().is_empty());
    assert!(h.segments(13).is_empty() && h.segments(14).is_empty());
}

#[tokio::test]
async fn invalid_step_ids_are_refused_clearly() {
    let h = Harness::new(|_| {}).await;
    for id in [0, -1, i64::MIN] {
        let err = h
            .engine
            .log_append(&step(id), vec![entry(id, 0, "x")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, LogError::InvalidStepId(n) if n == id),
            "{err}"
        );
        assert!(
            err.to_string().contains("not a valid Woodpecker step id"),
            "{err}"
        );
        assert!(h.engine.log_find(&step(id)).await.is_err());
        assert!(h.engine.log_delete(&step(id)).await.is_err());
        h.engine.step_finished(&step(id)).await;
    }
    let left: Vec<_> = std::fs::read_dir(h.spool_dir().join("steps"))
        .unwrap()
        .collect();
    assert!(left.is_empty());
}

/// A damaged object gives an error naming it; other steps are unaffected; its late lines
/// stay staged (archiving cannot merge into garbage) instead of being lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_object_is_a_clear_error_and_harms_no_other_step() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    for id in [15, 16] {
        h.engine
            .log_append(&step(id), vec![entry(id, 0, "fine")])
            .await
            .unwrap();
        h.engine.step_finished(&step(id)).await;
    }
    h.advance(Duration::ZERO).await;
    assert_eq!(h.uploads(), 2, "archived");
    let key = h.engine.object_key(logservice::StepId::new(15).unwrap());
    let garbage = h.dir.path().join("garbage");
    std::fs::write(&garbage, b"\x28\xb5\x2f\xfd this is not what we wrote").unwrap();
    let (_, info) = h.store.inner.get(&key).await.unwrap().unwrap();
    h.store
        .inner
        .put_file(&key, &garbage, &info.meta)
        .await
        .unwrap();

    let err = h.engine.log_find(&step(15)).await.unwrap_err().to_string();
    assert!(err.contains("corrupt") && err.contains(&key), "{err}");
    assert_eq!(
        texts(&h.engine.log_find(&step(16)).await.unwrap()),
        vec![(0, "fine".into())]
    );

    h.engine
        .log_append(&step(15), vec![entry(15, 1, "late")])
        .await
        .unwrap();
    h.advance(Duration::ZERO).await;
    assert!(
        h.engine.stats().archive_failures >= 1,
        "a failed re-archive"
    );
    assert_eq!(h.segments(15).len(), 1, "late lines must stay staged");
    // Deleting the damaged log works and clears the way.
    h.engine.log_delete(&step(15)).await.unwrap();
    assert!(h.engine.log_find(&step(15)).await.unwrap().is_empty());
}

/// Access denied for a step with no staged lines names the cause.
#[tokio::test]
async fn denied_store_errors_name_the_cause() {
    let h = Harness::new(|_| {}).await;
    h.store.denied.store(true, Ordering::SeqCst);
    let err = h.engine.log_find(&step(30)).await.unwrap_err().to_string();
    assert!(err.contains("AccessDenied"), "{err}");
    let err = h
        .engine
        .log_delete(&step(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AccessDenied"), "{err}");
    // Appends do not touch the store.
    h.engine
        .log_append(&step(30), vec![entry(30, 0, "a")])
        .await
        .unwrap();
}

/// `always` fsyncs each append; the behaviour is otherwise the same.
#[tokio::test]
async fn sync_always_mode_appends() {
    let h = Harness::new(|s| s.sync = engine::SyncMode::Always).await;
    h.engine
        .log_append(&step(31), vec![entry(31, 0, "a")])
        .await
        .unwrap();
    assert_eq!(h.engine.log_find(&step(31)).await.unwrap().len(), 1);
}

/// Spool directories are private (logs can hold secrets).
#[tokio::test]
async fn spool_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(|_| {}).await;
    h.engine
        .log_append(&step(32), vec![entry(32, 0, "a")])
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.spool_dir()), 0o700);
    assert_eq!(mode(&h.spool_dir().join("steps")), 0o700);
    assert_eq!(mode(&h.segments(32)[0]), 0o600);
}

/// Two engines never share a spool: the second starts (the spool opens in the background),
/// then reports the spool in use, and so does every call.
#[tokio::test]
async fn a_spool_in_use_is_refused() {
    let h = Harness::new(|_| {}).await;
    let second = engine::Engine::start(fast_settings(h.spool_dir()), h.store.clone())
        .await
        .unwrap();
    let err = second.ready().await.unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    let err = second.log_find(&step(1)).await.unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
}

/// Dropping an engine releases the spool at once, though its spool opened in the
/// background: the next addon does not wait for it.
#[tokio::test]
async fn dropping_the_engine_releases_the_spool_at_once() {
    let h = Harness::new(|_| {}).await;
    let lock = std::fs::File::open(h.spool_dir().join("lock")).unwrap();
    assert!(lock.try_lock().is_err(), "held by the engine");
    let Harness { engine, dir, .. } = h;
    drop(engine);
    assert!(lock.try_lock().is_ok(), "released");
    drop(dir);
}

/// `read_step_log` (for `get`) reads beside a running engine: same answer as LogFind, no
/// lock taken, a record still being written skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reader_matches_log_find_beside_a_live_engine() {
    let h = Harness::new(|s| s.finalize_delay = Duration::ZERO).await;
    h.engine
        .log_append(&step(33), vec![entry(33, 1, "b"), entry(33, 0, "a")])
        .await
        .unwrap();
    h.engine.step_finished(&step(33)).await;
    h.advance(Duration::ZERO).await;
    assert_eq!(h.uploads(), 1, "archived");
    h.engine
        .log_append(
            &step(33),
            vec![entry(33, 2, "late"), entry(33, 0, "resent")],
        )
        .await
        .unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(h.segments(33).pop().unwrap())
        .unwrap()
        .write_all(br#"{"line":3,"da"#)
        .unwrap();
    let settings = fast_settings(h.spool_dir());
    let id = logservice::StepId::new(33).unwrap();
    let offline = engine::read_step_log(&settings, &*h.store, id)
        .await
        .unwrap();
    assert_eq!(offline, h.engine.log_find_json(&step(33)).await.unwrap());
    let offline: Vec<LogEntry> = serde_json::from_slice(&offline).unwrap();
    assert_eq!(
        texts(&offline),
        vec![(0, "a".into()), (1, "b".into()), (2, "late".into())]
    );
    let unknown = logservice::StepId::new(34).unwrap();
    assert!(
        engine::read_step_log(&settings, &*h.store, unknown)
            .await
            .unwrap()
            == b"[]"
    );
}

/// An entry too large to ever read back is refused by name; the rest of its batch is kept.
#[tokio::test]
async fn oversized_entry_is_refused_the_batch_kept() {
    let h = Harness::new(|_| {}).await;
    let huge = LogEntry {
        line: 1,
        data: Some(vec![b'x'; engine::format::MAX_RECORD_BYTES]),
        ..LogEntry::default()
    };
    let err = h
        .engine
        .log_append(&step(35), vec![entry(35, 0, "a"), huge, entry(35, 2, "c")])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1]") && err.contains("at most 16 MiB"),
        "{err}"
    );
    assert_eq!(
        texts(&h.engine.log_find(&step(35)).await.unwrap()),
        vec![(0, "a".into()), (2, "c".into())]
    );
}

/// SIGTERM's shutdown: an upload under way finishes within the grace period, so the step is
/// archived and its spool emptied before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_upload_under_way() {
    let h = Harness::real_time(|s| s.finalize_delay = Duration::ZERO).await;
    h.store.hold_puts.store(true, Ordering::SeqCst);
    h.engine
        .log_append(&step(8), vec![entry(8, 0, "a"), entry(8, 1, "b")])
        .await
        .unwrap();
    h.engine.step_finished(&step(8)).await;
    wait_until("upload started", WAIT, async || {
        h.store.puts_in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let store = h.store.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.hold_puts.store(false, Ordering::SeqCst);
    });
    h.engine
        .shutdown_within(Duration::from_secs(10))
        .await
        .unwrap();
    release.await.unwrap();
    assert_eq!(h.uploads(), 1);
    assert_eq!(h.object(8).await.map(|o| o.len()), Some(2));
    assert!(h.segments(8).is_empty());
}

/// An upload that outlasts the grace period is abandoned at the deadline; its lines stay in
/// the spool and the next start archives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_abandons_an_upload_at_the_deadline() {
    let h = Harness::real_time(|s| s.finalize_delay = Duration::ZERO).await;
    h.store.hold_puts.store(true, Ordering::SeqCst);
    h.engine
        .log_append(&step(9), vec![entry(9, 0, "kept")])
        .await
        .unwrap();
    h.engine.step_finished(&step(9)).await;
    wait_until("upload started", WAIT, async || {
        h.store.puts_in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = std::time::Instant::now();
    h.engine
        .shutdown_within(Duration::from_millis(300))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(h.uploads(), 0);
    assert!(!h.segments(9).is_empty());
    h.store.hold_puts.store(false, Ordering::SeqCst);
    let h = h.restart(|s| s.finalize_delay = Duration::ZERO).await;
    wait_until("archived after restart", WAIT, async || {
        h.object(9).await.is_some_and(|o| o.len() == 1)
    })
    .await;
}
