//! `Engine::stats()`, what the addon's metrics show: counters, the spool, the archive queue,
//! failures by cause and upload latency, followed through a step's life on a manual clock.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use logservice::LogService;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_a_step_from_append_through_a_failed_and_a_good_archive_run() {
    let h = Harness::new(|_| {}).await;
    let start = h.engine.stats();
    assert_eq!(start.oldest_unarchived, None);
    assert_eq!((start.spool_bytes, start.archive_queue), (0, 0));

    let lines = vec![entry(1, 0, "a"), entry(1, 1, "b"), entry(1, 2, "c")];
    h.engine.log_append(&step(1), lines).await.unwrap();
    h.engine
        .log_append(&step(2), vec![entry(2, 0, "other")])
        .await
        .unwrap();
    let stats = h.engine.stats();
    assert_eq!((stats.appends, stats.entries_appended), (2, 4));
    assert!(stats.spool_bytes > 0);
    assert_eq!(stats.spool_bytes, stats.spool_bytes_written);
    assert_eq!((stats.steps_pending, stats.archive_queue), (2, 0));
    assert_eq!(stats.oldest_unarchived, Some(Duration::ZERO));

    // Ten seconds on, nothing is due yet (the steps run): the oldest line has waited 10 s.
    h.advance(Duration::from_secs(10)).await;
    let stats = h.engine.stats();
    assert_eq!(stats.oldest_unarchived, Some(Duration::from_secs(10)));
    assert_eq!(stats.archive_queue, 0);

    // Step 1 finishes while the store refuses us: the run fails, the step waits to retry.
    h.store.denied.store(true, Ordering::SeqCst);
    h.engine.step_finished(&step(1)).await;
    h.advance(Duration::from_millis(300)).await;
    let stats = h.engine.stats();
    assert_eq!(stats.archive_failures, 1);
    assert_eq!(
        stats.archive_failures_by_code,
        BTreeMap::from([("denied", 1)])
    );
    assert_eq!(stats.archive_queue, 1);
    assert_eq!(stats.archive_uploads, 0);
    let step_1_bytes = stats.spool_bytes;

    // The store comes back: the retry uploads; step 1 leaves the queue and the spool.
    h.store.denied.store(false, Ordering::SeqCst);
    h.advance(RETRY_MAX).await;
    let stats = h.engine.stats();
    assert_eq!((stats.archive_uploads, stats.archive_queue), (1, 0));
    assert!(stats.archive_bytes_uploaded > 0);
    assert!(stats.spool_bytes > 0 && stats.spool_bytes < step_1_bytes);
    assert_eq!(stats.steps_pending, 1, "step 2 still runs");
    assert_eq!(stats.upload_latency.count(), 1);
    assert_eq!(stats.archive_failures_by_code.get("denied"), Some(&1));

    // A failing upload counts its latency and its cause.
    h.store.fail_puts.store(1, Ordering::SeqCst);
    h.engine.step_finished(&step(2)).await;
    h.advance(Duration::from_millis(300)).await;
    let stats = h.engine.stats();
    assert_eq!(stats.archive_failures_by_code.get("transient"), Some(&1));
    assert_eq!(stats.upload_latency.count(), 2);
    h.advance(RETRY_MAX).await;
    let stats = h.engine.stats();
    assert_eq!((stats.archive_uploads, stats.archive_queue), (2, 0));
    assert_eq!((stats.spool_bytes, stats.steps_pending), (0, 0));
    assert_eq!(stats.oldest_unarchived, None);
    assert_eq!(stats.upload_latency.count(), 3);

    h.engine.log_find(&step(1)).await.unwrap();
    h.engine.log_delete(&step(2)).await.unwrap();
    let stats = h.engine.stats();
    assert_eq!((stats.finds, stats.deletes), (1, 1));
}

/// After a restart the spool figures include what the previous run left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_steps_count_in_the_spool_figures() {
    let h = Harness::new(|_| {}).await;
    h.engine
        .log_append(&step(7), vec![entry(7, 0, "left behind")])
        .await
        .unwrap();
    let written = h.engine.stats().spool_bytes_written;
    let h = h.restart(|_| {}).await;
    // Measured beside the engine after its start.
    wait_until(
        "the recovered step measured",
        Duration::from_secs(10),
        async || h.engine.stats().spool_bytes == written,
    )
    .await;
    let stats = h.engine.stats();
    assert_eq!(stats.steps_pending, 1);
    assert!(stats.oldest_unarchived.is_some());
    assert_eq!(stats.appends, 0, "counters start at zero with each run");

    // Archived: the measured bytes leave the figures with the files.
    h.engine.step_finished(&step(7)).await;
    h.advance(Duration::from_secs(1)).await;
    let stats = h.engine.stats();
    assert_eq!((stats.archive_uploads, stats.spool_bytes), (1, 0));
    assert_eq!(stats.oldest_unarchived, None);
}
