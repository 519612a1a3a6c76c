//! `migrate` against real databases (SQLite always; PostgreSQL and MariaDB from
//! scripts/db/start.sh) and real archives (a local directory; SeaweedFS from
//! scripts/s3/start.sh): every settled step's object reads byte for byte as Woodpecker's own
//! `LogFind` query answers, a dry run changes nothing, running and deleted steps are left
//! alone, a run killed midway and started again loses and duplicates nothing, and
//! `--delete-source` removes exactly the migrated rows.
//!
//! Sizes: `MIGRATE_TEST_STEPS` × `MIGRATE_TEST_LINES_PER_STEP` (default 200 × 500 on SQLite,
//! a fifth of the steps on the servers). The measurement (2,000 steps, 1,000,000
//! lines, on every database configured or those `MIGRATE_MEASURE_DRIVERS` names) is
//! `cargo test -p woodpecker-s3-logs --test migrate measure_migrate -- --ignored --nocapture`.

mod tools;

use std::time::{Duration, Instant};

use logservice::LogEntry;
use tools::{Archive, command, now, run};
use woodpecker_db::Driver;
use woodpecker_db::testing::TestDb;

/// The steps of a generated database.
struct Fixture {
    /// Finished long ago: to be migrated.
    settled: Vec<i64>,
    /// Still running: left alone.
    running: i64,
    /// Rows whose step is gone from `steps`: left alone.
    deleted: i64,
}

fn size_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A line's bytes: mostly text, with null, empty and non-UTF-8 data among them.
fn line(step: i64, line: i64) -> LogEntry {
    let data = match line % 97 {
        0 => None,
        1 => Some(Vec::new()),
        2 => Some(vec![0xff, 0xfe, b'\n', 0x00, b'"']),
        _ => Some(
            format!(
                "step {step} line {line}: compiling crate {} of 412 ... ok",
                line % 412
            )
            .into_bytes(),
        ),
    };
    LogEntry {
        id: 0,
        step_id: step,
        time: line / 10,
        line,
        data,
        entry_type: i64::from(line % 5 == 0),
    }
}

/// A Woodpecker database with `steps` finished steps of `lines` lines each, one running
/// step and one deleted step, written as Woodpecker's database store writes them.
async fn generate(db: &TestDb, steps: usize, lines: usize) -> Fixture {
    let long_ago = now() - 3600;
    db.add_repo(1, "org/repo").await;
    db.add_pipeline(1, 1, 1, "success", long_ago - 600).await;
    db.add_pipeline(2, 1, 2, "running", now() - 60).await;
    let mut settled = Vec::new();
    for step in 1..=steps as i64 {
        db.add_step(step, 1, step, "success", long_ago).await;
        let entries: Vec<LogEntry> = (0..lines as i64).map(|l| line(step, l)).collect();
        db.append(step, &entries).await.unwrap();
        settled.push(step);
    }
    // The database store refuses a batch holding a line the step has (unique index).
    assert!(db.append(1, &[line(1, 0)]).await.is_err());
    let running = steps as i64 + 1;
    db.add_step(running, 2, 1, "running", 0).await;
    let entries: Vec<LogEntry> = (0..50).map(|l| line(running, l)).collect();
    db.append(running, &entries).await.unwrap();
    let deleted = steps as i64 + 2;
    let entries: Vec<LogEntry> = (0..30).map(|l| line(deleted, l)).collect();
    db.append(deleted, &entries).await.unwrap();
    Fixture {
        settled,
        running,
        deleted,
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every settled step's object equals Woodpecker's LogFind; the others have none.
async fn assert_migrated(db: &TestDb, archive: &Archive, fixture: &Fixture) {
    for &step in &fixture.settled {
        let reference = db.woodpecker_log_find(step).await;
        let object = archive
            .log_json(step)
            .await
            .unwrap_or_else(|| panic!("step {step} has no object"));
        assert!(
            object == reference,
            "step {step}: the object differs from Woodpecker's LogFind"
        );
    }
    for step in [fixture.running, fixture.deleted] {
        assert!(archive.log_json(step).await.is_none(), "step {step}");
    }
}

async fn migrate_every_case(db: &TestDb, steps: usize, lines: usize) {
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    let fixture = generate(db, steps, lines).await;
    let rows_before = db.count_log_rows(1).await;

    // A dry run writes and deletes nothing, and says what it would do.
    let output = run(
        &mut command(
            work.path(),
            db,
            &archive,
            &["migrate", "--dry-run", "--delete-source"],
        ),
        0,
    );
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "steps would be migrated: {steps} ({} lines",
            steps * lines
        )),
        "{text}"
    );
    assert!(archive.keys().await.is_empty(), "a dry run wrote objects");
    assert_eq!(db.count_log_rows(1).await, rows_before);

    let started = Instant::now();
    let output = run(
        &mut command(work.path(), db, &archive, &["migrate", "--jobs", "4"]),
        0,
    );
    let elapsed = started.elapsed();
    let text = stdout(&output);
    assert!(
        text.contains(&format!("steps migrated: {steps} ({} lines", steps * lines)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "steps left alone because Woodpecker may still write to them: 1 (ids {})",
            fixture.running
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "steps no longer in Woodpecker (their pipelines were deleted), left alone: 1 (30 lines"
        ),
        "{text}"
    );
    eprintln!(
        "{}: {} lines in {elapsed:?} ({:.0} lines/s)",
        db.driver,
        steps * lines,
        (steps * lines) as f64 / elapsed.as_secs_f64()
    );
    assert_migrated(db, &archive, &fixture).await;

    // Again: everything is there already; nothing is written.
    let output = run(&mut command(work.path(), db, &archive, &["migrate"]), 0);
    let text = stdout(&output);
    assert!(text.contains("steps migrated: 0 (0 lines"), "{text}");
    assert!(
        text.contains(&format!("steps already archived: {steps} (")),
        "{text}"
    );

    // --delete-source: the migrated steps' rows go, verified objects stay, the others stay.
    let references: Vec<Vec<u8>> = {
        let mut all = Vec::new();
        for &step in &fixture.settled {
            all.push(db.woodpecker_log_find(step).await);
        }
        all
    };
    let output = run(
        &mut command(
            work.path(),
            db,
            &archive,
            &["migrate", "--delete-source", "--delete-batch", "200"],
        ),
        0,
    );
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "legacy copies deleted: {} rows, 0 files",
            steps * lines
        )),
        "{text}"
    );
    let advice = match db.driver {
        Driver::Sqlite => "VACUUM",
        Driver::Postgres => "pg_repack",
        Driver::MySql => "OPTIMIZE TABLE log_entries",
    };
    assert!(text.contains(advice), "{text}");
    for (step, reference) in fixture.settled.iter().zip(&references) {
        assert_eq!(db.count_log_rows(*step).await, 0, "step {step}");
        assert!(
            archive.log_json(*step).await.unwrap() == *reference,
            "step {step}"
        );
    }
    assert_eq!(db.count_log_rows(fixture.running).await, 50);
    assert_eq!(db.count_log_rows(fixture.deleted).await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_settled_steps_exactly_on_every_database() {
    let steps = size_from_env("MIGRATE_TEST_STEPS", 200);
    let lines = size_from_env("MIGRATE_TEST_LINES_PER_STEP", 500);
    for db in TestDb::every().await {
        let steps = if db.driver == Driver::Sqlite {
            steps
        } else {
            (steps / 5).max(1)
        };
        migrate_every_case(&db, steps, lines).await;
    }
}

/// Lines the addon archived after the switch are merged with the legacy lines; where both
/// have a line, the object's wins (first write wins, as for late lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_merges_into_an_existing_object() {
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    db.add_pipeline(1, 1, 1, "success", now() - 7200).await;
    db.add_step(5, 1, 1, "success", now() - 3600).await;
    let legacy: Vec<LogEntry> = (0..4).map(|l| line(5, l)).collect();
    db.append(5, &legacy).await.unwrap();
    let mut late = line(5, 3);
    late.data = Some(b"archived first".to_vec());
    let newer = line(5, 7);
    let mut writer = engine::format::ObjectWriter::new(Vec::new(), 3).unwrap();
    writer.push(&late).unwrap();
    writer.push(&newer).unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    let body = work.path().join("object");
    std::fs::write(&body, bytes).unwrap();
    let step = logservice::StepId::new(5).unwrap();
    archive
        .store
        .put_file(
            &engine::format::object_key("", step),
            &body,
            &summary.to_meta(step),
        )
        .await
        .unwrap();

    run(&mut command(work.path(), &db, &archive, &["migrate"]), 0);
    let expected = tools::json_array(&[
        legacy[0].clone(),
        legacy[1].clone(),
        legacy[2].clone(),
        late,
        newer,
    ]);
    // The legacy rows carry their row ids, as Woodpecker's LogFind returns them.
    let reference = db.woodpecker_log_find(5).await;
    let mut ids = Vec::new();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&reference).unwrap();
    for row in &rows {
        ids.push(row["id"].as_i64().unwrap());
    }
    let mut expected: Vec<serde_json::Value> = serde_json::from_slice(&expected).unwrap();
    for (entry, id) in expected.iter_mut().zip(&ids[..3]) {
        entry["id"] = (*id).into();
    }
    let got: Vec<serde_json::Value> =
        serde_json::from_slice(&archive.log_json(5).await.unwrap()).unwrap();
    assert_eq!(got, expected);
}

/// SIGKILL in the middle of a run, then a second run: every object complete, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_killed_midway_then_run_again_loses_and_duplicates_nothing() {
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    let fixture = generate(&db, 300, 400).await;

    let mut child = command(work.path(), &db, &archive, &["migrate", "--jobs", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let written = loop {
        let written = archive.keys().await.len();
        if written >= 30 || Instant::now() > deadline {
            break written;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let after_kill = archive.keys().await.len();
    eprintln!("killed after {written} objects ({after_kill} once it was dead)");
    assert!(
        (30..fixture.settled.len()).contains(&after_kill),
        "the run was not killed midway: {after_kill} objects"
    );

    let output = run(&mut command(work.path(), &db, &archive, &["migrate"]), 0);
    let text = stdout(&output);
    assert!(
        text.contains(&format!("steps already archived: {after_kill} (")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "steps migrated: {} (",
            fixture.settled.len() - after_kill
        )),
        "{text}"
    );
    assert_migrated(&db, &archive, &fixture).await;
    // Nothing of the killed run is left in the temporary directory.
    let tmp = work.path().join("woodpecker-s3-logs-migrate");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_to_seaweedfs() {
    let Some(archive) = Archive::seaweedfs("migrate").await else {
        return;
    };
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let fixture = generate(&db, 30, 300).await;
    run(
        &mut command(work.path(), &db, &archive, &["migrate", "--jobs", "4"]),
        0,
    );
    assert_migrated(&db, &archive, &fixture).await;
}

/// The measurement: 2,000 steps, 1,000,000 lines (sizes from the environment as
/// above) on every database of `MIGRATE_MEASURE_DRIVERS`. Prints, per database, the wall
/// time, lines/s and peak RSS of `migrate --delete-source`, and the size of `log_entries`
/// before, after the deletion and after the space is given back (VACUUM, VACUUM FULL,
/// OPTIMIZE TABLE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of a few minutes per database: run with --ignored --nocapture"]
async fn measure_migrate_of_a_million_lines() {
    let steps = size_from_env("MIGRATE_TEST_STEPS", 2_000);
    let lines = size_from_env("MIGRATE_TEST_LINES_PER_STEP", 500);
    for driver in measured_drivers() {
        let db = TestDb::create(driver).await.unwrap_or_else(|| {
            panic!("{MEASURE_DRIVERS} names {driver}, whose test server is not configured")
        });
        measure_migrate(&db, steps, lines).await;
    }
}

/// Which databases the measurement runs on.
const MEASURE_DRIVERS: &str = "MIGRATE_MEASURE_DRIVERS";

/// `MIGRATE_MEASURE_DRIVERS` (comma-separated `sqlite`/`sqlite3`, `postgres`, `mysql`), by
/// default SQLite and every server whose data source scripts/db/start.sh exported.
fn measured_drivers() -> Vec<Driver> {
    let Ok(list) = std::env::var(MEASURE_DRIVERS) else {
        let mut all = vec![Driver::Sqlite];
        if std::env::var(woodpecker_db::testing::POSTGRES_ENV).is_ok() {
            all.push(Driver::Postgres);
        }
        if std::env::var(woodpecker_db::testing::MYSQL_ENV).is_ok() {
            all.push(Driver::MySql);
        }
        return all;
    };
    list.split(',')
        .map(|name| match name.trim() {
            "sqlite" => Driver::Sqlite,
            name => Driver::parse(MEASURE_DRIVERS, name).unwrap_or_else(|e| panic!("{e}")),
        })
        .collect()
}

async fn measure_migrate(db: &TestDb, steps: usize, lines: usize) {
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    let started = Instant::now();
    let fixture = generate(db, steps, lines).await;
    eprintln!(
        "{}: generated {} lines in {:?}",
        db.driver,
        steps * lines,
        started.elapsed()
    );
    let before = log_table_size(db).await;
    let before_free = innodb_free_space(db).await;

    let started = Instant::now();
    let (output, peak_kib) = run_measuring_peak_rss(&mut command(
        work.path(),
        db,
        &archive,
        &["migrate", "--delete-source"],
    ));
    let elapsed = started.elapsed();
    assert!(
        output.contains(&format!("steps migrated: {steps}")),
        "{output}"
    );
    assert_eq!(db.count_log_rows(fixture.settled[0]).await, 0);
    let after_delete = log_table_size(db).await;
    let after_delete_free = innodb_free_space(db).await;
    // What the summary advises to give the space back.
    let reclaim = match db.driver {
        Driver::Sqlite => "VACUUM",
        Driver::Postgres => "VACUUM FULL log_entries",
        Driver::MySql => "OPTIMIZE TABLE log_entries",
    };
    db.execute(reclaim).await;
    let after_vacuum = log_table_size(db).await;
    let after_vacuum_free = innodb_free_space(db).await;
    let archived: u64 = {
        let mut total = 0;
        for key in archive.keys().await {
            total += archive.store.head(&key).await.unwrap().unwrap().size;
        }
        total
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "MEASURED {}: {} lines / {steps} steps migrated with --delete-source in {elapsed:.1?} ({:.0} lines/s); peak RSS {} MiB; log_entries {:.1} MiB before, {:.1} MiB after deleting, {:.1} MiB after {}{}; archive {:.1} MiB",
        db.driver,
        steps * lines,
        (steps * lines) as f64 / elapsed.as_secs_f64(),
        peak_kib / 1024,
        mib(before),
        mib(after_delete),
        mib(after_vacuum),
        reclaim,
        match (before_free, after_delete_free, after_vacuum_free) {
            (Some(before), Some(after_delete), Some(after_vacuum)) => format!(
                " (InnoDB data_free, kept in the table's file: {:.1}, {:.1}, {:.1} MiB)",
                mib(before),
                mib(after_delete),
                mib(after_vacuum)
            ),
            _ => String::new(),
        },
        mib(archived)
    );
}

/// The space `log_entries` takes: the SQLite file (the table is nearly all of it),
/// PostgreSQL's `pg_total_relation_size` (table, indexes, TOAST), MariaDB's
/// `data_length + index_length` (InnoDB statistics, refreshed first).
async fn log_table_size(db: &TestDb) -> u64 {
    let bytes = match db.driver {
        Driver::Sqlite => return std::fs::metadata(&db.datasource).unwrap().len(),
        Driver::Postgres => {
            db.query_i64("SELECT pg_total_relation_size('log_entries')")
                .await
        }
        Driver::MySql => {
            db.execute("ANALYZE TABLE log_entries").await;
            db.query_i64(
                "SELECT CAST(data_length + index_length AS SIGNED) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = 'log_entries'",
            )
            .await
        }
    };
    u64::try_from(bytes).unwrap()
}

/// MariaDB's `data_free` for `log_entries` (after [`log_table_size`] refreshed the
/// statistics): the pages InnoDB freed but keeps in the table's file until OPTIMIZE TABLE;
/// `None` on the other databases.
async fn innodb_free_space(db: &TestDb) -> Option<u64> {
    if db.driver != Driver::MySql {
        return None;
    }
    let bytes = db
        .query_i64(
            "SELECT CAST(data_free AS SIGNED) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'log_entries'",
        )
        .await;
    Some(u64::try_from(bytes).unwrap())
}

/// Runs the command to a zero exit and returns its stdout and its own peak resident set
/// (KiB): wait4 reports the one child's, where RUSAGE_CHILDREN would keep the largest of
/// every database's run.
fn run_measuring_peak_rss(command: &mut std::process::Command) -> (String, u64) {
    use std::io::Read;
    #[expect(
        clippy::zombie_processes,
        reason = "wait4 below reaps it, for its rusage"
    )]
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 only writes the struct and status it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a status and a rusage struct, for our own child.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprintln!("stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, u64::try_from(usage.ru_maxrss).unwrap())
}

/// How long one delete statement of `--delete-source` holds the table, per batch size: the
/// statement `migrate` runs, on a table of 300,000 rows (30 steps of 10,000 lines), on every
/// database available. Chooses `--delete-batch`'s default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_delete_batch_sizes() {
    for db in TestDb::every().await {
        let steps = 30;
        for step in 1..=steps {
            let entries: Vec<LogEntry> = (0..10_000).map(|l| line(step, l)).collect();
            db.append(step, &entries).await.unwrap();
        }
        let mut step = 0;
        for batch in [1_000u64, 5_000, 20_000, 100_000] {
            let (mut longest, mut total, mut statements) = (Duration::ZERO, Duration::ZERO, 0);
            // Six steps (60,000 rows) per batch size.
            for _ in 0..6 {
                step += 1;
                loop {
                    let started = Instant::now();
                    let deleted = db.database().log_delete_batch(step, batch).await.unwrap();
                    let took = started.elapsed();
                    longest = longest.max(took);
                    total += took;
                    statements += 1;
                    if deleted < batch {
                        break;
                    }
                }
            }
            eprintln!(
                "MEASURED {}: --delete-batch {batch}: {statements} statements, longest {longest:.1?}, mean {:.1?}, {:.0} rows/s",
                db.driver,
                total / statements,
                60_000.0 / total.as_secs_f64()
            );
        }
    }
}

/// From Woodpecker's file store: `<step id>.json` files (batches appended as they came,
/// out of order and with an agent's retried batch) become objects ordered by line, the
/// first written of a line winning; a file written to minutes ago is left alone;
/// `--delete-source` removes the migrated files only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_the_file_store() {
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let mut archive = Archive::local(work.path());
    let files = work.path().join("woodpecker-logs");
    std::fs::create_dir(&files).unwrap();
    archive.env.insert(
        "WOODPECKER_LOG_STORE_S3_LEGACY_FILE_DIR".into(),
        files.to_string_lossy().into_owned(),
    );
    db.add_pipeline(1, 1, 1, "success", now() - 7200).await;
    let write = |step: i64, entries: &[LogEntry], age: Duration| {
        let mut text = Vec::new();
        for entry in entries {
            logservice::push_entry(entry, &mut text);
            text.push(b'\n');
        }
        let path = files.join(format!("{step}.json"));
        std::fs::write(&path, text).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    let hour = Duration::from_secs(3600);
    db.add_step(7, 1, 1, "success", now() - 3600).await;
    let mut retried = line(7, 1);
    retried.data = Some(b"resent by the agent".to_vec());
    write(
        7,
        &[
            line(7, 2),
            line(7, 3),
            line(7, 0),
            line(7, 1),
            retried,
            line(7, 4),
        ],
        hour,
    );
    db.add_step(8, 1, 2, "success", now() - 3600).await;
    write(8, &[line(8, 0)], Duration::from_secs(10)); // still being written to

    let output = run(
        &mut command(work.path(), &db, &archive, &["migrate", "--delete-source"]),
        0,
    );
    let text = stdout(&output);
    assert!(
        text.contains("legacy copies deleted: 0 rows, 1 files"),
        "{text}"
    );
    let expected = tools::json_array(&[line(7, 0), line(7, 1), line(7, 2), line(7, 3), line(7, 4)]);
    assert!(archive.log_json(7).await.unwrap() == expected);
    assert!(archive.log_json(8).await.is_none());
    assert!(!files.join("7.json").exists());
    assert!(files.join("8.json").exists());
}
