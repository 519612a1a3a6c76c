//! The round trip: this binary launched as the addon exactly as Woodpecker launches it, a few
//! lines appended to a probe step, read back, archived, read back from the archive, and
//! deleted with LogDelete so nothing is left behind.

use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;

use archive::ObjectStore;
use engine::format::object_key;
use engine::table::{read_since_marker, since_marker_key};
use engine::{FINALIZE_DELAY, IDLE_TIMEOUT, SPOOL_DIR};
use logservice::{LogEntry, LogService, Step, StepId};
use woodpecker_db::Database;

use super::report::{CheckId, Report};
use crate::config::{Backend, Config};
use crate::launch::{LaunchedAddon, launch, wait_for_object};
use crate::variables::{ARCHIVE_DIR, LOG_LEVEL_VARS};

/// How long the probe step may take to reach the archive once finished (with no grace
/// period it is archived at once; a working bucket takes well under a second).
const ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// Lines the probe step gets.
const LINES: i64 = 3;

/// The probe step's id: `i64::MAX` minus this process's id. Woodpecker's step ids come from
/// its database's auto-increment (a BIGINT counting up from 1), which no real server gets
/// anywhere near 9.2·10¹⁸ with; the pid (below 2²² on Linux) keeps doctors running at once
/// on one host apart. The object it archives to lies in the archive's own key range
/// (`v1/807/…`), which is what the round trip must exercise, and is deleted at the end.
pub(super) fn probe_step_id() -> i64 {
    i64::MAX - i64::from(std::process::id())
}

/// The launched addon's idle timeout with database staging: it lists the steps staged in
/// the real `log_entries` (those of a running addon too) and must archive none of them in
/// the seconds it runs, only the probe step, on its StepFinished.
const DATABASE_IDLE_TIMEOUT: &str = "10000h";

/// Runs the round trip and reports it. `archive_works` says whether the earlier checks
/// showed the archive accepting writes; when not, the lines are not awaited in the archive
/// (the addon would keep them in its spool and retry forever). `db` is set with database
/// staging: the addon is launched in that mode against the real database, the probe
/// step's rows are staged in its `log_entries`, and are checked to be gone at the end.
pub(super) async fn check(
    report: &mut Report,
    config: &Config,
    store: &dyn ObjectStore,
    archive_works: bool,
    db: Option<&Database>,
) {
    if let Some(db) = db {
        check_database(report, config, store, archive_works, db).await;
        return;
    }
    // The running addon holds the real spool's lock, and must not see a stranger's lines:
    // the launched addon gets a spool of its own inside it (same volume, same permissions),
    // removed afterwards.
    let spool = config
        .engine
        .spool_dir
        .join(format!("doctor-{}", std::process::id()));
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spool)
    {
        report.fail(
            CheckId::RoundTrip,
            format!("cannot create {}: {e}", spool.display()),
            format!("make {} writable", config.engine.spool_dir.display()),
        );
        return;
    }
    let mut overrides = vec![
        (SPOOL_DIR.name.to_owned(), spool.display().to_string()),
        // Archive as soon as the step finishes.
        (FINALIZE_DELAY.name.to_owned(), "0".to_owned()),
    ];
    if let Backend::LocalDir(dir) = &config.backend {
        // The default archive directory sits next to the spool: keep the real one.
        overrides.push((ARCHIVE_DIR.name.to_owned(), dir.display().to_string()));
    }
    if LOG_LEVEL_VARS
        .iter()
        .all(|var| std::env::var_os(var).is_none())
    {
        overrides.push((LOG_LEVEL_VARS[0].to_owned(), "warn".to_owned()));
    }
    let outcome = drive(&overrides, config, store, archive_works, None).await;
    let _ = std::fs::remove_dir_all(&spool);
    conclude(report, outcome);
}

fn conclude(report: &mut Report, outcome: Result<String, String>) {
    match outcome {
        Ok(detail) => report.pass(CheckId::RoundTrip, detail),
        Err(detail) => report.fail(
            CheckId::RoundTrip,
            detail,
            format!(
                "fix the failures above first; if everything else passes, run the addon with {}=debug and read the Woodpecker server's log",
                LOG_LEVEL_VARS[0]
            ),
        ),
    }
}

/// The round trip with database staging: the addon runs in that mode (inherited) with no
/// spool at all (its spool setting points at a directory that does not exist, so it
/// neither creates one nor imports a real spool's lines), archives the probe step at once
/// and no other step. The staging marker it writes at its first sweep, when no addon had
/// used database staging with this archive prefix yet, is removed again: doctor leaves the
/// archive as it found it, and the marker's time must be that of the real switch.
async fn check_database(
    report: &mut Report,
    config: &Config,
    store: &dyn ObjectStore,
    archive_works: bool,
    db: &Database,
) {
    let no_spool = std::env::temp_dir().join(format!(
        "woodpecker-s3-logs-doctor-{}-no-spool",
        std::process::id()
    ));
    let mut overrides = vec![
        (SPOOL_DIR.name.to_owned(), no_spool.display().to_string()),
        (FINALIZE_DELAY.name.to_owned(), "0".to_owned()),
        (
            IDLE_TIMEOUT.name.to_owned(),
            DATABASE_IDLE_TIMEOUT.to_owned(),
        ),
    ];
    if let Backend::LocalDir(dir) = &config.backend {
        overrides.push((ARCHIVE_DIR.name.to_owned(), dir.display().to_string()));
    }
    if LOG_LEVEL_VARS
        .iter()
        .all(|var| std::env::var_os(var).is_none())
    {
        overrides.push((LOG_LEVEL_VARS[0].to_owned(), "warn".to_owned()));
    }
    let prefix = &config.engine.key_prefix;
    let marker_before = read_since_marker(store, prefix).await;
    let mut outcome = drive(&overrides, config, store, archive_works, Some(db)).await;
    if let Ok(None) = marker_before {
        let key = since_marker_key(prefix);
        match read_since_marker(store, prefix).await {
            Ok(Some(_)) => {
                if let Err(e) = store.delete(&key).await {
                    let e = format!(
                        "the database staging marker the launched addon wrote ({}) cannot be removed: {e}; delete it by hand before switching, so that its time is the switch's",
                        location(config, &key)
                    );
                    outcome = Err(match outcome {
                        Ok(done) | Err(done) => format!("{done}\n{e}"),
                    });
                }
            }
            Ok(None) => {}
            Err(e) => {
                outcome = Err(match outcome {
                    Ok(done) | Err(done) => format!("{done}\n{e}"),
                })
            }
        }
    }
    if no_spool.exists() {
        let _ = std::fs::remove_dir_all(&no_spool);
        outcome = Err(match outcome {
            Ok(done) | Err(done) => format!(
                "{done}\nthe addon created a spool directory ({}) although staging is in the database",
                no_spool.display()
            ),
        });
    }
    conclude(report, outcome);
}

async fn drive(
    overrides: &[(String, String)],
    config: &Config,
    store: &dyn ObjectStore,
    archive_works: bool,
    db: Option<&Database>,
) -> Result<String, String> {
    let addon = launch(overrides, true).await?;
    let outcome = exercise(&addon, config, store, archive_works, db).await;
    let complaints: Vec<String> = addon
        .stderr_lines()
        .iter()
        .filter_map(|line| complaint(line))
        .collect();
    addon.stop().await;
    outcome.map_err(|e| {
        if complaints.is_empty() {
            e
        } else {
            format!("{e}\nthe addon logged:\n{}", complaints.join("\n"))
        }
    })
}

async fn exercise(
    addon: &LaunchedAddon,
    config: &Config,
    store: &dyn ObjectStore,
    archive_works: bool,
    db: Option<&Database>,
) -> Result<String, String> {
    let id = probe_step_id();
    let step = Step {
        id,
        pipeline_id: id,
        pid: 1,
        name: "woodpecker-s3-logs-doctor".into(),
        state: "running".into(),
        ..Step::default()
    };
    let key = object_key(
        &config.engine.key_prefix,
        StepId::new(id).map_err(|e| e.to_string())?,
    );
    let sent: Vec<LogEntry> = (0..LINES)
        .map(|line| LogEntry {
            step_id: id,
            time: line,
            line,
            data: Some(format!("doctor probe line {} of {LINES}", line + 1).into_bytes()),
            ..LogEntry::default()
        })
        .collect();
    let log = &addon.log;
    let mut done = vec![format!(
        "addon launched as Woodpecker does (handshake, {}), probe step {id}",
        addon.addr()
    )];
    log.log_append(&step, sent.clone())
        .await
        .map_err(|e| format!("LogAppend: {e}"))?;
    let staging = if db.is_some() {
        "log_entries"
    } else {
        "the spool"
    };
    let checked = async {
        same(
            &sent,
            log.log_find(&step).await,
            &format!("LogFind from {staging}"),
        )?;
        if let Some(db) = db {
            let rows = db
                .log_find(id)
                .await
                .map_err(|e| format!("reading the probe step's rows: {e}"))?;
            if rows.len() as i64 != LINES {
                return Err(format!(
                    "LogAppend was acknowledged, but {} has {} rows of step {id}, not {LINES}",
                    db.source(),
                    rows.len()
                ));
            }
            done.push(format!(
                "{LINES} lines appended (staged as rows of log_entries in {}) and read back",
                db.source()
            ));
        } else {
            done.push(format!("{LINES} lines appended and read back"));
        }
        if archive_works {
            log.step_finished(&step).await;
            let size = wait_for_object(store, &key, ARCHIVE_WAIT).await?;
            same(&sent, log.log_find(&step).await, "LogFind from the archive")?;
            done.push(format!(
                "archived as {} ({size} bytes) and read back from there",
                location(config, &key)
            ));
        } else {
            done.push("archiving not awaited (the archive refused writes above)".into());
        }
        Ok::<(), String>(())
    }
    .await;
    // Delete whatever happened above, so no probe lines stay in the spool or archive.
    let deleted = log
        .log_delete(&step)
        .await
        .map_err(|e| format!("LogDelete: {e}"));
    checked?;
    deleted?;
    let left = log
        .log_find(&step)
        .await
        .map_err(|e| format!("LogFind after LogDelete: {e}"))?;
    if !left.is_empty() {
        return Err(format!(
            "LogFind after LogDelete still returns {} lines",
            left.len()
        ));
    }
    if let Some(info) = store
        .head(&key)
        .await
        .map_err(|e| format!("checking {key} after LogDelete: {e}"))?
    {
        return Err(format!(
            "{} ({} bytes) is still there after LogDelete",
            location(config, &key),
            info.size
        ));
    }
    if let Some(db) = db {
        let rows = db
            .log_find(id)
            .await
            .map_err(|e| format!("reading the probe step's rows after LogDelete: {e}"))?;
        if !rows.is_empty() {
            return Err(format!(
                "{} still has {} rows of step {id} after LogDelete",
                db.source(),
                rows.len()
            ));
        }
    }
    done.push("LogDelete removed them (nothing left)".into());
    Ok(done.join("\n"))
}

/// A warning or error line of the addon's hclog JSON as `warn: message: error`.
fn complaint(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let level = value["@level"].as_str()?;
    if level != "warn" && level != "error" {
        return None;
    }
    let message = value["@message"].as_str().unwrap_or_default();
    Some(match value["error"].as_str() {
        Some(error) => format!("{level}: {message}: {error}"),
        None => format!("{level}: {message}"),
    })
}

fn same(
    sent: &[LogEntry],
    read: Result<Vec<LogEntry>, logservice::LogError>,
    what: &str,
) -> Result<(), String> {
    let read = read.map_err(|e| format!("{what}: {e}"))?;
    if read == sent {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} lines came back, not the {} sent (or different ones)",
            read.len(),
            sent.len()
        ))
    }
}

/// Where `key` lies: `s3://bucket/folder/key` or the file's path.
fn location(config: &Config, key: &str) -> String {
    match &config.backend {
        Backend::S3(s3) => format!("s3://{}/{}{key}", s3.bucket, s3.folder),
        Backend::LocalDir(dir) => dir.join(key).display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addons_complaints_read_as_one_line_each() {
        let warn = r#"{"@level":"warn","@message":"archive backend not usable yet","@timestamp":"t","error":"s3://b/: ListObjectsV2: AccessDenied"}"#;
        assert_eq!(
            complaint(warn).as_deref(),
            Some("warn: archive backend not usable yet: s3://b/: ListObjectsV2: AccessDenied")
        );
        assert_eq!(
            complaint(r#"{"@level":"error","@message":"boom"}"#).as_deref(),
            Some("error: boom")
        );
        assert_eq!(complaint(r#"{"@level":"info","@message":"started"}"#), None);
        assert_eq!(complaint("not json"), None);
    }

    #[test]
    fn the_probe_step_is_far_above_any_real_step_and_valid() {
        let id = probe_step_id();
        assert!(id > i64::MAX - (1 << 22));
        assert!(StepId::new(id).is_ok());
    }
}
