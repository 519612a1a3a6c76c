//! Many running steps and one huge step: file handles and memory stay bounded.
//!
//! Its own test binary, so the process-wide figures it reads (open descriptors, peak RSS)
//! are not disturbed by other tests.

mod common;

use std::time::Duration;

use common::*;
use logservice::{LogEntry, LogService};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// 1000 running steps do not hold 1000 open files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_running_steps_keep_few_files_open() {
    let h = Harness::new(|s| s.max_open_files = 64).await;
    let before = open_fds();
    for round in 0..3 {
        for id in 1..=1000 {
            h.engine
                .log_append(&step(id), vec![entry(id, round, "output")])
                .await
                .unwrap();
        }
    }
    let stats = h.engine.stats();
    assert!(stats.open_spool_files <= 64, "{stats:?}");
    assert_eq!(stats.steps_pending, 1000);
    let grown = open_fds().saturating_sub(before);
    assert!(grown <= 64 + 16, "{grown} more descriptors open");
    for id in [1, 500, 1000] {
        assert_eq!(h.engine.log_find(&step(id)).await.unwrap().len(), 3);
    }
}

/// A step of a million lines, appended in agent-sized batches with resends and reordering,
/// is archived through a sort budget far smaller than the log: peak memory stays far below
/// the log's size, and the object holds every line once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_line_step_is_archived_in_bounded_memory() {
    const LINES: i64 = 1_000_000;
    const BATCH: i64 = 1000;
    let h = Harness::new(|s| {
        s.finalize_delay = Duration::ZERO;
        s.sort_budget_bytes = 8 << 20;
    })
    .await;
    let text = "x".repeat(40);
    let line = |n: i64| LogEntry {
        step_id: 50,
        line: n,
        time: n / 1000,
        data: Some(format!("{n:08} {text}").into_bytes()),
        ..LogEntry::default()
    };
    let started = std::time::Instant::now();
    let mut starts: Vec<i64> = (0..LINES / BATCH).map(|b| b * BATCH).collect();
    // Agents retry: swap neighbouring batches now and then and resend some.
    for i in (0..starts.len() - 1).step_by(7) {
        starts.swap(i, i + 1);
    }
    for (i, start) in starts.iter().enumerate() {
        let batch: Vec<LogEntry> = (*start..start + BATCH).map(line).collect();
        h.engine.log_append(&step(50), batch.clone()).await.unwrap();
        if i % 50 == 0 {
            h.engine.log_append(&step(50), batch).await.unwrap();
        }
    }
    let spooled = h.engine.stats().spool_bytes_written;
    assert!(spooled > 100 << 20, "only {spooled} bytes spooled");

    println!("appended in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    h.engine.step_finished(&step(50)).await;
    h.advance(Duration::ZERO).await;
    assert_eq!(h.uploads(), 1, "archived");
    let peak = peak_rss();
    println!(
        "archived in {:?}: spooled {spooled} bytes, peak RSS {peak} bytes",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    assert!(
        peak < spooled / 2,
        "peak RSS {peak} is not bounded (spool {spooled} bytes)"
    );

    // Check the object streaming, without holding its lines.
    let key = h.engine.object_key(logservice::StepId::new(50).unwrap());
    let (bytes, info) = archive::ObjectStore::get(&h.store.inner, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.meta.user["line-count"], LINES.to_string());
    assert_eq!(info.meta.user["first-line"], "0");
    assert_eq!(info.meta.user["last-line"], (LINES - 1).to_string());
    let mut reader = engine::format::object_reader(&bytes).unwrap();
    let mut expected = 0;
    while let engine::format::Record::Entry(entry, _) = reader.next_record().unwrap() {
        assert_eq!(entry, line(expected));
        expected += 1;
    }
    assert_eq!(expected, LINES);
    println!("verified in {:?}", started.elapsed());
    assert!(h.segments(50).is_empty(), "spool emptied");
}
