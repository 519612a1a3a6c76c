//! The addon with Woodpecker's database, launched as Woodpecker launches it (go-plugin): logs
//! from before the switch read through byte for byte, an unreachable database that does not
//! stop the start or the archiving, and the instance marker refusing another Woodpecker's
//! prefix.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goplugin::{ClientConfig, PluginClient};
use logservice::addon::{HANDSHAKE, LogClient, PLUGIN_NAME};
use logservice::{LogEntry, LogService, Step};
use woodpecker_db::instance::SIGNATURE_KEY;
use woodpecker_db::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");
const ADOPT: &str = "WOODPECKER_LOG_STORE_S3_ADOPT_PREFIX";

/// The addon's own settings for a test in `dir`, plus `extra`.
fn env(dir: &Path, extra: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = [
        ("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", dir.join("spool")),
        ("WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR", dir.join("archive")),
        ("TMPDIR", dir.to_path_buf()),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    env.push((
        "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY".into(),
        "100ms".into(),
    ));
    env.extend(extra.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

async fn launch(dir: &Path, extra: &[(String, String)]) -> (PluginClient, LogClient) {
    let mut config = ClientConfig::new(BIN, HANDSHAKE);
    config.env = env(dir, extra);
    config.capture_stderr = true;
    let plugin = PluginClient::start(config).await.expect("the addon starts");
    let log = LogClient::new(plugin.dispense(PLUGIN_NAME).await.unwrap());
    (plugin, log)
}

fn step(id: i64) -> Step {
    Step {
        id,
        ..Step::default()
    }
}

fn entries(lines: i64) -> Vec<LogEntry> {
    (0..lines)
        .map(|line| LogEntry {
            line,
            time: line,
            data: Some(format!("line {line}").into_bytes()),
            ..LogEntry::default()
        })
        .collect()
}

fn db_env(db: &TestDb) -> Vec<(String, String)> {
    db.env().into_iter().collect()
}

#[tokio::test]
async fn logs_from_before_the_switch_read_through_byte_for_byte() {
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let mut old = entries(30);
        old[3].data = None;
        old[4].data = Some(vec![0xff, 0xfe]);
        db.append(42, &old).await.unwrap();
        let (plugin, log) = launch(dir.path(), &db_env(&db)).await;
        let reply = log
            .call_raw("LogFind", serde_json::to_vec(&step(42)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&db.woodpecker_log_find(42).await),
            "{:?}",
            db.driver
        );
        // `get` reads them too, beside the running addon.
        let got = Command::new(BIN)
            .args(["get", "--json", "42"])
            .envs(env(dir.path(), &db_env(&db)))
            .output()
            .unwrap();
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, [reply.clone(), b"\n".to_vec()].concat());
        // LogDelete (Woodpecker's log purge) removes the rows too.
        log.log_delete(&step(42)).await.unwrap();
        assert_eq!(db.count_log_rows(42).await, 0);
        assert!(log.log_find(&step(42)).await.unwrap().is_empty());
        plugin.disconnect();
    }
}

#[tokio::test]
async fn an_unreachable_database_does_not_stop_the_start_or_the_archiving() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = vec![
        (
            "WOODPECKER_DATABASE_DRIVER".to_owned(),
            "postgres".to_owned(),
        ),
        (
            "WOODPECKER_DATABASE_DATASOURCE".to_owned(),
            "postgres://wp:s3cret@127.0.0.1:1/wp?sslmode=disable&connect_timeout=1".to_owned(),
        ),
    ];
    let started = Instant::now();
    let (plugin, log) = launch(dir.path(), &unreachable).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the start is bounded"
    );
    let new = step(7);
    log.log_append(&new, entries(5)).await.unwrap();
    log.step_finished(&new).await;
    let object = dir.path().join("archive/v1/007/7.ndjson.zst");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !object.exists() {
        assert!(Instant::now() < deadline, "step 7 was not archived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.log_find(&new).await.unwrap(), entries(5));
    // A step the addon never stored would be in the database: its read fails, and says why.
    let error = log.log_find(&step(8)).await.unwrap_err().to_string();
    assert!(error.contains("legacy log of step 8"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");

    let stderr = plugin.stderr_lines().join("\n");
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("Woodpecker's database is unavailable"))
        .count();
    assert_eq!(warnings, 1, "one warning: {stderr}");
    assert!(
        stderr.contains("WOODPECKER_DATABASE_DATASOURCE=postgres://wp:***@"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    plugin.disconnect();
}

/// Starts the addon with `extra` and waits for it to exit on its own (a refused start).
fn refused_start(dir: &Path, extra: &[(String, String)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command
        .envs(env(dir, extra))
        .env(HANDSHAKE.magic_cookie_key, HANDSHAKE.magic_cookie_value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the addon kept running on another instance's prefix");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_second_woodpecker_is_refused_the_prefix_unless_it_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestDb::sqlite().await;
    first
        .set_server_config(
            SIGNATURE_KEY,
            &format!("{}{}", "01".repeat(32), "aa".repeat(32)),
        )
        .await;
    let second = TestDb::sqlite().await;
    second
        .set_server_config(
            SIGNATURE_KEY,
            &format!("{}{}", "02".repeat(32), "bb".repeat(32)),
        )
        .await;

    let (plugin, _log) = launch(dir.path(), &db_env(&first)).await;
    let marker = dir.path().join("archive/woodpecker-instance.json");
    assert!(marker.exists(), "the first instance marks the prefix");
    plugin.kill().await.unwrap();

    let (code, stderr) = refused_start(dir.path(), &db_env(&second));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("belongs to another Woodpecker instance"),
        "{stderr}"
    );
    assert!(stderr.contains(ADOPT), "the fix is named: {stderr}");

    let mut adopting = db_env(&second);
    adopting.push((ADOPT.to_owned(), "true".to_owned()));
    let (plugin, _log) = launch(dir.path(), &adopting).await;
    plugin.kill().await.unwrap();
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains(&"bb".repeat(32))
    );
}

#[test]
fn a_bad_data_source_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = refused_start(
        dir.path(),
        &[
            ("WOODPECKER_DATABASE_DRIVER".to_owned(), "mysql".to_owned()),
            (
                "WOODPECKER_DATABASE_DATASOURCE".to_owned(),
                "wp:s3cret@tcp(db:port)/wp".to_owned(),
            ),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("WOODPECKER_DATABASE_DATASOURCE"),
        "{stderr}"
    );
    assert!(stderr.contains("wp:***@tcp(db:port)/wp"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
