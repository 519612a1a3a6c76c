//! Append latency and throughput of database staging, side by side with the way
//! Woodpecker's database store writes, and what archive-time deletes do to them.
//!
//! ```text
//! eval "$(scripts/db/start.sh)"
//! cargo run -p woodpecker-db --example staging_bench [sqlite3] [postgres] [mysql]
//! ```
//!
//! Per database (a fresh one each, Woodpecker's schema): [`STEPS`] steps append
//! [`BATCH`]-line batches every [`PERIOD`] for [`SECONDS`] s through the addon's pool, in
//! three ways — the staging append (multi-row `INSERT … IGNORE`, one transaction),
//! Woodpecker's database store (one multi-row `INSERT` per 1000 entries, autocommit:
//! `LogAppend` in server/store/datastore/log.go calls xorm's `Insert` on each chunk), and
//! one single-row `INSERT` per line inside one transaction — then the staging append again
//! while finished steps of [`FINISHED_ROWS`] rows are deleted by their archived lines in
//! batches of 1k, 5k and 20k rows, back to back. Prints one table row per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use logservice::LogEntry;
use tokio::sync::Mutex;
use woodpecker_db::staging::{DeletePacing, LineRanges, LogEntriesStaging};
use woodpecker_db::testing::TestDb;
use woodpecker_db::{Driver, Pool};

/// Steps appending at once.
const STEPS: i64 = 16;
/// Lines per append.
const BATCH: i64 = 1000;
/// Each step appends this often (the host sends about one batch a second per step).
const PERIOD: Duration = Duration::from_secs(1);
/// Length of each append run.
const SECONDS: u64 = 10;
/// Rows of each finished step deleted during the delete runs (three such steps).
const FINISHED_ROWS: i64 = 50_000;

/// How a run writes its batches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    Staging,
    WoodpeckerStore,
    RowPerInsert,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Self::Staging => "staging: multi-row INSERT…IGNORE",
            Self::WoodpeckerStore => "Woodpecker store: multi-row INSERT/1000",
            Self::RowPerInsert => "row-per-INSERT in 1 tx",
        }
    }
}

fn batch(step: i64, first_line: i64) -> Vec<LogEntry> {
    (first_line..first_line + BATCH)
        .map(|line| LogEntry {
            step_id: step,
            line,
            time: line / 100,
            data: Some(
                format!("step {step} line {line}: Compiling some-crate v1.2.3 (/build/src) ok\n")
                    .into_bytes(),
            ),
            ..LogEntry::default()
        })
        .collect()
}

/// One single-row `INSERT` per entry inside one transaction.
async fn row_per_insert(db: &TestDb, step: i64, entries: &[LogEntry]) -> Result<(), sqlx::Error> {
    let sql = match db.driver {
        Driver::Postgres => {
            "INSERT INTO log_entries (step_id, time, line, data, created, type) \
             VALUES ($1,$2,$3,$4,$5,$6)"
        }
        _ => {
            "INSERT INTO log_entries (step_id, time, line, data, created, type) \
             VALUES (?,?,?,?,?,?)"
        }
    };
    macro_rules! run {
        ($pool:expr, $begin:expr) => {{
            let mut tx = $pool.begin_with($begin).await?;
            for e in entries {
                sqlx::query(sql)
                    .bind(step)
                    .bind(e.time)
                    .bind(e.line)
                    .bind(e.data.as_deref())
                    .bind(0_i64)
                    .bind(e.entry_type)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }};
    }
    match db.database().pool() {
        Pool::Sqlite(pool) => run!(pool, "BEGIN IMMEDIATE"),
        Pool::Postgres(pool) => run!(pool, "BEGIN"),
        Pool::MySql(pool) => run!(pool, "BEGIN"),
    }
}

struct Stats {
    /// When each append started, and how long it took.
    samples: Vec<(Instant, Duration)>,
    errors: usize,
}

impl Stats {
    /// Only the appends that overlapped `from..to`.
    fn during(self, from: Instant, to: Instant) -> Self {
        Self {
            samples: self
                .samples
                .into_iter()
                .filter(|&(start, took)| start < to && start + took > from)
                .collect(),
            errors: self.errors,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Runs the appenders for [`SECONDS`] (or until `stop` says so after at least one
/// period); returns their stats and the elapsed time.
async fn append_run(
    db: &Arc<TestDb>,
    staging: &Arc<LogEntriesStaging>,
    writer: Writer,
    first_step: i64,
    stop: Option<Arc<Mutex<bool>>>,
) -> (Stats, Duration) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for step in first_step..first_step + STEPS {
        let (db, staging, stop) = (db.clone(), staging.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(PERIOD);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Spread the steps over the period, as real steps are.
            tokio::time::sleep(PERIOD.mul_f64((step % STEPS) as f64 / STEPS as f64)).await;
            let mut stats = Stats {
                samples: Vec::new(),
                errors: 0,
            };
            let mut line = 0;
            loop {
                interval.tick().await;
                let done = match &stop {
                    // The delete runs end with the deletes, or at three times the length.
                    Some(stop) => {
                        *stop.lock().await || Instant::now() >= deadline + 2 * (deadline - started)
                    }
                    None => Instant::now() >= deadline,
                };
                if done {
                    return stats;
                }
                let entries = batch(step, line);
                line += BATCH;
                let t = Instant::now();
                let ok = match writer {
                    Writer::Staging => staging.append(step, &entries).await.is_ok(),
                    Writer::WoodpeckerStore => db.append(step, &entries).await.is_ok(),
                    Writer::RowPerInsert => row_per_insert(&db, step, &entries).await.is_ok(),
                };
                stats.samples.push((t, t.elapsed()));
                stats.errors += usize::from(!ok);
            }
        }));
    }
    let mut all = Stats {
        samples: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let stats = task.await.expect("appender");
        all.samples.extend(stats.samples);
        all.errors += stats.errors;
    }
    (all, started.elapsed())
}

fn report(driver: Driver, run: &str, stats: &Stats, elapsed: Duration, extra: &str) {
    let mut latencies: Vec<Duration> = stats.samples.iter().map(|&(_, took)| took).collect();
    latencies.sort();
    let lines = latencies.len() as f64 * BATCH as f64;
    println!(
        "| {driver} | {run} | {} | {} | {} | {} | {:.0} | {} |{extra}",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        lines / elapsed.as_secs_f64(),
        stats.errors,
    );
}

async fn bench(driver: Driver) {
    let Some(db) = TestDb::create(driver).await else {
        return;
    };
    let db = Arc::new(db);
    let staging = Arc::new(LogEntriesStaging::new(db.database().clone()));
    let mut next_step = 1;
    for writer in [
        Writer::Staging,
        Writer::WoodpeckerStore,
        Writer::RowPerInsert,
    ] {
        let (stats, elapsed) = append_run(&db, &staging, writer, next_step, None).await;
        next_step += STEPS;
        report(driver, writer.name(), &stats, elapsed, "");
    }
    for (batch_lines, pause_ms) in [
        (1_000, 0),
        (5_000, 0),
        (20_000, 0),
        (1_000, 50),
        (5_000, 200),
    ] {
        let pause = Duration::from_millis(pause_ms);
        // Three finished steps, archived (their lines known), to delete.
        let finished: Vec<i64> = (next_step..next_step + 3).collect();
        next_step += 3;
        for &step in &finished {
            for first in (0..FINISHED_ROWS).step_by(10_000) {
                let mut entries = batch(step, first);
                for i in 1..10 {
                    entries.extend(batch(step, first + i * BATCH));
                }
                if let Err(e) = staging.append(step, &entries).await {
                    println!("| {driver} | prefill failed: {e} | | | | | | |");
                }
            }
        }
        let stop = Arc::new(Mutex::new(false));
        let deleter = {
            let (staging, stop) = (staging.clone(), stop.clone());
            tokio::spawn(async move {
                // Let the appenders reach their pace first.
                tokio::time::sleep(PERIOD * 2).await;
                let started = Instant::now();
                let mut deleted = 0;
                let archived: LineRanges = (0..FINISHED_ROWS).collect();
                let pacing = DeletePacing { batch_lines, pause };
                let mut failures = Vec::new();
                for step in finished {
                    match staging.delete_archived(step, &archived, pacing).await {
                        Ok(rows) => deleted += rows,
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                let ended = Instant::now();
                // Keep appending a little after, so the run covers the whole delete.
                tokio::time::sleep(PERIOD * 2).await;
                *stop.lock().await = true;
                (deleted, started, ended, failures)
            })
        };
        let (stats, _) = append_run(&db, &staging, Writer::Staging, next_step, Some(stop)).await;
        next_step += STEPS;
        let (deleted, started, ended, failures) = deleter.await.expect("deleter");
        let took = ended - started;
        let stats = stats.during(started, ended);
        let extra = format!(
            " deleting {deleted} rows, {batch_lines}/statement, pause {pause_ms} ms: {:.1} s, {:.0} rows/s{}",
            took.as_secs_f64(),
            deleted as f64 / took.as_secs_f64(),
            failures
                .first()
                .map(|e| format!("; {} failed deletes, first: {e}", failures.len()))
                .unwrap_or_default()
        );
        report(driver, "staging during deletes", &stats, took, &extra);
    }
    let rows = db.query_i64("SELECT COUNT(*) FROM log_entries").await;
    println!("| {driver} | log_entries rows at the end: {rows} | | | | | | |");
}

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "{STEPS} steps x {BATCH}-line batches every {} ms, {SECONDS} s per run",
        PERIOD.as_millis()
    );
    println!("| database | run | appends | p50 ms | p99 ms | max ms | lines/s | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for driver in [Driver::Sqlite, Driver::Postgres, Driver::MySql] {
        if wanted.is_empty() || wanted.iter().any(|w| w == driver.name()) {
            bench(driver).await;
        }
    }
}
