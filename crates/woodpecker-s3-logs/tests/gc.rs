//! `gc` against a real database (SQLite; PostgreSQL and MariaDB when scripts/db/start.sh
//! runs) and real archives: a dry run deletes nothing and reports what it would; `--apply`
//! deletes exactly the objects of deleted steps (10,000 objects, 30 % orphans, on a local
//! directory; a smaller case on SeaweedFS), with their legacy rows; retention rules against
//! a fixture whose answers were worked out by hand.

mod tools;

use std::collections::BTreeSet;
use std::path::Path;

use archive::ObjectStore;
use logservice::{LogEntry, StepId};
use tools::{Archive, command, now, run};
use woodpecker_db::testing::TestDb;

const DAY: i64 = 86_400;

/// A small valid object for `step` (one line), put through the store.
async fn put_object(store: &dyn ObjectStore, work: &Path, step: i64) -> u64 {
    let id = StepId::new(step).unwrap();
    let mut writer = engine::format::ObjectWriter::new(Vec::new(), 3).unwrap();
    writer
        .push(&LogEntry {
            step_id: step,
            data: Some(format!("log of step {step}").into_bytes()),
            ..LogEntry::default()
        })
        .unwrap();
    let (bytes, summary) = writer.finish().unwrap();
    let body = work.join(format!("body-{step}"));
    std::fs::write(&body, &bytes).unwrap();
    let info = store
        .put_file(
            &engine::format::object_key("", id),
            &body,
            &summary.to_meta(id),
        )
        .await
        .unwrap();
    std::fs::remove_file(body).unwrap();
    info.size
}

/// Objects for `steps` written straight into the local store's directory in its documented
/// file format (a metadata line, then the object), without the fsyncs of a real upload that
/// would make 10,000 objects take a minute.
fn write_objects_directly(archive: &Archive, steps: std::ops::RangeInclusive<i64>) {
    let root = Path::new(&archive.env["WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR"]).to_owned();
    for step in steps {
        let id = StepId::new(step).unwrap();
        let mut writer = engine::format::ObjectWriter::new(Vec::new(), 3).unwrap();
        writer
            .push(&LogEntry {
                step_id: step,
                data: Some(format!("log of step {step}").into_bytes()),
                ..LogEntry::default()
            })
            .unwrap();
        let (bytes, summary) = writer.finish().unwrap();
        let meta = summary.to_meta(id);
        let header = serde_json::json!({
            "v": 1,
            "content_type": meta.content_type,
            "content_encoding": meta.content_encoding,
            "user": meta.user,
        });
        let path = root.join(engine::format::object_key("", id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = serde_json::to_vec(&header).unwrap();
        file.push(b'\n');
        file.extend_from_slice(&bytes);
        std::fs::write(path, file).unwrap();
    }
}

/// Rows in `steps` for `ids`, all finished an hour ago in pipeline 1.
async fn add_steps(db: &TestDb, ids: impl Iterator<Item = i64>) {
    // One statement per 500 rows: quick on every driver.
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("({id}, 1, {id}, 'success', {})", now() - 3600))
            .collect();
        db.execute(&format!(
            "INSERT INTO steps (id, pipeline_id, pid, state, finished) VALUES {}",
            values.join(",")
        ))
        .await;
    }
}

fn steps_of(keys: &[String]) -> BTreeSet<i64> {
    keys.iter()
        .map(|k| engine::format::step_of_key("", k).unwrap().get())
        .collect()
}

/// 10,000 objects, 30 % of whose steps Woodpecker deleted: the dry run reports 3,000 and
/// deletes none; --apply deletes exactly those, and their legacy rows; a step still in the
/// spool keeps its object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_exactly_the_objects_of_deleted_steps() {
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    let total = 10_000i64;
    let orphan = |id: i64| id % 10 < 3; // ids ending in 0, 1, 2: 30 %
    db.add_pipeline(1, 1, 1, "success", now() - DAY).await;
    add_steps(&db, (1..=total).filter(|&id| !orphan(id))).await;
    write_objects_directly(&archive, 1..=total);
    // What gc counts: the sizes the listing reports (on a directory, whole files).
    let mut orphan_bytes = 0;
    let mut start = None;
    loop {
        let page = archive
            .store
            .list_page("v1/", start.as_deref(), 1000)
            .await
            .unwrap();
        for object in &page.objects {
            if orphan(engine::format::step_of_key("", &object.key).unwrap().get()) {
                orphan_bytes += object.size;
            }
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    // Legacy rows of a deleted step go with its object (nothing may resurface).
    db.append(
        20,
        &[LogEntry {
            step_id: 20,
            ..LogEntry::default()
        }],
    )
    .await
    .unwrap();
    // A deleted step whose lines are still in the addon's spool keeps its object.
    let steps_dir = tools::spool(work.path()).join("steps");
    std::fs::create_dir_all(&steps_dir).unwrap();
    std::fs::write(steps_dir.join("30.0.ndjson"), b"").unwrap();

    let output = run(&mut command(work.path(), &db, &archive, &["gc"]), 0);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("10000 objects"), "{text}");
    assert!(
        text.contains(&format!(
            "of steps deleted from Woodpecker (would be deleted): 3000 objects, {}",
            human(orphan_bytes)
        )),
        "{text}"
    );
    assert!(text.contains("kept: 7000 objects"), "{text}");
    assert!(text.contains("spool still holds lines of them"), "{text}");
    assert_eq!(archive.keys().await.len(), 10_000, "a dry run deleted");
    assert_eq!(db.count_log_rows(20).await, 1);

    let output = run(
        &mut command(work.path(), &db, &archive, &["gc", "--apply"]),
        0,
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("deleted: 2999 objects"), "{text}");
    let left = steps_of(&archive.keys().await);
    let expected: BTreeSet<i64> = (1..=total).filter(|&id| !orphan(id) || id == 30).collect();
    assert!(left == expected, "{} objects left", left.len());
    assert_eq!(db.count_log_rows(20).await, 0);

    // Nothing more to do.
    let output = run(
        &mut command(work.path(), &db, &archive, &["gc", "--apply"]),
        0,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted: 0 objects"));
}

fn human(bytes: u64) -> String {
    let mib = bytes as f64 / 1024.0 / 1024.0;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if mib < 1.0 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_on_seaweedfs_across_pages() {
    let Some(archive) = Archive::seaweedfs("gc").await else {
        return;
    };
    let db = TestDb::sqlite().await;
    let work = tempfile::tempdir().unwrap();
    let total = 1_500i64;
    let orphan = |id: i64| id % 10 < 3;
    db.add_pipeline(1, 1, 1, "success", now() - DAY).await;
    add_steps(&db, (1..=total).filter(|&id| !orphan(id))).await;
    for step in 1..=total {
        put_object(&*archive.store, work.path(), step).await;
    }
    run(&mut command(work.path(), &db, &archive, &["gc"]), 0);
    assert_eq!(archive.keys().await.len(), 1_500);
    let output = run(
        &mut command(work.path(), &db, &archive, &["gc", "--apply"]),
        0,
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted: 450 objects"));
    let left = steps_of(&archive.keys().await);
    assert!(
        left == (1..=total)
            .filter(|&id| !orphan(id))
            .collect::<BTreeSet<_>>()
    );
}

/// The retention fixture: two repositories, one step per pipeline (step id = pipeline id ×
/// 10 + 1), and one deleted step (999).
///
/// | pipeline | repo | number | created  | status  |
/// |---|---|---|---|---|
/// | 1 | 1 | 1 | 100 days | success |
/// | 2 | 1 | 2 |  60 days | success |
/// | 3 | 1 | 3 |  40 days | failure |
/// | 4 | 1 | 4 |  10 days | success |
/// | 5 | 1 | 5 |   1 day  | success |
/// | 6 | 2 | 1 |  90 days | killed  |
/// | 7 | 2 | 2 |  80 days | running |
/// | 8 | 2 | 3 |  50 days | success |
async fn retention_fixture(db: &TestDb) {
    let pipelines = [
        (1, 1, 1, 100, "success"),
        (2, 1, 2, 60, "success"),
        (3, 1, 3, 40, "failure"),
        (4, 1, 4, 10, "success"),
        (5, 1, 5, 1, "success"),
        (6, 2, 1, 90, "killed"),
        (7, 2, 2, 80, "running"),
        (8, 2, 3, 50, "success"),
    ];
    for (id, repo, number, days, status) in pipelines {
        db.add_pipeline(id, repo, number, status, now() - days * DAY)
            .await;
        let state = if status == "running" {
            "running"
        } else {
            status
        };
        db.add_step(
            id * 10 + 1,
            id,
            1,
            state,
            if state == "running" {
                0
            } else {
                now() - days * DAY + 600
            },
        )
        .await;
    }
}

/// Hand-worked answers: which steps' objects each set of options deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_rules_delete_the_hand_computed_sets_on_every_database() {
    let cases: [(&[&str], &[i64]); 5] = [
        // No rule: only the deleted step.
        (&[], &[999]),
        // Created in the last 30 days: pipelines 4, 5 (and 7, running) stay.
        (&["--keep-days", "30"], &[11, 21, 31, 61, 81, 999]),
        // The newest 2 per repo: 4, 5 in repo 1; 8, 7 in repo 2.
        (&["--keep-last", "2"], &[11, 21, 31, 61, 999]),
        // Either rule keeps: 45 days keeps 3, 4, 5; newest 1 keeps 5 and 8; 7 runs.
        (
            &["--keep-days", "45", "--keep-last", "1"],
            &[11, 21, 61, 999],
        ),
        // The newest 1 per repo only: 5 and 8 stay, 7 runs.
        (&["--keep-last", "1"], &[11, 21, 31, 41, 61, 999]),
    ];
    for db in TestDb::every().await {
        retention_fixture(&db).await;
        for (options, expected) in cases {
            let work = tempfile::tempdir().unwrap();
            let archive = Archive::local(work.path());
            let all = [11, 21, 31, 41, 51, 61, 71, 81, 999];
            for step in all {
                put_object(&*archive.store, work.path(), step).await;
            }
            let mut args = vec!["gc"];
            args.extend_from_slice(options);
            run(&mut command(work.path(), &db, &archive, &args), 0);
            assert_eq!(archive.keys().await.len(), all.len(), "dry run deleted");
            args.push("--apply");
            run(&mut command(work.path(), &db, &archive, &args), 0);
            let left = steps_of(&archive.keys().await);
            let deleted: Vec<i64> = all.iter().copied().filter(|s| !left.contains(s)).collect();
            assert_eq!(deleted, expected, "{}: gc {options:?}", db.driver);
        }
    }
}

#[test]
fn gc_without_a_database_says_what_to_set() {
    let work = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(tools::BIN)
        .arg("gc")
        .env_clear()
        .env(
            "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
            work.path().join("spool"),
        )
        .env(
            "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
            work.path().join("archive"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("WOODPECKER_DATABASE_DRIVER"), "{text}");
}

#[test]
fn retention_options_must_be_positive() {
    for option in ["--keep-days", "--keep-last"] {
        let output = std::process::Command::new(tools::BIN)
            .args(["gc", option, "0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.contains(option) && text.contains('0'), "{text}");
    }
}

/// One prefix, one Woodpecker: `gc --apply` marks the prefix for its database; another
/// database's `gc` and `migrate` (dry runs too) refuse it, deleting and writing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_woodpeckers_prefix_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let archive = Archive::local(work.path());
    let ours = TestDb::sqlite().await;
    let theirs = TestDb::sqlite().await;
    for (db, byte) in [(&ours, "11"), (&theirs, "22")] {
        db.set_server_config(woodpecker_db::instance::SIGNATURE_KEY, &byte.repeat(64))
            .await;
    }
    put_object(&*archive.store, work.path(), 5).await;
    std::fs::create_dir_all(tools::spool(work.path())).unwrap();
    run(
        &mut command(work.path(), &ours, &archive, &["gc", "--apply"]),
        0,
    );
    let marker = woodpecker_db::instance::marker_key("");
    assert!(archive.store.head(&marker).await.unwrap().is_some());
    assert!(archive.keys().await.is_empty(), "step 5 is not in `ours`");

    put_object(&*archive.store, work.path(), 5).await;
    for args in [
        &["gc"][..],
        &["gc", "--apply"],
        &["migrate", "--dry-run"],
        &["migrate"],
    ] {
        let output = run(&mut command(work.path(), &theirs, &archive, args), 1);
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains("belongs to another Woodpecker instance")
                && text.contains("WOODPECKER_LOG_STORE_S3_ADOPT_PREFIX"),
            "{args:?}: {text}"
        );
    }
    assert_eq!(
        archive.keys().await.len(),
        1,
        "the refused runs changed the archive"
    );
}
