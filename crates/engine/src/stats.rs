//! What the engine tells operators: [`EngineStats`], a snapshot of its counters and of its
//! steps, which the binary renders as metrics (the engine itself knows no metrics format).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::shared::Shared;
use crate::step::lock;
use crate::threads::blocking;

/// Counters for operators and the benchmark, and the state of the spool and the archive
/// queue at the moment they were taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// LogAppend calls that stored lines.
    pub appends: u64,
    /// Log entries those calls stored.
    pub entries_appended: u64,
    /// Bytes written to spool files.
    pub spool_bytes_written: u64,
    /// Spool files flushed to disk by the background sync.
    pub spool_syncs: u64,
    /// LogFind calls.
    pub finds: u64,
    /// LogDelete calls.
    pub deletes: u64,
    /// Archive objects stored.
    pub archive_uploads: u64,
    /// Compressed bytes of those objects.
    pub archive_bytes_uploaded: u64,
    /// Archive runs that failed (each is retried).
    pub archive_failures: u64,
    /// The same failures by cause: [`archive::StoreError::code`] for the store's, `io` and
    /// `corrupt` for local ones (a few distinct values, never a key or a message).
    pub archive_failures_by_code: BTreeMap<&'static str, u64>,
    /// Time per archive upload, from the request to the end of its verification, successful
    /// or not.
    pub upload_latency: Histogram,
    /// Steps the engine currently tracks (running, waiting for archiving, recently archived).
    pub steps_tracked: usize,
    /// Steps with lines in the spool that are not archived yet.
    pub steps_pending: usize,
    /// Steps waiting to be archived: due, being archived, or waiting to retry.
    pub archive_queue: usize,
    /// Bytes of log lines in the spool that are not archived yet.
    pub spool_bytes: u64,
    /// How long the oldest line not archived yet has waited (`None`: every line is
    /// archived). After a restart, a recovered step counts from the last write of its oldest
    /// spool file.
    pub oldest_unarchived: Option<Duration>,
    /// Spool files open right now.
    pub open_spool_files: usize,
}

/// A recovered step's segments as found on disk, for the spool figures (see
/// [`crate::EngineStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OnDisk {
    /// Their bytes.
    pub(crate) bytes: u64,
    /// The oldest line's age, as well as the disk tells it: since the last write of the
    /// oldest segment.
    pub(crate) age: Option<Duration>,
}

/// What the engine's steps add up to at one moment (see [`crate::step::Steps::census`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    /// Steps tracked.
    pub(crate) tracked: usize,
    /// Steps with lines in the spool that are not archived yet.
    pub(crate) pending: usize,
    /// Steps due for archiving, being archived, or waiting to retry.
    pub(crate) queued: usize,
    /// Acknowledged bytes in the spool, not archived yet.
    pub(crate) bytes: u64,
    /// When the oldest line not archived yet came.
    pub(crate) oldest: Option<Instant>,
}

/// The upper bounds of [`EngineStats::upload_latency`]'s buckets: from a small object on a
/// local server to a large one over a slow link with retries.
pub const UPLOAD_LATENCY_BOUNDS: [Duration; 12] = [
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// A distribution of durations over fixed buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// The buckets' upper bounds, ascending.
    pub bounds: &'static [Duration],
    /// Observations per bucket: `counts[i]` fell in `(bounds[i-1], bounds[i]]`; the last
    /// entry, one more than the bounds, counts those above every bound.
    pub counts: Vec<u64>,
    /// The sum of all observations.
    pub sum: Duration,
}

impl Histogram {
    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bounds: &UPLOAD_LATENCY_BOUNDS,
            counts: vec![0; UPLOAD_LATENCY_BOUNDS.len() + 1],
            sum: Duration::ZERO,
        }
    }
}

/// The live upload-latency histogram behind [`EngineStats::upload_latency`]: atomic, so an
/// archive run records without a lock.
pub(crate) struct LatencyRecorder {
    counts: [AtomicU64; UPLOAD_LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyRecorder {
    /// Records one observation.
    pub(crate) fn record(&self, elapsed: Duration) {
        let bucket = UPLOAD_LATENCY_BOUNDS.partition_point(|bound| *bound < elapsed);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: &UPLOAD_LATENCY_BOUNDS,
            counts: self
                .counts
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Archive failures by [`EngineStats::archive_failures_by_code`]'s codes.
#[derive(Default)]
pub(crate) struct FailureCounts(Mutex<BTreeMap<&'static str, u64>>);

impl FailureCounts {
    /// Counts one failure of cause `code`.
    pub(crate) fn add(&self, code: &'static str) {
        *lock(&self.0).entry(code).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.0).clone()
    }
}

/// Measures the segments each step found at start still has (size, and the age of the last
/// write of the oldest), so the spool figures include what a previous run left. Runs beside
/// the engine, one step at a time under its archive lock (so no run removes the files
/// meanwhile). A segment that cannot be read counts as empty: these are figures, never a
/// reason to fail.
pub(crate) async fn measure_recovered(inner: Arc<Shared>) {
    for (id, slot) in inner.steps.all() {
        if slot.state().unmeasured().is_none() {
            continue;
        }
        let _exclusive = slot.archive.lock().await;
        let Some(segments) = slot.state().unmeasured() else {
            continue; // archived or deleted meanwhile
        };
        let paths: Vec<PathBuf> = segments
            .map(|segment| inner.spool.segment_path(id, segment))
            .collect();
        let on_disk = blocking(move || measure(&paths)).await;
        slot.state().measured(on_disk, inner.clock.now());
    }
}

/// The bytes of the files at `paths`, and the age of the oldest write among them.
fn measure(paths: &[PathBuf]) -> OnDisk {
    let wall_now = SystemTime::now();
    let mut on_disk = OnDisk::default();
    for path in paths {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        on_disk.bytes += meta.len();
        let age = meta
            .modified()
            .ok()
            .and_then(|at| wall_now.duration_since(at).ok());
        on_disk.age = on_disk.age.into_iter().chain(age).max();
    }
    on_disk
}

/// The counters so far, and the steps, the spool and the archive queue now.
pub(crate) fn snapshot(inner: &Shared) -> EngineStats {
    let c = &inner.counters;
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let now = inner.clock.now();
    let census = inner.steps.census(now, &inner.settings);
    EngineStats {
        appends: get(&c.appends),
        entries_appended: get(&c.entries_appended),
        spool_bytes_written: get(&c.spool_bytes_written),
        spool_syncs: get(&c.spool_syncs),
        finds: get(&c.finds),
        deletes: get(&c.deletes),
        archive_uploads: get(&c.archive_uploads),
        archive_bytes_uploaded: get(&c.archive_bytes_uploaded),
        archive_failures: get(&c.archive_failures),
        archive_failures_by_code: c.failures_by_code.snapshot(),
        upload_latency: c.upload_latency.snapshot(),
        steps_tracked: census.tracked,
        steps_pending: census.pending,
        archive_queue: census.queued,
        spool_bytes: census.bytes,
        oldest_unarchived: census
            .oldest
            .map(|since| now.saturating_duration_since(since)),
        open_spool_files: inner.spool.open_files(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::backoff::Backoff;
    use crate::settings::EngineSettings;
    use crate::step::{StepState, Steps};
    use logservice::StepId;

    fn settings() -> EngineSettings {
        let mut s = EngineSettings::new("/unused");
        s.finalize_delay = Duration::from_secs(5);
        s.idle_timeout = Duration::from_secs(600);
        s
    }

    #[test]
    fn latencies_land_in_the_first_bucket_that_holds_them() {
        let recorder = LatencyRecorder::default();
        recorder.record(Duration::from_millis(10)); // on the bound: that bucket
        recorder.record(Duration::from_millis(11));
        recorder.record(Duration::from_secs(600)); // above every bound
        let histogram = recorder.snapshot();
        assert_eq!(histogram.count(), 3);
        assert_eq!(histogram.counts[0], 1);
        assert_eq!(histogram.counts[1], 1);
        assert_eq!(histogram.counts[UPLOAD_LATENCY_BOUNDS.len()], 1);
        assert_eq!(histogram.sum, Duration::from_millis(600_021));
        assert_eq!(Histogram::default().count(), 0);
    }

    #[test]
    fn failures_are_counted_per_code() {
        let failures = FailureCounts::default();
        failures.add("NoSuchBucket");
        failures.add("timeout");
        failures.add("NoSuchBucket");
        assert_eq!(
            failures.snapshot(),
            BTreeMap::from([("NoSuchBucket", 2), ("timeout", 1)])
        );
    }

    /// The spool figures follow a step through a run: bytes and the oldest line's time stay
    /// until the sealed segments are gone; lines that came during the run stay after it.
    #[test]
    fn census_counts_staged_bytes_the_oldest_line_and_the_queue() {
        let s = settings();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let steps = Steps::new([
            (StepId::new(1).unwrap(), StepState::new(t0)),
            (StepId::new(2).unwrap(), StepState::new(t0)),
        ]);
        let state = |id| steps.get(StepId::new(id).unwrap()).unwrap();
        assert_eq!(
            steps.census(t0, &s),
            Census {
                tracked: 2,
                ..Census::default()
            }
        );

        state(1).state().appended(100, at(1));
        state(1).state().appended(50, at(2));
        state(1).state().finished(at(2));
        state(2).state().appended(7, at(3));
        let census = steps.census(at(3), &s);
        assert_eq!((census.pending, census.queued), (2, 0));
        assert_eq!((census.bytes, census.oldest), (157, Some(at(1))));
        // Step 1 is due 5 s after its last line; step 2 never finished.
        assert_eq!(steps.census(at(7), &s).queued, 1);

        let one = state(1);
        let mut run = one.state();
        run.start_archiving();
        assert_eq!(run.seal(), (0..1, Some(0)));
        run.appended(10, at(8));
        drop(run);
        let census = steps.census(at(8), &s);
        assert_eq!((census.queued, census.bytes), (1, 167));
        assert_eq!(census.oldest, Some(at(1)));

        let mut run = one.state();
        run.sealed_removed(1);
        run.archive_succeeded(at(9));
        drop(run);
        let census = steps.census(at(9), &s);
        assert_eq!((census.pending, census.queued), (2, 0));
        assert_eq!((census.bytes, census.oldest), (17, Some(at(3))));

        // A failed run keeps its sealed bytes and waits in the queue for the retry.
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let two = state(2);
        let mut run = two.state();
        run.start_archiving();
        run.seal();
        run.archive_failed(at(10), &backoff);
        drop(run);
        let census = steps.census(at(11), &s);
        assert_eq!((census.queued, census.bytes), (1, 17));
    }

    #[test]
    fn recovered_steps_count_what_the_disk_holds_once_measured() {
        let s = settings();
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(60);
        let mut state = StepState::recovered(now, &BTreeSet::from([3, 4]), true, s.finalize_delay);
        assert_eq!(state.tail(), (5, 0));
        assert_eq!(state.unmeasured(), Some(3..5));
        state.appended(10, now);
        state.measured(
            OnDisk {
                bytes: 4096,
                age: Some(Duration::from_secs(60)),
            },
            now,
        );
        assert_eq!(state.unmeasured(), None);
        let steps = Steps::new([(StepId::new(1).unwrap(), state)]);
        let census = steps.census(now, &s);
        assert_eq!((census.bytes, census.oldest), (4106, Some(t0)));
    }

    /// Measuring the files themselves: sizes add up, the age is the oldest write's.
    #[test]
    fn measuring_reads_sizes_and_the_oldest_write() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, [0u8; 100]).unwrap();
        std::fs::write(&b, [0u8; 23]).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let on_disk = measure(&[a, b, dir.path().join("gone")]);
        assert_eq!(on_disk.bytes, 123);
        let age = on_disk.age.unwrap();
        assert!(age >= Duration::from_secs(3600) && age < Duration::from_secs(3700));
    }
}
