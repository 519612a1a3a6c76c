//! `WOODPECKER_LOG_STORE_S3_METRICS_ADDR`: the real addon, launched as Woodpecker launches it
//! (go-plugin handshake), fed through the log protocol and scraped over real HTTP.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use goplugin::{ClientConfig, PluginClient};
use logservice::addon::{HANDSHAKE, LogClient, PLUGIN_NAME};
use logservice::{LogEntry, LogService, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");

/// How long archiving may take on a busy CI machine.
const ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The addon with its spool (and local archive) under `dir`, metrics on `port`, and `env`.
async fn launch(dir: &Path, port: u16, env: &[(&str, String)]) -> (PluginClient, LogClient) {
    let mut config = ClientConfig::new(BIN, HANDSHAKE);
    let mut vars = vec![
        (
            "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
            dir.join("spool").display().to_string(),
        ),
        (
            "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
            dir.join("archive").display().to_string(),
        ),
        ("WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY", "100ms".into()),
        (
            "WOODPECKER_LOG_STORE_S3_METRICS_ADDR",
            format!("127.0.0.1:{port}"),
        ),
    ];
    vars.extend(env.iter().cloned());
    config.env = vars
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    config.capture_stderr = true;
    let plugin = PluginClient::start(config).await.unwrap();
    let log = LogClient::new(plugin.dispense(PLUGIN_NAME).await.unwrap());
    (plugin, log)
}

/// One HTTP/1.1 exchange on loopback: the status code and the body.
async fn http(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the metrics listener answers within 10 s")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, body.to_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n")
}

/// The scraped metrics.
async fn scrape(port: u16) -> String {
    let (status, body) = http(port, &get("/metrics")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of sample `name` (with its labels as rendered); `None` when absent.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        Some(rest.parse().unwrap())
    })
}

fn metric(metrics: &str, name: &str) -> f64 {
    value(metrics, &format!("woodpecker_s3_logs_{name}"))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// Scrapes until `done` holds, or fails after [`ARCHIVE_WAIT`].
async fn scrape_until(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + ARCHIVE_WAIT;
    loop {
        let metrics = scrape(port).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {ARCHIVE_WAIT:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step(id: i64) -> Step {
    Step {
        id,
        pipeline_id: 1,
        name: format!("step-{id}"),
        state: "running".into(),
        ..Step::default()
    }
}

fn entries(step_id: i64, lines: std::ops::Range<i64>) -> Vec<LogEntry> {
    lines
        .map(|line| LogEntry {
            step_id,
            line,
            time: line,
            data: Some(format!("line {line} of step {step_id}").into_bytes()),
            ..LogEntry::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_addon_serves_its_figures_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (plugin, log) = launch(dir.path(), port, &[]).await;

    let metrics = scrape(port).await;
    assert_eq!(metrics_appends(&metrics), 0.0);
    assert_eq!(metric(&metrics, "spool_bytes"), 0.0);

    log.log_append(&step(1), entries(1, 0..3)).await.unwrap();
    log.log_append(&step(1), entries(1, 3..5)).await.unwrap();
    let metrics = scrape(port).await;
    assert_eq!(metrics_appends(&metrics), 2.0);
    assert_eq!(metric(&metrics, "appended_entries_total"), 5.0);
    let spooled = metric(&metrics, "spool_bytes");
    assert!(spooled > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "appended_bytes_total"), spooled);
    assert_eq!(metric(&metrics, "spool_steps"), 1.0);
    assert_eq!(metric(&metrics, "archive_queue_steps"), 0.0);
    assert_eq!(metric(&metrics, "archive_uploads_total"), 0.0);

    // StepFinished: archived after the 100 ms grace period.
    log.step_finished(&step(1)).await;
    let metrics = scrape_until(port, "upload", |m| {
        metric(m, "archive_uploads_total") >= 1.0
    })
    .await;
    assert_eq!(metric(&metrics, "archive_uploads_total"), 1.0);
    assert_eq!(metric(&metrics, "archive_queue_steps"), 0.0);
    assert_eq!(metric(&metrics, "spool_bytes"), 0.0);
    assert_eq!(metric(&metrics, "spool_steps"), 0.0);
    assert_eq!(metric(&metrics, "oldest_unarchived_line_age_seconds"), 0.0);
    assert!(metric(&metrics, "archive_uploaded_bytes_total") > 0.0);
    assert_eq!(
        metric(&metrics, "archive_upload_duration_seconds_count"),
        1.0
    );
    assert!(!metrics.contains("archive_failures_total{"), "{metrics}");

    assert_eq!(log.log_find(&step(1)).await.unwrap().len(), 5);
    assert_eq!(metric(&scrape(port).await, "finds_total"), 1.0);
    plugin.kill().await.unwrap();
}

fn metrics_appends(metrics: &str) -> f64 {
    metric(metrics, "appends_total")
}

/// Other paths, other methods, clients that never finish their request or send too much:
/// each gets a short answer or a closed connection, and scrapes go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_answers_only_metrics_and_outlasts_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (plugin, _log) = launch(dir.path(), port, &[]).await;

    assert_eq!(http(port, &get("/")).await.0, 404);
    assert_eq!(http(port, &get("/metrics/x")).await.0, 404);
    let (status, _) = http(
        port,
        "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    let (status, body) = http(port, &get("/metrics?format=anything")).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE woodpecker_s3_logs_appends_total counter"));
    let (status, body) = http(
        port,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");

    // A request head larger than the listener reads: refused, nothing served.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        !response.starts_with("HTTP/1.1 200"),
        "an oversized head is not served: {response}"
    );

    // Twenty silent clients (more than the listener serves at once) hold connections open;
    // once they are cut off (5 s for a request head), scrapes are served again, and the
    // addon still serves its host meanwhile.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    plugin.connection().ping().await.unwrap();
    let started = Instant::now();
    let mut closed = 0;
    for mut stream in silent {
        let mut buffer = [0u8; 64];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 20, "every silent client was cut off");
    assert!(started.elapsed() < Duration::from_secs(10));
    scrape(port).await;
    plugin.kill().await.unwrap();
}

/// Archive failures are labelled with the S3 error code, against a real SeaweedFS: a bucket
/// that does not exist, and an access key the server does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_failures_are_labelled_with_the_s3_error_code() {
    let Ok(endpoint) = std::env::var("ARCHIVE_TEST_SEAWEEDFS_ENDPOINT") else {
        eprintln!(
            "SKIPPED: ARCHIVE_TEST_SEAWEEDFS_ENDPOINT is unset (eval \"$(scripts/s3/start.sh)\" to run this test)"
        );
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let key = var("ARCHIVE_TEST_SEAWEEDFS_ACCESS_KEY");
    let secret = var("ARCHIVE_TEST_SEAWEEDFS_SECRET_KEY");
    let bucket = var("ARCHIVE_TEST_SEAWEEDFS_BUCKET");
    for (bucket, key, code) in [
        (
            "no-such-bucket-for-metrics".to_owned(),
            key.clone(),
            "NoSuchBucket",
        ),
        (bucket, "unknown-key".to_owned(), "InvalidAccessKeyId"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [
            ("WOODPECKER_LOG_STORE_S3_BUCKET", bucket.clone()),
            ("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint.clone()),
            ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true".into()),
            ("WOODPECKER_LOG_STORE_S3_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ];
        let (plugin, log) = launch(dir.path(), port, &env).await;
        log.log_append(&step(9), entries(9, 0..4)).await.unwrap();
        log.step_finished(&step(9)).await;
        let label = format!("archive_failures_total{{code=\"{code}\"}}");
        let metrics = scrape_until(port, &label, |m| {
            value(m, &format!("woodpecker_s3_logs_{label}")).is_some()
        })
        .await;
        assert!(metric(&metrics, &label) >= 1.0);
        let other_codes: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("woodpecker_s3_logs_archive_failures_total{"))
            .filter(|l| !l.contains(code))
            .collect();
        assert!(other_codes.is_empty(), "{other_codes:?}");
        assert!(!metrics.contains(&bucket), "no bucket name in the metrics");
        assert_eq!(metric(&metrics, "archive_uploads_total"), 0.0);
        assert_eq!(metric(&metrics, "archive_queue_steps"), 1.0, "{metrics}");
        assert!(metric(&metrics, "spool_bytes") > 0.0, "nothing is lost");
        plugin.kill().await.unwrap();
    }
}

/// A metrics port that cannot be bound stops the start before the handshake, with one hclog
/// error line naming the variable and its value (after waiting 5 s for a previous addon to
/// let go of the port).
#[test]
fn a_metrics_port_in_use_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .env(
            "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
            dir.path().join("spool"),
        )
        .env("WOODPECKER_LOG_STORE_S3_METRICS_ADDR", &addr)
        .env(HANDSHAKE.magic_cookie_key, HANDSHAKE.magic_cookie_value)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no handshake may be printed");
    let errors: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not hclog ({e}): {line}"))
        })
        .filter(|line: &serde_json::Value| line["@level"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["@message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "invalid WOODPECKER_LOG_STORE_S3_METRICS_ADDR={addr}: cannot listen there"
        )),
        "{message}"
    );
}
