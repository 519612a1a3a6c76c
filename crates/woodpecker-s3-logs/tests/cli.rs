//! The binary as admins and Woodpecker meet it: configuration errors at start, `get`.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");
const COOKIE: (&str, &str) = (
    "WOODPECKER_LOG_ADDON_PLUGIN",
    "woodpecker-plugin-magic-cookie-value",
);

fn addon(env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .env("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", &spool)
        .env(COOKIE.0, COOKIE.1)
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// Every stderr line, parsed as the hclog JSON the host expects.
fn hclog_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not hclog JSON ({e}): {line}"));
            for key in ["@level", "@message", "@timestamp"] {
                assert!(value[key].is_string(), "{key} must be a string: {line}");
            }
            value
        })
        .collect()
}

#[test]
fn invalid_settings_stop_the_start_with_one_line_naming_the_variable() {
    for (variable, value) in [
        ("WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT", "5"),
        ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "maybe"),
        ("WOODPECKER_LOG_STORE_S3_SPOOL_SYNC", "sometimes"),
        ("WOODPECKER_LOG_STORE_S3_COMPRESSION_LEVEL", "99"),
        ("WOODPECKER_LOG_STORE_S3_LOG_LEVEL", "loud"),
        ("WOODPECKER_LOG_STORE_S3_METRICS_ADDR", "9464"),
        (
            "WOODPECKER_LOG_STORE_S3_METRICS_ADDR",
            "metrics.internal:9464",
        ),
    ] {
        let mut env = vec![(variable, value)];
        if variable == "WOODPECKER_LOG_STORE_S3_PATH_STYLE" {
            env.push(("WOODPECKER_LOG_STORE_S3_BUCKET", "logs"));
        }
        let output = addon(&env);
        assert_eq!(output.status.code(), Some(1), "{variable}={value}");
        assert!(output.stdout.is_empty(), "no handshake may be printed");
        let errors: Vec<_> = hclog_lines(&output)
            .into_iter()
            .filter(|line| line["@level"] == "error")
            .collect();
        assert_eq!(errors.len(), 1, "{variable}: {errors:?}");
        let message = errors[0]["@message"].as_str().unwrap();
        assert!(message.contains(variable), "{message}");
    }
}

/// Issue 12, finding 6: a symbolic link as the spool directory stops the start with one
/// line naming the variable, and its target is left as it was.
#[test]
fn a_symlinked_spool_dir_stops_the_start_naming_the_variable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("tmp")).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = addon(&[("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", link.to_str().unwrap())]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no handshake may be printed");
    let errors: Vec<_> = hclog_lines(&output)
        .into_iter()
        .filter(|line| line["@level"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["@message"].as_str().unwrap();
    assert!(
        message.contains("WOODPECKER_LOG_STORE_S3_SPOOL_DIR") && message.contains("symbolic link"),
        "{message}"
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    assert!(target.join("tmp").exists());
}

#[test]
fn without_the_cookie_it_refuses_like_go_plugin() {
    let output = Command::new(BIN)
        .env_remove(COOKIE.0)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("This binary is a plugin"));
}

#[test]
fn get_refuses_invalid_step_ids() {
    for id in ["0", "-3"] {
        let output = Command::new(BIN).args(["get", "--", id]).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not a valid Woodpecker step id"),
            "{stderr}"
        );
    }
}

/// SIGTERM (systemd's `KillMode=control-group`, Kubernetes with a shared process namespace):
/// the addon stops serving, shuts the engine down gracefully and exits 0 well within the
/// grace period.
#[test]
fn sigterm_shuts_down_gracefully_and_exits_zero() {
    use std::io::{BufRead, BufReader, Read};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .env(
            "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
            dir.path().join("spool"),
        )
        .env("WOODPECKER_LOG_STORE_S3_SHUTDOWN_GRACE", "2s")
        .env(COOKIE.0, COOKIE.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The handshake line: the addon is up and serving.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("1|"), "handshake: {line:?}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the addon did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("stopped after SIGTERM"),
        "the graceful shutdown ran: {stderr}"
    );
}

/// Issue 12, finding 5: started under a low soft limit of open files (`ulimit -Sn 256`, the
/// shell default in many containers), the addon raises it to the hard limit, so large
/// archive builds and many open spool files do not run out of descriptors.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\"", BIN])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", dir.path())
        .env(
            "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
            dir.path().join("spool"),
        )
        .env(COOKIE.0, COOKIE.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("1|"), "handshake: {line:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line")
        .split_whitespace()
        .collect();
    let (soft, hard) = (open_files[3], open_files[4]);
    assert_ne!(soft, "256", "{limits}");
    assert_eq!(soft, hard, "{limits}");
}
