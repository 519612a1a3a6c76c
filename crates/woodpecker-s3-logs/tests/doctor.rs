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
            // http endpoint, no x-amz-bucket-region from SeaweedFS, no local archive.
            "endpoint_tls" | "bucket_region" | "archive_dir" => "skip",
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
            "spool_dir",
            "socket_dir",
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
