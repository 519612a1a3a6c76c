//! Database staging on real SQLite files and (when `scripts/db/start.sh` ran) real
//! PostgreSQL and MariaDB servers: appends that keep the new lines of overlapping retries,
//! reads equal to Woodpecker's own `LogFind`, paged streaming of a large step, listing, and
//! deleting exactly the archived lines.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use logservice::LogEntry;
use woodpecker_db::staging::{
    DeletePacing, LineRanges, LogEntriesStaging, READ_PAGE_ROWS, StagingError,
};
use woodpecker_db::testing::TestDb;
use woodpecker_db::{Driver, Pool};

fn entry(line: i64, data: &[u8]) -> LogEntry {
    LogEntry {
        line,
        time: line / 10,
        data: Some(data.to_vec()),
        entry_type: line % 2,
        ..LogEntry::default()
    }
}

fn lines(range: std::ops::Range<i64>, tag: &str) -> Vec<LogEntry> {
    range
        .map(|line| entry(line, format!("{tag} line {line}\n").as_bytes()))
        .collect()
}

fn json(entries: &[LogEntry]) -> String {
    let mut out = b"[".to_vec();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        logservice::push_entry(e, &mut out);
    }
    out.push(b']');
    String::from_utf8(out).unwrap()
}

async fn read_all(staging: &LogEntriesStaging, step_id: i64) -> Vec<LogEntry> {
    staging.read(step_id).try_collect().await.unwrap()
}

fn no_pause(batch_lines: u64) -> DeletePacing {
    DeletePacing {
        batch_lines,
        pause: Duration::ZERO,
    }
}

#[tokio::test]
async fn overlapping_retries_keep_new_lines_and_the_first_write_wins() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        assert!(staging.has_unique_lines().await.unwrap(), "{:?}", db.driver);
        assert_eq!(staging.append(7, &lines(0..5, "first")).await.unwrap(), 5);
        // A retry overlapping lines 3 and 4, with new lines 5..8: only those are added.
        assert_eq!(staging.append(7, &lines(3..8, "retry")).await.unwrap(), 3);
        // Out of order, and a line twice within one batch: its first copy is kept.
        let mut batch = lines(10..12, "late");
        batch.extend(lines(8..10, "first"));
        batch.push(entry(8, b"second copy in the batch"));
        assert_eq!(staging.append(7, &batch).await.unwrap(), 4);
        assert_eq!(db.count_log_rows(7).await, 12, "{:?}", db.driver);

        let read = read_all(&staging, 7).await;
        assert_eq!(
            read.iter().map(|e| e.line).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
        for e in &read {
            let tag = match e.line {
                5..8 => "retry",
                10.. => "late",
                _ => "first",
            };
            assert_eq!(
                e.data.as_deref(),
                Some(format!("{tag} line {}\n", e.line).as_bytes()),
                "{:?} line {}",
                db.driver,
                e.line
            );
            assert_eq!(e.step_id, 7);
        }
        // Exactly what Woodpecker's own LogFind answers on these rows.
        let reference = String::from_utf8(db.woodpecker_log_find(7).await).unwrap();
        assert_eq!(json(&read), reference, "{:?}", db.driver);
        // A retry of nothing new adds nothing.
        assert_eq!(staging.append(7, &lines(0..12, "again")).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn batches_beyond_the_bind_limit_are_split_within_one_append() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        // 12 000 rows x 6 binds: more than SQLite's 32 766 and the 65 535 of the others.
        let batch = lines(0..12_000, "bulk");
        assert_eq!(staging.append(3, &batch).await.unwrap(), 12_000);
        assert_eq!(db.count_log_rows(3).await, 12_000, "{:?}", db.driver);
        let read = read_all(&staging, 3).await;
        assert_eq!(read.len(), 12_000);
        assert_eq!(
            read[11_999].data.as_deref(),
            Some(&b"bulk line 11999\n"[..])
        );
    }
}

#[tokio::test]
async fn odd_data_and_huge_lines_round_trip() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        let huge = |fill: u8| vec![fill; 5 << 20];
        let batch = vec![
            LogEntry {
                data: None,
                ..entry(0, b"")
            },
            entry(1, b""),
            entry(2, &[0xff, 0xfe, 0x00, b'\n', 0x80]),
            entry(3, "ünïcödé ✓ \u{1b}[31mred\u{1b}[0m".as_bytes()),
            // Three 5 MiB lines: each its own insert, and reads cut pages by bytes.
            entry(4, &huge(b'a')),
            entry(5, &huge(b'b')),
            entry(6, &huge(b'c')),
            entry(7, b"after the huge ones"),
        ];
        assert_eq!(
            staging.append(12, &batch).await.unwrap(),
            8,
            "{:?}",
            db.driver
        );
        let read = read_all(&staging, 12).await;
        let data: Vec<Option<Vec<u8>>> = read.iter().map(|e| e.data.clone()).collect();
        let sent: Vec<Option<Vec<u8>>> = batch.iter().map(|e| e.data.clone()).collect();
        assert!(data == sent, "{:?}: data changed on the way", db.driver);
        let reference = String::from_utf8(db.woodpecker_log_find(12).await).unwrap();
        assert!(
            json(&read) == reference,
            "{:?}: differs from LogFind",
            db.driver
        );
    }
}

#[tokio::test]
async fn bad_ids_and_values_are_refused_and_nothing_is_written() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        for bad in [0, -1, i64::MIN] {
            let err = staging.append(bad, &lines(0..2, "x")).await.unwrap_err();
            assert!(matches!(err, StagingError::InvalidStepId { step_id } if step_id == bad));
            assert!(
                err.to_string().contains(&format!("step id {bad} ")),
                "{err}"
            );
            let read: Result<Vec<_>, _> = staging.read(bad).try_collect().await;
            assert!(matches!(read, Err(StagingError::InvalidStepId { .. })));
            let delete = staging
                .delete_archived(bad, &(0..2).collect(), no_pause(10))
                .await;
            assert!(matches!(delete, Err(StagingError::InvalidStepId { .. })));
        }
        // A line beyond 32 bits: PostgreSQL and MySQL cannot hold it (MySQL's INSERT
        // IGNORE would silently clamp it), SQLite can.
        let mut batch = lines(0..3, "x");
        batch.push(entry(1 << 31, b"too far"));
        let done = staging.append(5, &batch).await;
        if db.driver == Driver::Sqlite {
            assert_eq!(done.unwrap(), 4);
        } else {
            let err = done.unwrap_err();
            assert!(
                err.to_string()
                    .contains("line 2147483648 does not fit log_entries.line"),
                "{err}"
            );
            assert_eq!(db.count_log_rows(5).await, 0, "{:?}", db.driver);
        }
        assert_eq!(db.count_log_rows(0).await + db.count_log_rows(-1).await, 0);
    }
}

#[tokio::test]
async fn a_large_step_streams_in_pages_without_collecting() {
    const ROWS: i64 = 200_000;
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        for start in (0..ROWS).step_by(10_000) {
            staging
                .append(9, &lines(start..start + 10_000, "big"))
                .await
                .unwrap();
        }
        let mut count = 0;
        let mut previous = -1;
        let mut stream = std::pin::pin!(staging.read(9));
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            assert_eq!(e.line, previous + 1, "{:?}: out of order", db.driver);
            previous = e.line;
            count += 1;
        }
        assert_eq!(count, ROWS);

        // A stream holding the whole step would still yield every row after they are
        // deleted; a paged one ends with the page it holds.
        let mut stream = std::pin::pin!(staging.read(9));
        assert_eq!(stream.next().await.unwrap().unwrap().line, 0);
        let ranges: LineRanges = (0..ROWS).collect();
        let deleted = staging
            .delete_archived(9, &ranges, no_pause(50_000))
            .await
            .unwrap();
        assert_eq!(deleted, ROWS as u64);
        let rest: Vec<LogEntry> = stream.try_collect().await.unwrap();
        assert_eq!(rest.len(), READ_PAGE_ROWS - 1, "{:?}", db.driver);
    }
}

#[tokio::test]
async fn deleting_archived_lines_keeps_rows_appended_since() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        staging.append(4, &lines(0..10_000, "a")).await.unwrap();
        staging
            .append(5, &lines(0..10, "other step"))
            .await
            .unwrap();
        let archived: LineRanges = read_all(&staging, 4).await.iter().map(|e| e.line).collect();
        assert_eq!(archived.ranges(), &[(0, 9_999)]);
        // While the archive is uploaded: late lines, and a retry of an archived line.
        staging
            .append(4, &lines(10_000..10_100, "late"))
            .await
            .unwrap();
        staging.append(4, &lines(5..6, "retry")).await.unwrap();

        let deleted = staging
            .delete_archived(4, &archived, no_pause(1_000))
            .await
            .unwrap();
        assert_eq!(deleted, 10_000, "{:?}", db.driver);
        let left = read_all(&staging, 4).await;
        assert_eq!(
            left.iter().map(|e| e.line).collect::<Vec<_>>(),
            (10_000..10_100).collect::<Vec<_>>()
        );
        assert_eq!(db.count_log_rows(5).await, 10, "other steps are untouched");
        assert_eq!(staging.delete_step(4).await.unwrap(), 100);
        assert_eq!(db.count_log_rows(4).await, 0);
    }
}

/// PostgreSQL and MySQL give out ids at insert, not at commit: a batch still in its
/// transaction while the archive is read has lower ids than rows the read saw. Deleting
/// "up to the largest id read" would lose it; deleting the archived lines does not.
#[tokio::test]
async fn a_batch_committing_after_the_read_survives_the_delete() {
    for db in TestDb::every().await {
        if db.driver == Driver::Sqlite {
            continue; // one writer at a time: ids follow commits
        }
        let staging = LogEntriesStaging::new(db.database().clone());
        let slow_batch = "INSERT INTO log_entries (step_id, time, line, data, created, type) \
                          VALUES (6, 0, 100, NULL, 0, 0)";
        macro_rules! race {
            ($pool:expr) => {{
                let mut slow = $pool.begin().await.unwrap();
                sqlx::query(slow_batch).execute(&mut *slow).await.unwrap();
                let fast = lines(0..10, "fast");
                let append = staging.append(6, &fast);
                tokio::time::timeout(Duration::from_secs(20), append)
                    .await
                    .expect("the append waited for the open transaction")
                    .unwrap();
                let read = read_all(&staging, 6).await;
                slow.commit().await.unwrap();
                read
            }};
        }
        let read = match db.database().pool() {
            Pool::Postgres(pool) => race!(pool),
            Pool::MySql(pool) => race!(pool),
            Pool::Sqlite(_) => unreachable!(),
        };
        assert_eq!(
            read.len(),
            10,
            "{:?}: the open batch is invisible",
            db.driver
        );
        let max_id_read = read.iter().map(|e| e.id).max().unwrap();
        let late = db
            .query_i64("SELECT MIN(id) FROM log_entries WHERE step_id = 6 AND line = 100")
            .await;
        assert!(
            late < max_id_read,
            "{:?}: ids are given at insert",
            db.driver
        );

        let archived: LineRanges = read.iter().map(|e| e.line).collect();
        staging
            .delete_archived(6, &archived, no_pause(1_000))
            .await
            .unwrap();
        let left = read_all(&staging, 6).await;
        assert_eq!(left.iter().map(|e| e.line).collect::<Vec<_>>(), [100]);
    }
}

#[tokio::test]
async fn staged_steps_are_listed_in_pages() {
    for db in TestDb::every().await {
        let staging = LogEntriesStaging::new(db.database().clone());
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (step, rows) in [(3, 5), (5, 1), (9, 20)] {
            staging.append(step, &lines(0..rows, "s")).await.unwrap();
        }
        // Rows no Woodpecker step owns are not listed.
        db.append(-3, &lines(0..2, "negative")).await.unwrap();

        let first = staging.staged_steps(0, 2).await.unwrap();
        assert_eq!(
            first
                .iter()
                .map(|s| (s.step_id, s.rows))
                .collect::<Vec<_>>(),
            [(3, 5), (5, 1)],
            "{:?}",
            db.driver
        );
        let next = staging.staged_steps(first[1].step_id, 2).await.unwrap();
        assert_eq!(
            next.iter().map(|s| (s.step_id, s.rows)).collect::<Vec<_>>(),
            [(9, 20)]
        );
        assert!(staging.staged_steps(9, 2).await.unwrap().is_empty());
        let max_id = db
            .query_i64("SELECT MAX(id) FROM log_entries WHERE step_id = 9")
            .await;
        assert_eq!(next[0].max_id, max_id);
        assert!(next[0].last_created >= before && next[0].last_created <= before + 60);
    }
}

#[tokio::test]
async fn schemas_without_the_unique_index_still_keep_first_writes() {
    for db in TestDb::every().await {
        db.execute(match db.driver {
            Driver::MySql => "DROP INDEX UQE_log_entries_s ON log_entries",
            _ => "DROP INDEX \"UQE_log_entries_s\"",
        })
        .await;
        let staging = LogEntriesStaging::new(db.database().clone());
        assert!(
            !staging.has_unique_lines().await.unwrap(),
            "{:?}",
            db.driver
        );
        assert_eq!(staging.append(8, &lines(0..5, "first")).await.unwrap(), 5);
        let mut retry = lines(3..8, "retry");
        retry.push(entry(7, b"twice in the batch"));
        assert_eq!(staging.append(8, &retry).await.unwrap(), 3);
        assert_eq!(db.count_log_rows(8).await, 8, "{:?}", db.driver);
        let read = read_all(&staging, 8).await;
        assert_eq!(read[4].data.as_deref(), Some(&b"first line 4\n"[..]));
        assert_eq!(read[7].data.as_deref(), Some(&b"retry line 7\n"[..]));
    }
}

/// A batch split over several statements is stored whole or not at all: the last
/// statement failing takes the earlier ones with it. (MySQL's `INSERT IGNORE` turns the
/// usual ways to make a row fail into warnings, so it is left out.)
#[tokio::test]
async fn a_split_batch_is_stored_whole_or_not_at_all() {
    for db in TestDb::every().await {
        let refuse_last_line = match db.driver {
            Driver::Sqlite => {
                "CREATE TRIGGER refuse BEFORE INSERT ON log_entries WHEN NEW.line = 11999 \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END"
            }
            Driver::Postgres => {
                "ALTER TABLE log_entries ADD CONSTRAINT refuse CHECK (line <> 11999)"
            }
            Driver::MySql => continue,
        };
        db.execute(refuse_last_line).await;
        let staging = LogEntriesStaging::new(db.database().clone());
        let err = staging
            .append(2, &lines(0..12_000, "split"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StagingError::Step { step_id: 2, .. }),
            "{err}"
        );
        assert!(!err.is_unavailable());
        assert_eq!(db.count_log_rows(2).await, 0, "{:?}", db.driver);
        // The same batch without the refused line is stored.
        assert_eq!(
            staging.append(2, &lines(0..11_999, "split")).await.unwrap(),
            11_999
        );
    }
}
