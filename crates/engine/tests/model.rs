//! A model-based test of the engine (issue 12): random interleavings of appends (resent,
//! reordered and late batches), StepFinished, LogFind, LogDelete, crashes with restarts, and
//! archive outages, checked after every call against a model of Woodpecker's database store:
//! ordered by line, one entry per `(step_id, line)`, the first write winning, deletion
//! complete.
//!
//! The engine is real (spool on disk, `LocalDirStore` archive); only the archive's faults are
//! injected ([`FlakyStore`]), and the schedule runs on a [`ManualClock`], so the grace period,
//! the idle timeout and retry backoff pass without sleeping.
//!
//! Every seed is a sequence of operations drawn from a seeded generator; a failure prints the
//! seed and the operations so far. Replay one seed with `MODEL_SEED=<n>`; run more seeds with
//! `MODEL_SEEDS=<count>` (default [`CI_SEEDS`]) and pick the first with `MODEL_FIRST_SEED`:
//!
//! ```sh
//! cargo test -p engine --test model -- --nocapture       # CI: CI_SEEDS seeds, timings
//! MODEL_SEEDS=100000 cargo test -p engine --test model   # a longer run
//! MODEL_SEED=1234 cargo test -p engine --test model      # replay one seed
//! MODEL_STRICT_OUTAGE_READS=1 cargo test -p engine --test model  # see the known defect
//! MODEL_CRASH_DURING_UPLOAD=1 cargo test -p engine --test model  # the open question
//! ```
//!
//! Spool and archive go to `/dev/shm` when it exists (`MODEL_DIR` chooses another place).
//!
//! Crashes drop the engine between calls, or with an upload in flight, and may leave a torn
//! record (what a kill in the middle of an append leaves). Not simulated: a power cut, which
//! also loses what the page cache held (lines acknowledged since the last fsync, unless
//! `SPOOL_SYNC=always`), and a kill at any other instruction (in the middle of an archive
//! run's removal of its segments, say), which would need the engine in a child process.
//!
//! The operations replay exactly; the engine's own threads (archive runs that overlap later
//! calls after [`Op::AdvanceNoWait`]) may interleave differently from run to run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use archive::{LocalDirStore, ObjectInfo, ObjectMeta, ObjectStore, StoreError};
use engine::{Clock, Engine, EngineSettings, ManualClock};
use logservice::{LogEntry, LogService, Step, StepId};

/// Seeds per run in CI.
const CI_SEEDS: u64 = 2000;
/// Operations per seed.
const OPS: usize = 40;
/// Step ids 1..=STEPS: few, so that operations meet on the same steps.
const STEPS: i64 = 3;
/// Line numbers 0..LINES: few, so that resent and conflicting lines are common.
const LINES: i64 = 16;

const FINALIZE_DELAY: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// A real local archive whose faults the test switches: an outage, or uploads that store the
/// object and then fail (the answer lost on the way back, as after a timeout).
struct FlakyStore {
    inner: LocalDirStore,
    down: AtomicBool,
    lost_answers: AtomicU32,
    /// Uploads wait while set (an upload in flight when the process dies).
    hold_uploads: AtomicBool,
    /// Uploads waiting now.
    held_uploads: AtomicU32,
    /// Bumped by a crash: an upload held across it never reaches the store.
    crashes: AtomicU64,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::transient("connection refused (model outage)"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FlakyStore {
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError> {
        let crashes = self.crashes.load(Ordering::SeqCst);
        if self.hold_uploads.load(Ordering::SeqCst) {
            self.held_uploads.fetch_add(1, Ordering::SeqCst);
            while self.hold_uploads.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.held_uploads.fetch_sub(1, Ordering::SeqCst);
        }
        if self.crashes.load(Ordering::SeqCst) != crashes {
            // The engine that started this upload is gone (its runtime drops this future
            // soon); a dead process sends nothing more.
            return Err(StoreError::transient("the process died during the upload"));
        }
        self.check()?;
        let info = self.inner.put_file(key, body, meta).await?;
        if self
            .lost_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::transient(
                "timeout (model: stored, answer lost)",
            ));
        }
        Ok(info)
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.check()?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// One operation of a run.
#[derive(Debug, Clone)]
enum Op {
    /// A LogAppend batch: `(line, write)` pairs in the order sent; the write number makes
    /// each entry's contents unique.
    Append {
        step: i64,
        entries: Vec<(i64, u64)>,
    },
    Finished(i64),
    Find(i64),
    Delete(i64),
    /// Moves the clock on and waits until every archive run due is over.
    Advance(Duration),
    /// Moves the clock on without waiting: archive runs overlap the next operations.
    AdvanceNoWait(Duration),
    /// The engine is dropped without a shutdown and started again on the same spool;
    /// `torn` leaves a partial record at the end of a step's last segment, as a crash in the
    /// middle of an (unacknowledged) append does.
    Crash {
        torn: Option<i64>,
    },
    /// Time moves on by a duration, and the process dies while the uploads due then are in
    /// flight (if any was due); then a restart as for [`Op::Crash`].
    CrashDuringUpload(Duration),
    /// The archive goes down or comes back.
    ArchiveUp(bool),
    /// The next upload is stored, but its answer is lost.
    LoseUploadAnswer,
}

/// The entry a write sends: everything in it depends on the write number, so an answer
/// shows which write won. Some data is nil, empty or not UTF-8, as agents can send.
fn entry(step_id: i64, line: i64, write: u64) -> LogEntry {
    let data = match write % 13 {
        0 => None,
        1 => Some(Vec::new()),
        2 => Some(vec![0xff, 0x00, b'\n', write as u8]),
        _ => Some(format!("step {step_id} line {line} write {write} \"quoted\"\t").into_bytes()),
    };
    LogEntry {
        id: write as i64,
        step_id,
        time: 1_700_000_000 + write as i64,
        line,
        data,
        entry_type: (write % 4) as i64,
    }
}

/// What the model knows of one line.
#[derive(Debug, Clone)]
struct Line {
    /// The writes that may be the one a read shows; one unless a failed LogDelete left the
    /// step half deleted.
    candidates: Vec<u64>,
    /// Whether a read must show the line (false for lines a failed LogDelete may have
    /// removed).
    required: bool,
    /// Later writes of the line, acknowledged but losing to the first.
    later: Vec<u64>,
}

/// Woodpecker's database store, per step: line → the write that holds it.
#[derive(Debug, Default)]
struct Model {
    steps: HashMap<i64, BTreeMap<i64, Line>>,
}

impl Model {
    /// An acknowledged append: the first write of a line wins, within the batch too.
    fn appended(&mut self, step: i64, entries: &[(i64, u64)]) {
        let lines = self.steps.entry(step).or_default();
        for &(line, write) in entries {
            match lines.get_mut(&line) {
                None => {
                    lines.insert(
                        line,
                        Line {
                            candidates: vec![write],
                            required: true,
                            later: Vec::new(),
                        },
                    );
                }
                Some(known) if known.required => known.later.push(write),
                // A half-deleted line: an old copy may win, or this write, but one shows.
                Some(known) => {
                    known.candidates.push(write);
                    known.required = true;
                }
            }
        }
    }

    fn deleted(&mut self, step: i64) {
        self.steps.remove(&step);
    }

    /// A LogDelete that failed may have removed any part of the step.
    fn delete_failed(&mut self, step: i64) {
        for line in self.steps.entry(step).or_default().values_mut() {
            line.required = false;
        }
    }

    /// Whether `got` is an answer the database store could give for `step`.
    fn check(&self, step: i64, got: &[LogEntry]) -> Result<(), String> {
        self.check_answer(step, got, true)
    }

    /// Whether `got` holds only acknowledged, undeleted writes, ordered by line, one per
    /// line; and with `complete`, every line the database store would show, as it shows it.
    fn check_answer(&self, step: i64, got: &[LogEntry], complete: bool) -> Result<(), String> {
        let empty = BTreeMap::new();
        let lines = self.steps.get(&step).unwrap_or(&empty);
        let mut previous = None;
        for found in got {
            if previous.is_some_and(|p| p >= found.line) {
                return Err(format!(
                    "line {} after line {previous:?}: not ordered by line, or a line twice",
                    found.line
                ));
            }
            previous = Some(found.line);
            let Some(known) = lines.get(&found.line) else {
                return Err(format!(
                    "line {} (write {}) was never acknowledged, or was deleted",
                    found.line, found.id
                ));
            };
            let losers: &[u64] = if complete { &[] } else { &known.later };
            let mut allowed = known.candidates.iter().chain(losers);
            if !allowed.any(|&write| entry(step, found.line, write) == *found) {
                return Err(format!(
                    "line {} holds write {} ({found:?}), not an allowed write {:?}",
                    found.line, found.id, known.candidates
                ));
            }
        }
        for (line, known) in lines {
            if complete && known.required && !got.iter().any(|e| e.line == *line) {
                return Err(format!(
                    "acknowledged line {line} (writes {:?}) is missing",
                    known.candidates
                ));
            }
        }
        Ok(())
    }
}

/// A small seeded generator of operations (fastrand's wyrand).
struct Generator {
    rng: fastrand::Rng,
    writes: u64,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            writes: 0,
        }
    }

    fn step(&mut self) -> i64 {
        self.rng.i64(1..=STEPS)
    }

    fn next(&mut self) -> Op {
        let rng = &mut self.rng;
        match rng.u32(0..100) {
            0..40 => self.append(),
            40..48 => Op::Finished(self.step()),
            48..63 => Op::Find(self.step()),
            63..67 => Op::Delete(self.step()),
            67..79 => Op::Advance(self.duration()),
            79..84 => Op::AdvanceNoWait(self.duration()),
            84..87 => {
                let torn = self.rng.bool().then(|| self.step());
                Op::Crash { torn }
            }
            // Off by default until the corrupt objects it led to are explained: see
            // `crash_during_upload_enabled`.
            87..89 if crash_during_upload_enabled() => Op::CrashDuringUpload(self.duration()),
            87..89 => Op::Crash { torn: None },
            89..97 => Op::ArchiveUp(self.rng.u32(0..3) != 0),
            _ => Op::LoseUploadAnswer,
        }
    }

    /// A batch as agents send them: mostly the next lines in order, sometimes resent,
    /// reordered, or overlapping earlier ones.
    fn append(&mut self) -> Op {
        let step = self.step();
        let start = self.rng.i64(0..LINES);
        let len = self.rng.i64(1..=6);
        let mut lines: Vec<i64> = (start..(start + len).min(LINES)).collect();
        match self.rng.u32(0..4) {
            0 => self.rng.shuffle(&mut lines),
            1 => {
                // A line twice in one batch.
                let again = lines[self.rng.usize(..lines.len())];
                lines.push(again);
            }
            _ => {}
        }
        let entries = lines
            .into_iter()
            .map(|line| {
                self.writes += 1;
                (line, self.writes)
            })
            .collect();
        Op::Append { step, entries }
    }

    fn duration(&mut self) -> Duration {
        match self.rng.u32(0..5) {
            0 => Duration::from_secs(1),
            1 => FINALIZE_DELAY,
            2 => RETRY_MAX,
            3 => IDLE_TIMEOUT,
            _ => IDLE_TIMEOUT * 3,
        }
    }
}

fn step(id: i64) -> Step {
    Step {
        id,
        name: format!("step-{id}"),
        ..Step::default()
    }
}

/// Starts an engine on `spool` and waits until it serves.
async fn start_engine_on(spool: PathBuf, store: Arc<FlakyStore>, clock: ManualClock) -> Engine {
    let engine = Engine::start_with_clock(settings(spool), store, Clock::Manual(clock))
        .await
        .unwrap();
    engine.ready().await.unwrap();
    engine
}

fn settings(spool: PathBuf) -> EngineSettings {
    let mut s = EngineSettings::new(spool);
    s.finalize_delay = FINALIZE_DELAY;
    s.idle_timeout = IDLE_TIMEOUT;
    s.retry_initial = Duration::from_secs(1);
    s.retry_max = RETRY_MAX;
    // The background fsync runs on real time; the test never needs it.
    s.sync_interval = Duration::from_secs(3600);
    s
}

/// One run: the engine, its archive and clock, and the model.
struct Run {
    dir: tempfile::TempDir,
    store: Arc<FlakyStore>,
    clock: ManualClock,
    engine: Option<Engine>,
    model: Model,
    trace: Vec<String>,
    /// Whether answers given during an outage must be complete too.
    strict_outage_reads: bool,
    /// Time spent per kind of operation, to see where a run's time goes.
    spent: Spent,
}

/// Calls and time per kind of operation.
type Spent = BTreeMap<&'static str, (u32, Duration)>;

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Append { .. } => "append",
            Op::Finished(_) => "finished",
            Op::Find(_) => "find",
            Op::Delete(_) => "delete",
            Op::Advance(_) => "advance",
            Op::AdvanceNoWait(_) => "advance-no-wait",
            Op::Crash { .. } => "crash",
            Op::CrashDuringUpload(_) => "crash-during-upload",
            Op::ArchiveUp(_) => "archive-up",
            Op::LoseUploadAnswer => "lose-upload-answer",
        }
    }
}

impl Run {
    async fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("engine-model-")
            .tempdir_in(scratch_base())
            .unwrap();
        let store = Arc::new(FlakyStore {
            inner: LocalDirStore::new(dir.path().join("archive")).unwrap(),
            down: AtomicBool::new(false),
            lost_answers: AtomicU32::new(0),
            hold_uploads: AtomicBool::new(false),
            held_uploads: AtomicU32::new(0),
            crashes: AtomicU64::new(0),
        });
        let clock = ManualClock::new();
        let engine = start_engine_on(dir.path().join("spool"), store.clone(), clock.clone()).await;
        Self {
            dir,
            store,
            clock,
            engine: Some(engine),
            model: Model::default(),
            trace: Vec::new(),
            strict_outage_reads: strict_outage_reads(),
            spent: Spent::new(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("running")
    }

    fn archive_down(&self) -> bool {
        self.store.down.load(Ordering::SeqCst)
    }

    /// Runs `op` and checks the engine's answer against the model.
    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.trace.push(format!("{op:?}"));
        let started = std::time::Instant::now();
        let outcome = self.apply_unmeasured(op).await;
        let spent = self.spent.entry(op.kind()).or_default();
        spent.0 += 1;
        spent.1 += started.elapsed();
        outcome
    }

    async fn apply_unmeasured(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Append { step: id, entries } => {
                let batch = entries.iter().map(|&(l, w)| entry(*id, l, w)).collect();
                // Appends never depend on the archive: every one must succeed.
                self.engine()
                    .log_append(&step(*id), batch)
                    .await
                    .map_err(|e| format!("append failed: {e}"))?;
                self.model.appended(*id, entries);
            }
            Op::Finished(id) => self.engine().step_finished(&step(*id)).await,
            Op::Find(id) => self.find(*id).await?,
            Op::Delete(id) => match self.engine().log_delete(&step(*id)).await {
                Ok(()) => self.model.deleted(*id),
                Err(e) if self.archive_down() => {
                    self.trace.push(format!("  delete failed: {e}"));
                    self.model.delete_failed(*id);
                }
                Err(e) => return Err(format!("delete failed with the archive up: {e}")),
            },
            Op::Advance(by) => {
                self.clock.advance(*by);
                self.clock.settle().await;
            }
            Op::AdvanceNoWait(by) => self.clock.advance(*by),
            Op::Crash { torn } => self.crash(*torn).await,
            Op::CrashDuringUpload(by) => self.crash_during_upload(*by).await,
            Op::ArchiveUp(up) => self.store.down.store(!up, Ordering::SeqCst),
            Op::LoseUploadAnswer => {
                self.store.lost_answers.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// LogFind: an error only while the archive is down; any answer as the model says.
    ///
    /// While the archive is down, an answer is only checked for holding nothing that was
    /// not acknowledged or was deleted, unless `MODEL_STRICT_OUTAGE_READS=1`: see
    /// [`an_outage_read_of_a_step_archived_before_a_restart_is_complete_or_fails`] for the
    /// known defect that makes outage answers incomplete.
    async fn find(&mut self, id: i64) -> Result<(), String> {
        let complete = !self.archive_down() || self.strict_outage_reads;
        match self.engine().log_find(&step(id)).await {
            Ok(found) => self
                .model
                .check_answer(id, &found, complete)
                .map_err(|e| format!("LogFind of step {id}: {e}; answer {}", brief(&found))),
            Err(e) if self.archive_down() => {
                self.trace.push(format!("  find failed: {e}"));
                Ok(())
            }
            Err(e) => Err(format!(
                "LogFind of step {id} failed with the archive up: {e}"
            )),
        }
    }

    /// Drops the engine as a crash would (no shutdown, no final fsync), optionally leaves a
    /// torn record, and starts a new engine on the same spool.
    ///
    /// Archive runs are let finish first: a dropped engine stops its runtime, but a build
    /// thread or a blocking file operation would go on beside the next engine, which a real
    /// crash never lets happen. The page cache survives (a process crash, not a power cut).
    async fn crash(&mut self, torn: Option<i64>) {
        self.clock.settle().await;
        drop(self.engine.take());
        self.wait_until_gone().await;
        if let Some(id) = torn {
            tear_last_segment(&self.dir.path().join("spool"), id);
        }
        self.restart().await;
    }

    /// Waits until nothing of the dropped engine runs any more: everything that works for
    /// an engine (its state, the runs, blocking file work, build threads) holds the store.
    /// A real crash ends all of it at once; in one process it ends a moment later, and until
    /// then it may still recycle files in the spool's `tmp/` that the next engine uses.
    async fn wait_until_gone(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&self.store) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "a dropped engine still holds the archive store after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts a new engine on the spool, the archive and the clock of the dropped one.
    async fn restart(&mut self) {
        let engine = start_engine_on(
            self.dir.path().join("spool"),
            self.store.clone(),
            self.clock.clone(),
        )
        .await;
        self.engine = Some(engine);
    }

    /// Holds uploads, moves time on, and once an upload is in flight (or the pass found
    /// nothing to upload) drops the engine; the held upload never reaches the store.
    async fn crash_during_upload(&mut self, by: Duration) {
        self.store.hold_uploads.store(true, Ordering::SeqCst);
        self.clock.advance(by);
        // The pass ends without an upload when nothing is due or the archive is down.
        let clock = self.clock.clone();
        let settled = clock.settle();
        tokio::pin!(settled);
        loop {
            tokio::select! {
                () = &mut settled => break,
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    if self.store.held_uploads.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                }
            }
        }
        let in_flight = self.store.held_uploads.load(Ordering::SeqCst);
        self.trace.push(format!("  uploads in flight: {in_flight}"));
        if in_flight > 0 {
            self.spent
                .entry("  with an upload in flight")
                .or_default()
                .0 += 1;
        }
        self.store.crashes.fetch_add(1, Ordering::SeqCst);
        drop(self.engine.take());
        self.store.hold_uploads.store(false, Ordering::SeqCst);
        self.wait_until_gone().await;
        self.restart().await;
    }

    /// With the archive back, time moves on until every step is archived; then every step's
    /// log, its object and the spool must match the model, before and after a restart.
    async fn drain_and_check(&mut self) -> Result<(), String> {
        self.trace.push("drain".into());
        self.store.down.store(false, Ordering::SeqCst);
        // 16 rounds of 68 s outlast the archiver's 15-minute patience with a missing object
        // of a step the spool says was archived (after a LogDelete, late lines and a restart,
        // the spool's numbering says so although the object was deleted).
        for _ in 0..16 {
            self.clock.advance(IDLE_TIMEOUT + RETRY_MAX);
            self.clock.settle().await;
            if self.engine().stats().steps_pending == 0 {
                break;
            }
        }
        let stats = self.engine().stats();
        if stats.steps_pending != 0 {
            return Err(format!("steps left unarchived: {stats:?}"));
        }
        let left = spooled_segments(&self.dir.path().join("spool"));
        if !left.is_empty() {
            return Err(format!("spool segments left after archiving: {left:?}"));
        }
        for id in 1..=STEPS {
            self.find(id).await?;
            let key = self.engine().object_key(StepId::new(id).unwrap());
            let object = self.store.inner.get(&key).await.unwrap();
            let entries = match &object {
                Some((bytes, _)) => engine::format::decode_object(bytes)
                    .map_err(|e| format!("object of step {id} is not readable: {e}"))?,
                None => Vec::new(),
            };
            self.model
                .check(id, &entries)
                .map_err(|e| format!("object of step {id}: {e}"))?;
        }
        self.crash(None).await;
        for id in 1..=STEPS {
            self.find(id).await?;
        }
        Ok(())
    }
}

/// An answer in brief: `line=write` per entry (the write is the entry's `id`).
fn brief(entries: &[LogEntry]) -> String {
    let pairs: Vec<String> = entries
        .iter()
        .map(|e| format!("{}={}", e.line, e.id))
        .collect();
    format!("[{}]", pairs.join(" "))
}

/// The spool's segment files (`steps/<id>.<segment>.ndjson`), sorted.
fn spooled_segments(spool: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(spool.join("steps")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".ndjson"))
        .collect();
    names.sort();
    names
}

/// Appends the start of a record that was never acknowledged to the last segment of step
/// `id`, if it has one.
fn tear_last_segment(spool: &Path, id: i64) {
    let last = spooled_segments(spool)
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(&format!("{id}."))?;
            rest.strip_suffix(".ndjson")?.parse::<u32>().ok()
        })
        .max();
    if let Some(segment) = last {
        let path = spool.join("steps").join(format!("{id}.{segment}.ndjson"));
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        let torn = format!(r#"{{"id":0,"step_id":{id},"line":3,"data":"dG9y"#);
        std::io::Write::write_all(&mut file, torn.as_bytes()).unwrap();
    }
}

/// Runs one seed; the error names the seed and the operations that led to it.
async fn run_seed(seed: u64, spent: &mut Spent) -> Result<(), String> {
    let mut generator = Generator::new(seed);
    let mut run = Run::new().await;
    let mut outcome = Ok(());
    for _ in 0..OPS {
        let op = generator.next();
        outcome = run.apply(&op).await;
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() {
        let started = std::time::Instant::now();
        outcome = run.drain_and_check().await;
        let spent = run.spent.entry("drain-and-check").or_default();
        spent.0 += 1;
        spent.1 += started.elapsed();
    }
    for (kind, (calls, time)) in &run.spent {
        let total = spent.entry(kind).or_default();
        total.0 += calls;
        total.1 += *time;
    }
    outcome.map_err(|e| {
        format!(
            "seed {seed} failed (replay: MODEL_SEED={seed} cargo test -p engine --test model): \
             {e}\noperations:\n  {}",
            run.trace.join("\n  ")
        )
    })
}

/// Where runs keep their spool and archive: `MODEL_DIR` if set, else `/dev/shm` where it is
/// a directory (Linux's memory file system), else the temporary directory. The model tests
/// the engine's logic, not the disk: on a busy virtual disk, fsyncs made a run seven times
/// slower.
fn scratch_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODEL_DIR") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// `MODEL_CRASH_DURING_UPLOAD=1` adds crashes with an upload in flight. Open: with them,
/// about one seed in a thousand (184 and 188 of the first 2,000) ends with archive runs
/// that fail as "corrupt" forever (the previous object unreadable, or a verification
/// mismatch) and the step never archived; not reproduced by replaying the seed alone, so
/// timing matters. Whether the engine or this harness's crash (a dropped engine, whose
/// detached blocking writes a real crash would end) is at fault is not known yet.
fn crash_during_upload_enabled() -> bool {
    std::env::var("MODEL_CRASH_DURING_UPLOAD").is_ok_and(|v| v == "1")
}

fn strict_outage_reads() -> bool {
    std::env::var("MODEL_STRICT_OUTAGE_READS").is_ok_and(|v| v == "1")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")),
    )
}

/// The seeds of this run: `MODEL_SEED` alone, or `MODEL_SEEDS` from `MODEL_FIRST_SEED`.
fn seeds() -> std::ops::Range<u64> {
    if let Some(seed) = env_u64("MODEL_SEED") {
        return seed..seed + 1;
    }
    let first = env_u64("MODEL_FIRST_SEED").unwrap_or(0);
    first..first + env_u64("MODEL_SEEDS").unwrap_or(CI_SEEDS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_behaves_like_the_database_store_under_random_interleavings() {
    let seeds = seeds();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut spent = Spent::new();
    for seed in seeds.clone() {
        if let Err(e) = run_seed(seed, &mut spent).await {
            eprintln!("{e}\n");
            failures.push(seed);
            // Stop early on many failures: a systematic bug needs one trace, not thousands.
            if failures.len() >= 5 {
                break;
            }
        }
    }
    eprintln!(
        "model: {} seeds from {} in {:.1?}",
        seeds.end - seeds.start,
        seeds.start,
        started.elapsed()
    );
    for (kind, (calls, time)) in &spent {
        eprintln!("model:   {kind:<20} {calls:>7} calls {time:>12.1?}");
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

/// A known defect, found by the model test (seed 17 with `MODEL_STRICT_OUTAGE_READS=1`):
/// late lines of a step archived before a restart (or forgotten after the idle timeout)
/// start a fresh state that believes no object exists (`maybe_archived` false), so a
/// LogFind during an archive outage answers from the spool alone: the archived lines are
/// missing and later writes of their line numbers show, with no error. The answer must be
/// complete or an error, as it is for a step the engine never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known defect: an outage read of a step archived before a restart answers from the spool alone"]
async fn an_outage_read_of_a_step_archived_before_a_restart_is_complete_or_fails() {
    let mut run = Run::new().await;
    run.strict_outage_reads = true;
    let ops = [
        Op::Append {
            step: 1,
            entries: vec![(0, 1), (1, 2)],
        },
        Op::Finished(1),
        Op::Advance(FINALIZE_DELAY),
        Op::Crash { torn: None },
        Op::ArchiveUp(false),
        Op::Append {
            step: 1,
            entries: vec![(1, 3), (2, 4)],
        },
        Op::Find(1),
    ];
    for op in &ops {
        if let Err(e) = run.apply(op).await {
            panic!("{e}\noperations:\n  {}", run.trace.join("\n  "));
        }
    }
}
