//! `doctor` as an admin runs it: the built binary with only the environment given here,
//! against the embedded default, SeaweedFS with a full, a read-only and a write-only
//! identity, moto, a missing bucket, missing credentials and a server that never answers.
//! Tests that need scripts/s3/start.sh's servers print SKIPPED and pass when its variables
//! are unset.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use archive::{ObjectStore, S3Settings, S3Store};
use serde_json::Value;
use woodpecker_db::Driver;
use woodpecker_db::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");

/// What one doctor run gave.
struct Run {
    code: Option<i32>,
    stdout: String,
}

impl Run {
    /// The `--json` report.
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// Runs `doctor` with a private spool and temporary directory and nothing else inherited
/// but `PATH`.
fn doctor(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", dir.join("spool"))
        .arg("doctor")
        .args(args)
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    check(report, id)["status"].as_str().unwrap()
}

fn fix<'a>(report: &'a Value, id: &str) -> &'a str {
    check(report, id)["fix"].as_str().unwrap_or_default()
}

/// Every id with its status, for assertion messages.
fn summary(report: &Value) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}: {}", c["status"], c["id"], c["detail"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A server of scripts/s3/start.sh.
struct Server {
    endpoint: String,
    bucket: String,
    admin: (String, String),
}

fn server(name: &str) -> Option<Server> {
    let var = |what: &str| std::env::var(format!("ARCHIVE_TEST_{name}_{what}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        eprintln!(
            "SKIPPED: ARCHIVE_TEST_{name}_ENDPOINT is unset (eval \"$(scripts/s3/start.sh)\" to run this test)"
        );
        return None;
    };
    Some(Server {
        endpoint,
        bucket: var("BUCKET").unwrap_or_else(|| "ci-logs".into()),
        admin: (
            var("ACCESS_KEY").unwrap_or_else(|| "test".into()),
            var("SECRET_KEY").unwrap_or_else(|| "test".into()),
        ),
    })
}

/// The keys of one of SeaweedFS's extra identities (`READONLY`, `WRITEONLY`).
fn identity(name: &str) -> Option<(String, String)> {
    let key = std::env::var(format!("SEAWEEDFS_{name}_ACCESS_KEY_ID")).ok();
    let secret = std::env::var(format!("SEAWEEDFS_{name}_SECRET_ACCESS_KEY")).ok();
    match key.zip(secret) {
        Some(keys) => Some(keys),
        None => {
            eprintln!(
                "SKIPPED: SEAWEEDFS_{name}_ACCESS_KEY_ID is unset (eval \"$(scripts/s3/start.sh)\" to run this test)"
            );
            None
        }
    }
}

/// A folder no earlier run used, so what a run leaves behind can be listed.
fn unique_folder(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("doctor-tests/{name}-{nanos}")
}

/// The addon's S3 settings for `server` under `folder`, signed with `keys`.
fn s3_env(
    server: &Server,
    bucket: &str,
    folder: &str,
    keys: &(String, String),
) -> Vec<(&'static str, String)> {
    vec![
        ("WOODPECKER_LOG_STORE_S3_BUCKET", bucket.to_owned()),
        ("WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER", folder.to_owned()),
        ("WOODPECKER_LOG_STORE_S3_ENDPOINT", server.endpoint.clone()),
        ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true".into()),
        ("WOODPECKER_LOG_STORE_S3_OPERATION_TIMEOUT", "30s".into()),
        ("AWS_ACCESS_KEY_ID", keys.0.clone()),
        ("AWS_SECRET_ACCESS_KEY", keys.1.clone()),
    ]
}

/// Every key under `folder`, listed with the admin identity.
async fn left_behind(server: &Server, folder: &str) -> Vec<String> {
    let mut settings = S3Settings::new(&server.bucket);
    settings.endpoint = Some(server.endpoint.clone());
    settings.path_style = true;
    settings.region = Some("us-east-1".into());
    settings.folder = format!("{folder}/");
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(
        aws_credential_types::Credentials::new(
            &server.admin.0,
            &server.admin.1,
            None,
            None,
            "doctor-tests",
        ),
    );
    let store = S3Store::connect_with(settings, loader).await.unwrap();
    store.list("").await.unwrap()
}

#[tokio::test]
async fn seaweedfs_full_identity_passes_and_leaves_nothing() {
    let Some(server) = server("SEAWEEDFS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = unique_folder("full");
    let env = s3_env(&server, &server.bucket, &folder, &server.admin);
    let run = doctor(dir.path(), &env, &["--json"]);
    let report = run.report();
    assert_eq!(run.code, Some(0), "{}", summary(&report));
    assert_eq!(report["ok"], true);
    for c in report["checks"].as_array().unwrap() {
        let expected = match c["id"].as_str().unwrap() {
            // http endpoint, no x-amz-bucket-region from SeaweedFS, no local archive;
            // spool staging: no database checks, no scratch directory.
            "endpoint_tls" | "bucket_region" | "archive_dir" => "skip",
            "database" | "log_entries" | "unique_lines" | "scratch_dir" => "skip",
            _ => "pass",
        };
        assert_eq!(c["status"], expected, "{}", summary(&report));
    }
    let credentials = check(&report, "credentials")["detail"].as_str().unwrap();
    assert!(credentials.contains("EnvironmentVariable"), "{credentials}");
    assert!(
        !credentials.contains(&server.admin.1),
        "the secret must never show"
    );
    let round_trip = check(&report, "round_trip")["detail"].as_str().unwrap();
    assert!(
        round_trip.contains("LogDelete removed them"),
        "{round_trip}"
    );
    assert_eq!(left_behind(&server, &folder).await, Vec::<String>::new());
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("doctor-"))
            .count(),
        0,
        "the round trip's private spool is removed"
    );

    let human = doctor(dir.path(), &env, &[]);
    eprintln!("{}", human.stdout);
    assert_eq!(human.code, Some(0));
    assert!(human.stdout.contains("✔ probe PUT"), "{}", human.stdout);
    assert!(!human.stdout.contains('✘'), "{}", human.stdout);
    assert!(
        !human.stdout.contains(&server.admin.1),
        "the secret must never show"
    );
}

#[tokio::test]
async fn seaweedfs_read_only_identity_fails_on_put_with_the_permission_to_grant() {
    let (Some(server), Some(keys)) = (server("SEAWEEDFS"), identity("READONLY")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = unique_folder("read-only");
    let env = s3_env(&server, &server.bucket, &folder, &keys);
    let run = doctor(dir.path(), &env, &["--json"]);
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(report["ok"], false);
    assert_eq!(status(&report, "credentials"), "pass");
    assert_eq!(status(&report, "bucket"), "pass", "Read and List allow it");
    assert_eq!(status(&report, "object_put"), "fail");
    let put_fix = fix(&report, "object_put");
    assert!(put_fix.contains("permission denied"), "{put_fix}");
    assert!(put_fix.contains("s3:PutObject"), "{put_fix}");
    for id in ["object_head", "object_get", "conditional_write"] {
        assert_eq!(status(&report, id), "skip", "{id}");
        assert!(
            check(&report, id)["detail"]
                .as_str()
                .unwrap()
                .contains("PUT failed"),
            "{id} says why it was skipped"
        );
    }
    assert_eq!(status(&report, "object_delete"), "fail");
    assert!(fix(&report, "object_delete").contains("s3:DeleteObject"));
    assert_eq!(left_behind(&server, &folder).await, Vec::<String>::new());

    let human = doctor(dir.path(), &env, &[]);
    eprintln!("{}", human.stdout);
    assert_eq!(human.code, Some(1));
    assert!(human.stdout.contains("✘ probe PUT"), "{}", human.stdout);
}

#[tokio::test]
async fn seaweedfs_write_only_identity_fails_on_reads() {
    let (Some(server), Some(keys)) = (server("SEAWEEDFS"), identity("WRITEONLY")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = unique_folder("write-only");
    let run = doctor(
        dir.path(),
        &s3_env(&server, &server.bucket, &folder, &keys),
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "object_put"), "pass");
    for id in ["object_head", "object_get"] {
        assert_eq!(status(&report, id), "fail", "{id}: {}", summary(&report));
        assert!(
            fix(&report, id).contains("s3:GetObject"),
            "{}",
            fix(&report, id)
        );
    }
    // Without List, HeadBucket is refused: the fix names s3:ListBucket, and the probes
    // still run (a policy may allow objects without the bucket).
    assert_eq!(status(&report, "bucket"), "fail");
    assert!(fix(&report, "bucket").contains("s3:ListBucket"));
    assert_eq!(status(&report, "object_delete"), "pass");
    assert_eq!(status(&report, "multipart"), "pass");
    // The probe object and the round trip's archive were deleted (Write allows DELETE).
    assert_eq!(left_behind(&server, &folder).await, Vec::<String>::new());
}

#[tokio::test]
async fn moto_passes_and_reports_its_conditional_writes() {
    let Some(server) = server("MOTO") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let folder = unique_folder("moto");
    let run = doctor(
        dir.path(),
        &s3_env(&server, &server.bucket, &folder, &server.admin),
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(0), "{}", summary(&report));
    let conditional = check(&report, "conditional_write");
    eprintln!("moto conditional writes: {conditional}");
    // moto 5.2.5 (pinned by scripts/s3/start.sh) refuses the overwrite with 412, as AWS does.
    assert_eq!(conditional["status"], "pass", "{conditional}");
    // moto answers x-amz-bucket-region, like AWS.
    assert_eq!(status(&report, "bucket_region"), "pass");
    assert_eq!(status(&report, "clock_skew"), "pass");
    assert_eq!(left_behind(&server, &folder).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_bucket_fails_naming_the_variable_and_skips_what_needs_it() {
    let Some(server) = server("SEAWEEDFS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &s3_env(&server, "no-such-bucket-doctor", "logs", &server.admin),
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "bucket"), "fail");
    assert!(
        fix(&report, "bucket").contains("WOODPECKER_LOG_STORE_S3_BUCKET"),
        "{}",
        fix(&report, "bucket")
    );
    for id in ["object_put", "object_get", "multipart", "round_trip"] {
        assert_eq!(status(&report, id), "skip", "{id}");
        assert_eq!(
            check(&report, id)["detail"],
            "the bucket does not exist",
            "{id} says why"
        );
    }
}

#[test]
fn embedded_default_passes_its_checks_and_leaves_no_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let env = [(
        "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
        archive.display().to_string(),
    )];
    let run = doctor(dir.path(), &env, &["--json"]);
    let report = run.report();
    assert_eq!(run.code, Some(0), "{}", summary(&report));
    for id in [
        "settings",
        "spool_dir",
        "socket_dir",
        "archive_dir",
        "round_trip",
    ] {
        assert_eq!(status(&report, id), "pass", "{id}: {}", summary(&report));
    }
    for id in ["credentials", "bucket", "object_put", "clock_skew"] {
        assert_eq!(status(&report, id), "skip", "{id}");
        let detail = check(&report, id)["detail"].as_str().unwrap();
        assert!(
            detail.contains("WOODPECKER_LOG_STORE_S3_BUCKET"),
            "{detail}"
        );
    }
    let round_trip = check(&report, "round_trip")["detail"].as_str().unwrap();
    assert!(
        round_trip.contains(&archive.display().to_string()),
        "{round_trip}"
    );
    // The probe step's archive was deleted: no file anywhere under the archive directory.
    let mut files = Vec::new();
    let mut dirs = vec![archive.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert_eq!(files, Vec::<std::path::PathBuf>::new());

    let human = doctor(dir.path(), &env, &[]);
    assert_eq!(human.code, Some(0), "{}", human.stdout);
    assert!(
        human.stdout.contains("✔ addon round trip"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("– bucket"), "{}", human.stdout);
}

#[test]
fn json_report_has_every_check_with_stable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(dir.path(), &[], &["--json"]);
    let report = run.report();
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            for field in ["id", "title", "status", "detail"] {
                assert!(c[field].is_string(), "{field} in {c}");
            }
            assert!(c["fix"].is_string() || c["fix"].is_null(), "fix in {c}");
            assert!(
                ["pass", "warn", "fail", "skip"].contains(&c["status"].as_str().unwrap()),
                "{c}"
            );
            c["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        [
            "settings",
            "credentials",
            "endpoint_dns",
            "endpoint_tls",
            "bucket",
            "bucket_region",
            "clock_skew",
            "object_put",
            "object_head",
            "object_get",
            "conditional_write",
            "object_delete",
            "multipart",
            "database",
            "log_entries",
            "unique_lines",
            "spool_dir",
            "socket_dir",
            "scratch_dir",
            "archive_dir",
            "round_trip",
        ]
    );
}

#[test]
fn unparsable_settings_fail_first_and_skip_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &[
            ("WOODPECKER_LOG_STORE_S3_BUCKET", "logs".into()),
            ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "maybe".into()),
        ],
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1));
    assert_eq!(status(&report, "settings"), "fail");
    assert!(fix(&report, "settings").contains("WOODPECKER_LOG_STORE_S3_PATH_STYLE"));
    for c in report["checks"].as_array().unwrap().iter().skip(1) {
        assert_eq!(c["status"], "skip", "{c}");
        assert_eq!(c["detail"], "the settings do not parse", "{c}");
    }
}

#[test]
fn no_credentials_fail_and_skip_the_requests_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &[
            ("WOODPECKER_LOG_STORE_S3_BUCKET", "logs".into()),
            (
                "WOODPECKER_LOG_STORE_S3_ENDPOINT",
                "http://127.0.0.1:9".into(),
            ),
            ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true".into()),
        ],
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "credentials"), "fail");
    assert!(fix(&report, "credentials").contains("AWS_ACCESS_KEY_ID"));
    assert_eq!(status(&report, "endpoint_dns"), "pass");
    for id in ["bucket", "object_put", "round_trip"] {
        assert_eq!(status(&report, id), "skip", "{id}");
        let detail = check(&report, id)["detail"].as_str().unwrap();
        assert!(detail.contains("no credentials"), "{id}: {detail}");
    }
}

/// A server that takes the connection and never answers: each request gives up after the
/// operation timeout, so doctor finishes.
#[test]
fn a_silent_server_cannot_make_doctor_hang() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = doctor(
        dir.path(),
        &[
            ("WOODPECKER_LOG_STORE_S3_BUCKET", "logs".into()),
            ("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint),
            ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true".into()),
            ("WOODPECKER_LOG_STORE_S3_OPERATION_TIMEOUT", "1s".into()),
            ("AWS_ACCESS_KEY_ID", "doctor-test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "doctor-test-secret".into()),
        ],
        &["--json"],
    );
    let elapsed = started.elapsed();
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "bucket"), "fail", "{}", summary(&report));
    let detail = check(&report, "bucket")["detail"].as_str().unwrap();
    assert!(detail.contains("1s"), "{detail}");
    assert_eq!(status(&report, "round_trip"), "skip");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    drop(silent);
}

// ---- database staging (WOODPECKER_LOG_STORE_S3_STAGING=database) ----
//
// On a real SQLite file always, and on the PostgreSQL and MariaDB of scripts/db/start.sh
// when its variables are set (the other drivers print why they are skipped).

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files
}

/// Doctor with database staging on `db`, archiving to `archive` (a local directory when
/// `None`, under `dir`).
fn staged_doctor(dir: &Path, db: &TestDb, archive: Option<Vec<(&'static str, String)>>) -> Run {
    doctor(dir, &staged_env(dir, db, archive), &["--json"])
}

/// The environment of [`staged_doctor`].
fn staged_env(
    dir: &Path,
    db: &TestDb,
    archive: Option<Vec<(&'static str, String)>>,
) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = vec![("WOODPECKER_LOG_STORE_S3_STAGING", "database".into())];
    let vars = db.env();
    for key in [
        "WOODPECKER_DATABASE_DRIVER",
        "WOODPECKER_DATABASE_DATASOURCE",
    ] {
        env.push((key, vars[key].clone()));
    }
    match archive {
        Some(s3) => env.extend(s3),
        None => env.push((
            "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
            dir.join("archive").display().to_string(),
        )),
    }
    env
}

/// What a data source shows in messages: the SQLite path, or the server's address (never
/// the password).
fn shown_as(db: &TestDb) -> String {
    match db.driver {
        Driver::Sqlite => db.datasource.clone(),
        _ => {
            let at = db.datasource.rfind('@').unwrap();
            let host = &db.datasource[at + 1..];
            host.trim_start_matches("tcp(")
                .split(['/', ')'])
                .next()
                .unwrap()
                .to_owned()
        }
    }
}

/// The password in a test data source, which must never show.
fn password(db: &TestDb) -> Option<String> {
    let at = db.datasource.rfind('@')?;
    let userinfo = db.datasource[..at].rsplit('/').next()?;
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

fn assert_masked(run: &Run, db: &TestDb) {
    if let Some(password) = password(db) {
        // The test servers' password is the user's name: look for it in place.
        assert!(
            !run.stdout.contains(&format!(":{password}@")),
            "the database password shows:\n{}",
            run.stdout
        );
    }
}

/// A healthy deployment with database staging: every database check passes, the round
/// trip runs the addon in database mode on the real table and leaves no row, no spool
/// directory, no object and no staging marker behind. Archives to SeaweedFS when
/// scripts/s3/start.sh's variables are set (all pass), else to a local directory (which
/// warns: it still needs a volume).
#[tokio::test]
async fn database_staging_healthy_deployment_passes_and_leaves_nothing() {
    let s3 = std::env::var("ARCHIVE_TEST_SEAWEEDFS_ENDPOINT").is_ok();
    let server = if s3 { server("SEAWEEDFS") } else { None };
    for db in TestDb::every().await {
        let dir = tempfile::tempdir().unwrap();
        let folder = unique_folder(&format!("staging-{}", db.driver));
        let archive = server
            .as_ref()
            .map(|server| s3_env(server, &server.bucket, &folder, &server.admin));
        let run = staged_doctor(dir.path(), &db, archive);
        let report = run.report();
        let context = format!("{}: {}", db.driver, summary(&report));
        assert_eq!(run.code, Some(0), "{context}");
        for id in [
            "settings",
            "database",
            "log_entries",
            "unique_lines",
            "socket_dir",
            "scratch_dir",
            "round_trip",
        ] {
            assert_eq!(status(&report, id), "pass", "{id}: {context}");
        }
        let settings = check(&report, "settings")["detail"].as_str().unwrap();
        assert!(
            settings.contains("WOODPECKER_LOG_STORE_S3_STAGING=database"),
            "{settings}"
        );
        assert!(settings.contains("→ staging: log_entries"), "{settings}");
        let database = check(&report, "database")["detail"].as_str().unwrap();
        assert!(database.contains(&shown_as(&db)), "{database}");
        assert_masked(&run, &db);
        assert_eq!(status(&report, "spool_dir"), "skip");
        let spool = check(&report, "spool_dir")["detail"].as_str().unwrap();
        assert!(spool.starts_with("not used"), "{spool}");
        assert!(
            !dir.path().join("spool").exists(),
            "doctor created a spool directory with database staging"
        );
        let round_trip = check(&report, "round_trip")["detail"].as_str().unwrap();
        assert!(round_trip.contains("rows of log_entries"), "{round_trip}");
        assert!(
            round_trip.contains("LogDelete removed them"),
            "{round_trip}"
        );
        assert_eq!(
            db.query_i64("SELECT COUNT(*) FROM log_entries").await,
            0,
            "the probe step's rows are deleted"
        );
        match &server {
            Some(server) => {
                assert_eq!(status(&report, "archive_dir"), "skip", "{context}");
                assert_eq!(left_behind(server, &folder).await, Vec::<String>::new());
            }
            None => {
                assert_eq!(status(&report, "archive_dir"), "warn", "{context}");
                assert_eq!(
                    files_under(&dir.path().join("archive")),
                    Vec::<std::path::PathBuf>::new(),
                    "no object and no staging marker left"
                );
            }
        }
    }
}

/// Without `log_entries` (not Woodpecker's database, or one the server never started on),
/// the check fails naming the table and the database, and what needs the table is skipped.
#[tokio::test]
async fn database_staging_without_log_entries_fails_naming_the_table_and_the_database() {
    for db in TestDb::every().await {
        db.execute("DROP TABLE log_entries").await;
        let dir = tempfile::tempdir().unwrap();
        let run = staged_doctor(dir.path(), &db, None);
        let report = run.report();
        let context = format!("{}: {}", db.driver, summary(&report));
        assert_eq!(run.code, Some(1), "{context}");
        assert_eq!(status(&report, "database"), "pass", "it answers: {context}");
        assert_eq!(status(&report, "log_entries"), "fail", "{context}");
        let detail = check(&report, "log_entries")["detail"].as_str().unwrap();
        assert!(detail.contains("log_entries"), "{detail}");
        assert!(detail.contains(&shown_as(&db)), "{detail}");
        assert!(
            detail.contains("WOODPECKER_DATABASE_DATASOURCE"),
            "{detail}"
        );
        assert!(
            fix(&report, "log_entries").contains("WOODPECKER_DATABASE_DATASOURCE"),
            "{}",
            fix(&report, "log_entries")
        );
        assert_masked(&run, &db);
        for id in ["unique_lines", "round_trip"] {
            assert_eq!(status(&report, id), "skip", "{id}: {context}");
        }
        assert!(!dir.path().join("spool").exists());
    }
}

/// A schema from before Woodpecker v3.15 (no unique index on `(step_id, line)`): a
/// warning that names the slower path and the upgrade, and the round trip still passes
/// on that path.
#[tokio::test]
async fn database_staging_without_the_unique_index_warns_and_still_works() {
    for db in TestDb::every().await {
        db.execute(match db.driver {
            Driver::MySql => "DROP INDEX UQE_log_entries_s ON log_entries",
            _ => "DROP INDEX \"UQE_log_entries_s\"",
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let run = staged_doctor(dir.path(), &db, None);
        let report = run.report();
        let context = format!("{}: {}", db.driver, summary(&report));
        assert_eq!(run.code, Some(0), "a warning, not a failure: {context}");
        assert_eq!(status(&report, "unique_lines"), "warn", "{context}");
        let detail = check(&report, "unique_lines")["detail"].as_str().unwrap();
        assert!(detail.contains("slower"), "{detail}");
        assert!(
            fix(&report, "unique_lines").contains("v3.15"),
            "{}",
            fix(&report, "unique_lines")
        );
        assert_eq!(status(&report, "round_trip"), "pass", "{context}");
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM log_entries").await, 0);
    }
}

/// Database staging with no bucket: the local archive directory works but still needs a
/// persistent volume, which the check says with the variable that fixes it.
#[tokio::test]
async fn database_staging_with_a_local_archive_warns_that_it_needs_a_volume() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let run = staged_doctor(dir.path(), &db, None);
    let report = run.report();
    assert_eq!(run.code, Some(0), "{}", summary(&report));
    assert_eq!(
        status(&report, "archive_dir"),
        "warn",
        "{}",
        summary(&report)
    );
    let detail = check(&report, "archive_dir")["detail"].as_str().unwrap();
    assert!(detail.contains("persistent volume"), "{detail}");
    assert!(
        fix(&report, "archive_dir").contains("WOODPECKER_LOG_STORE_S3_BUCKET"),
        "{}",
        fix(&report, "archive_dir")
    );
    assert_eq!(
        status(&report, "round_trip"),
        "pass",
        "{}",
        summary(&report)
    );

    // The same archive with spool staging is no warning: the spool's volume holds it.
    let spool = doctor(
        dir.path(),
        &[(
            "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
            dir.path().join("archive").display().to_string(),
        )],
        &["--json"],
    );
    assert_eq!(status(&spool.report(), "archive_dir"), "pass");

    let human = doctor(dir.path(), &staged_env(dir.path(), &db, None), &[]);
    eprintln!("{}", human.stdout);
    assert_eq!(human.code, Some(0), "{}", human.stdout);
    assert!(
        human.stdout.contains("⚠ archive directory"),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("staging running steps in Woodpecker's database"),
        "{}",
        human.stdout
    );
}

/// `STAGING=database` with no database: the addon's start error, and the fix names both
/// ways out.
#[test]
fn database_staging_without_a_database_fails_with_the_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &[("WOODPECKER_LOG_STORE_S3_STAGING", "database".into())],
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "settings"), "fail");
    let detail = check(&report, "settings")["detail"].as_str().unwrap();
    for needed in [
        "WOODPECKER_LOG_STORE_S3_STAGING",
        "WOODPECKER_DATABASE_DRIVER",
        "WOODPECKER_DATABASE_DATASOURCE",
    ] {
        assert!(detail.contains(needed), "{needed} in {detail}");
    }
    let fix = fix(&report, "settings");
    assert!(fix.contains("WOODPECKER_DATABASE_DRIVER"), "{fix}");
    assert!(
        fix.contains("WOODPECKER_LOG_STORE_S3_STAGING=spool"),
        "{fix}"
    );
    for c in report["checks"].as_array().unwrap().iter().skip(1) {
        assert_eq!(c["status"], "skip", "{c}");
        assert!(c["detail"].as_str().unwrap().contains("no database"), "{c}");
    }
    assert!(!dir.path().join("spool").exists());
}

/// A database that does not answer (nothing listens on the port): the check fails with
/// the data source, password masked, within the connect timeout.
#[test]
fn database_staging_with_an_unreachable_database_fails_masked() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = doctor(
        dir.path(),
        &[
            ("WOODPECKER_LOG_STORE_S3_STAGING", "database".into()),
            ("WOODPECKER_DATABASE_DRIVER", "postgres".into()),
            (
                "WOODPECKER_DATABASE_DATASOURCE",
                format!(
                    "postgres://woodpecker:hunter2@127.0.0.1:{port}/woodpecker?sslmode=disable&connect_timeout=2"
                ),
            ),
            (
                "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
                dir.path().join("archive").display().to_string(),
            ),
        ],
        &["--json"],
    );
    let report = run.report();
    assert_eq!(run.code, Some(1), "{}", summary(&report));
    assert_eq!(status(&report, "database"), "fail", "{}", summary(&report));
    let detail = check(&report, "database")["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("127.0.0.1:{port}")), "{detail}");
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    assert!(
        fix(&report, "database").contains("WOODPECKER_DATABASE_DATASOURCE"),
        "{}",
        fix(&report, "database")
    );
    for id in ["log_entries", "unique_lines", "round_trip"] {
        assert_eq!(status(&report, id), "skip", "{id}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}
