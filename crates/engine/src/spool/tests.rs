//! Tests of the spool's files: names, listing, the finished journal, flushing.

use super::*;

fn id(n: i64) -> StepId {
    StepId::new(n).unwrap()
}

#[test]
fn step_file_names_round_trip_and_strangers_are_not_ours() {
    let name = segment_name(id(42), 7);
    assert_eq!(StepFile::parse(&name), Some(StepFile::Segment(id(42), 7)));
    assert_eq!(
        StepFile::parse("42.finished"),
        Some(StepFile::FinishedMarker(id(42)))
    );
    for stranger in [
        "42",
        "0.1.ndjson",
        "x.1.ndjson",
        "42.1.json",
        "42.-1.ndjson",
    ] {
        assert_eq!(StepFile::parse(stranger), None, "{stranger}");
    }
}

#[test]
fn segments_are_listed_in_order_without_a_spool_too() {
    let dir = tempfile::tempdir().unwrap();
    assert!(list_segments(dir.path(), id(5)).unwrap().is_empty());
    let (spool, _lock) = Spool::open(dir.path(), dir.path(), 8).unwrap();
    for segment in [10, 2, 1] {
        spool
            .append(id(5), segment, 0, b"{\"line\":0}\n", false)
            .unwrap();
    }
    spool.append(id(6), 0, 0, b"{\"line\":0}\n", false).unwrap();
    let listed = list_segments(dir.path(), id(5)).unwrap();
    let expected: Vec<PathBuf> = [1, 2, 10]
        .into_iter()
        .map(|segment| spool.segment_path(id(5), segment))
        .collect();
    assert_eq!(listed, expected);
}

/// Finding 8 of issue 12: a file whose fsync fails neither stops the others from being
/// flushed nor leaves the dirty set: the next call flushes it, and only it.
#[test]
fn a_failed_fsync_keeps_its_file_dirty_and_the_others_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _lock) = Spool::open(dir.path(), dir.path(), 8).unwrap();
    for n in [1, 2, 3] {
        spool.append(id(n), 0, 0, b"{\"line\":0}\n", false).unwrap();
    }
    let failing = spool.segment_path(id(2), 0);
    crate::interleavings::fail_at(format!("fsync {}", failing.display()));
    let err = spool.sync_pending().unwrap_err();
    assert!(err.to_string().contains("2.0.ndjson"), "{err}");
    assert_eq!(spool.sync_pending().unwrap(), 1, "the failed file, retried");
    assert_eq!(spool.sync_pending().unwrap(), 0, "nothing left");
}

/// The journal survives a restart for steps still in the spool, converts the marker files
/// of earlier versions, and is compacted to what is still needed.
#[test]
fn finished_journal_is_recovered_converted_and_compacted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _lock) = Spool::open(dir.path(), dir.path(), 8).unwrap();
        spool.recover().unwrap();
        for n in [1, 2, 3] {
            spool.append(id(n), 0, 0, b"{\"line\":0}\n", false).unwrap();
        }
        spool.mark_finished(id(1)).unwrap();
        spool.mark_finished(id(9)).unwrap(); // finished, then archived: no segments left
        spool.sync_pending().unwrap();
    }
    std::fs::write(dir.path().join("steps/2.finished"), b"").unwrap();

    let (spool, _lock) = Spool::open(dir.path(), dir.path(), 8).unwrap();
    let found = spool.recover().unwrap();
    let finished: Vec<(i64, bool)> = found.iter().map(|(id, s)| (id.get(), s.finished)).collect();
    assert_eq!(finished, [(1, true), (2, true), (3, false)]);
    assert!(!dir.path().join("steps/2.finished").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("finished")).unwrap(),
        "1\n2\n"
    );
    spool.mark_finished(id(3)).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("finished")).unwrap(),
        "1\n2\n3\n"
    );
}

/// A `tmp/` that another thread keeps filling while it is cleared (a dropped engine's file
/// pool refilling, in one process) is cleared all the same: the next engine's start failed
/// with "Directory not empty" before.
#[test]
fn a_directory_refilled_while_it_is_cleared_is_cleared_all_the_same() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tmp");
    fs::create_dir(&dir).unwrap();
    let filler = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            // Until the directory is gone for good, as a refill stops at its bound.
            (0..20_000)
                .take_while(|n| File::create(dir.join(format!("pool-{n}"))).is_ok() || *n < 10)
                .count()
        })
    };
    while fs::read_dir(&dir).unwrap().count() < 10 {
        std::thread::yield_now();
    }
    clear_dir(&dir).unwrap();
    filler.join().unwrap();
    assert!(!dir.exists(), "tmp/ left behind");
}
