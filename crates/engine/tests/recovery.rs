//! Restarts: a clean stop, a torn spool file, and a SIGKILL of a process in the middle of
//! appending.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use engine::{Engine, ManualClock};
use logservice::LogService;

/// Finished steps are archived right after the restart, unfinished ones after the idle
/// timeout, and every line is readable in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_unfinished_work() {
    let h = Harness::new(|s| s.finalize_delay = Duration::from_secs(60)).await;
    for id in [40, 41] {
        h.engine
            .log_append(&step(id), vec![entry(id, 1, "b"), entry(id, 0, "a")])
            .await
            .unwrap();
    }
    h.engine.step_finished(&step(40)).await;
    assert_eq!(h.uploads(), 0);

    let h = h
        .restart(|s| {
            s.finalize_delay = Duration::from_secs(60);
            s.idle_timeout = Duration::from_millis(1500);
        })
        .await;
    for id in [40, 41] {
        assert_eq!(
            texts(&h.engine.log_find(&step(id)).await.unwrap()),
            vec![(0, "a".into()), (1, "b".into())]
        );
    }
    // The finished mark survived: no new grace period.
    h.advance(Duration::ZERO).await;
    assert!(h.object(40).await.is_some(), "finished step archived");
    assert!(
        h.object(41).await.is_none(),
        "unfinished step archived too early"
    );
    h.engine
        .log_append(&step(41), vec![entry(41, 2, "after restart")])
        .await
        .unwrap();
    h.advance(Duration::from_millis(1499)).await;
    assert!(h.object(41).await.is_none(), "idle step swept too early");
    h.advance(Duration::from_millis(1)).await;
    assert!(
        h.object(41).await.is_some_and(|o| o.len() == 3),
        "idle step swept"
    );
    assert!(
        h.segments(40).is_empty() && h.segments(41).is_empty(),
        "spool emptied"
    );
}

/// A crash in the middle of a write leaves a partial record: it is cut off with a warning,
/// every complete record is kept, and the step works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_spool_record_is_dropped_the_rest_kept() {
    let h = Harness::new(|s| s.finalize_delay = Duration::from_millis(100)).await;
    h.engine
        .log_append(&step(43), vec![entry(43, 0, "a"), entry(43, 1, "b")])
        .await
        .unwrap();
    let dir = h.dir.path().to_owned();
    let segment = h.segments(43).pop().unwrap();
    let complete = std::fs::metadata(&segment).unwrap().len();
    let store = h.store.clone();
    // Dropped, not shut down: like a crash, nothing is flushed or cleaned.
    drop(h.engine);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(br#"{"id":0,"step_id":43,"time":20,"line":2,"data":"Yw"#)
        .unwrap();

    let clock = ManualClock::new();
    let engine = start_engine(
        fast_settings(dir.join("spool")),
        store.clone(),
        Some(clock.clone()),
    )
    .await;
    engine.recovered().await.unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), complete);
    assert_eq!(
        texts(&engine.log_find(&step(43)).await.unwrap()),
        vec![(0, "a".into()), (1, "b".into())]
    );
    engine
        .log_append(&step(43), vec![entry(43, 2, "c")])
        .await
        .unwrap();
    engine.step_finished(&step(43)).await;
    let h = Harness {
        dir: tempfile::TempDir::with_prefix("unused").unwrap(),
        store,
        engine,
        clock: Some(clock),
    };
    // The restarted engine has the grace period of `fast_settings`.
    h.advance(Duration::from_millis(200)).await;
    assert!(h.object(43).await.is_some(), "archived");
    assert_eq!(
        texts(&h.object(43).await.unwrap()),
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );
    drop(dir);
}

const CHILD_SPOOL: &str = "ENGINE_TEST_CHILD_SPOOL";

/// Not a test by itself: the child process of `sigkill_loses_no_acknowledged_line`. It
/// appends to 20 steps and prints every acknowledged line until it is killed.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_SPOOL) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(FaultyStore::new(&dir.join("archive")));
        let engine = Engine::start(fast_settings(dir.join("spool")), store)
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        for line in 0.. {
            for id in 100..120 {
                let batch = (0..10)
                    .map(|i| entry(id, line * 10 + i, "some build output line"))
                    .collect();
                engine.log_append(&step(id), batch).await.unwrap();
                writeln!(out, "ack {id} {}", line * 10 + 9).unwrap();
                out.flush().unwrap();
            }
        }
    });
}

/// SIGKILL with 20 steps streaming: every acknowledged line is readable after a restart on
/// the same spool, and all of them reach the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SPOOL, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = std::collections::HashMap::<i64, i64>::new();
    let mut lines = stdout.lines();
    while acked.values().map(|l| l + 1).sum::<i64>() < 20_000 {
        let line = lines.next().expect("child ended early").unwrap();
        let Some(line) = line.strip_prefix("ack ") else {
            continue; // libtest's own output
        };
        let mut parts = line.split_whitespace();
        let id: i64 = parts.next().unwrap().parse().unwrap();
        let last: i64 = parts.next().unwrap().parse().unwrap();
        acked.insert(id, last);
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill.
    for line in lines.map_while(Result::ok) {
        let Some(line) = line.strip_prefix("ack ") else {
            continue;
        };
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(last)) = (parts.next(), parts.next()) {
            acked.insert(id.parse().unwrap(), last.parse().unwrap());
        }
    }
    assert_eq!(acked.len(), 20);

    let store = Arc::new(FaultyStore::new(&dir.path().join("archive")));
    let mut settings = fast_settings(dir.path().join("spool"));
    settings.idle_timeout = Duration::from_secs(1);
    let clock = ManualClock::new();
    let engine = start_engine(settings, store.clone(), Some(clock.clone())).await;
    for (&id, &last) in &acked {
        let found = engine.log_find(&step(id)).await.unwrap();
        assert!(
            found.len() as i64 > last,
            "step {id}: {} lines readable, line {last} was acknowledged",
            found.len()
        );
        assert!(found.iter().enumerate().all(|(i, e)| e.line == i as i64));
    }
    let h = Harness {
        dir,
        store,
        engine,
        clock: Some(clock),
    };
    h.advance(Duration::from_secs(1)).await;
    for (&id, &last) in &acked {
        assert!(
            h.object(id).await.is_some_and(|o| o.len() as i64 > last),
            "step {id} archived after the crash"
        );
    }
}
