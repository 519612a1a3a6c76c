//! End to end: the echo plugin binary launched and driven through the host-side client, the
//! way go-plugin's host drives a plugin.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use goplugin::handshake::PluginAddr;
use goplugin::{CallError, ClientConfig, HandshakeConfig, PluginClient, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const PLUGIN: &str = env!("CARGO_BIN_EXE_goplugin-echo-plugin");
const HANDSHAKE: HandshakeConfig = HandshakeConfig {
    protocol_version: 1,
    magic_cookie_key: "GOPLUGIN_ECHO_PLUGIN",
    magic_cookie_value: "echo-plugin-cookie",
};

fn config() -> ClientConfig {
    let mut c = ClientConfig::new(PLUGIN, HANDSHAKE);
    c.capture_stderr = true;
    c
}

async fn start() -> PluginClient {
    PluginClient::start(config()).await.expect("plugin starts")
}

fn bytes(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

/// Every stderr line is an hclog JSON object with string `@level`/`@message`/`@timestamp`.
fn assert_hclog_lines(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["@level", "@message", "@timestamp"] {
            assert!(v[key].is_string(), "{key} not a string: {line}");
        }
        let ts = v["@timestamp"].as_str().unwrap();
        assert_eq!(
            ts.len(),
            27,
            "timestamp {ts} should have 6 fractional digits"
        );
        assert!(line.len() < 64 * 1024);
    }
}

fn socket_path(client: &PluginClient) -> std::path::PathBuf {
    match client.addr() {
        PluginAddr::Unix(p) => p.clone(),
        other => panic!("expected a unix socket, got {other}"),
    }
}

#[tokio::test]
async fn dispense_echo_errors_and_graceful_kill() {
    let client = start().await;
    let path = socket_path(&client);
    client.connection().ping().await.unwrap();

    let echo = client.dispense("echo").await.unwrap();
    let odd = [0u8, 0xff, 0xfe, b'\n', 0x80];
    assert_eq!(echo.call("Plugin.Echo", bytes(&odd)).await, Ok(bytes(&odd)));
    assert_eq!(echo.call("Plugin.Echo", bytes(b"")).await, Ok(bytes(b"")));
    assert_eq!(
        echo.call("Plugin.Echo", Value::String("grüße 🌍".into()))
            .await,
        Ok(Value::String("grüße 🌍".into()))
    );

    // Errors of every kind are answered and the stream keeps serving.
    assert_eq!(
        echo.call("Plugin.Fail", bytes(b"boom")).await,
        Err(CallError::Server("boom".into()))
    );
    assert_eq!(
        echo.call("Plugin.Nope", bytes(b"")).await,
        Err(CallError::Server(
            "rpc: can't find method Plugin.Nope".into()
        ))
    );
    assert_eq!(
        echo.call("Other.Echo", bytes(b"")).await,
        Err(CallError::Server(
            "rpc: can't find service Other.Echo".into()
        ))
    );
    assert_eq!(
        echo.call("NoDot", bytes(b"")).await,
        Err(CallError::Server(
            "rpc: service/method request ill-formed: NoDot".into()
        ))
    );
    match echo.call("Plugin.Panic", bytes(b"on purpose")).await {
        Err(CallError::Server(msg)) => assert!(msg.contains("panicked"), "{msg}"),
        other => panic!("panic should be an rpc error, got {other:?}"),
    }
    match echo.call("Plugin.Unencodable", bytes(b"")).await {
        Err(CallError::Server(msg)) => assert!(msg.contains("cannot encode"), "{msg}"),
        other => panic!("expected an encode error, got {other:?}"),
    }
    assert_eq!(
        echo.call("Plugin.Echo", bytes(b"still")).await,
        Ok(bytes(b"still"))
    );

    // Control errors and a second dispense on the same connection.
    match client.dispense("nope").await {
        Err(goplugin::ClientError::Call(CallError::Server(msg))) => {
            assert_eq!(msg, "unknown plugin type: nope")
        }
        other => panic!("{:?}", other.err()),
    }
    let echo2 = client.dispense("echo").await.unwrap();
    assert_eq!(
        echo2.call("Plugin.Echo", bytes(b"2")).await,
        Ok(bytes(b"2"))
    );
    echo.call("Plugin.Log", bytes(b"hello from the test"))
        .await
        .unwrap();

    // Give the log line time to arrive before reading the capture.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = client.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("hello from the test")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"@level\":\"error\"") && l.contains("panic"))
    );
    let outcome = client.kill().await.unwrap();
    assert!(outcome.graceful, "{outcome:?}");
    assert_eq!(outcome.status.code(), Some(0));
    assert!(!path.exists(), "socket left behind");
    assert!(
        !path.parent().unwrap().exists(),
        "socket directory left behind"
    );
}

#[tokio::test]
async fn hundreds_of_concurrent_calls_complete_out_of_order() {
    let client = start().await;
    let echo = client.dispense("echo").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..600u64 {
        let echo = echo.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                // Later calls sleep less, so replies overtake each other.
                let ms = 200 - (i % 200);
                let r = echo.call("Plugin.Sleep", Value::Uint(ms)).await;
                assert_eq!(r, Ok(Value::Bytes(ms.to_string().into_bytes())));
            } else if i % 3 == 1 {
                let payload = format!("call {i}").repeat((i % 50) as usize + 1);
                let r = echo.call("Plugin.Echo", bytes(payload.as_bytes())).await;
                assert_eq!(r, Ok(bytes(payload.as_bytes())));
            } else {
                let r = echo
                    .call("Plugin.Fail", bytes(format!("e{i}").as_bytes()))
                    .await;
                assert_eq!(r, Err(CallError::Server(format!("e{i}"))));
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    // 200 sleeps of up to 200 ms each finish in about one sleep if they ran concurrently.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    client.kill().await.unwrap();
}

#[tokio::test]
async fn a_64_mib_reply_and_an_8_mib_request() {
    let client = start().await;
    let echo = client.dispense("echo").await.unwrap();
    let n = 64 << 20;
    let started = Instant::now();
    let reply = echo.call("Plugin.Big", Value::Uint(n)).await.unwrap();
    let reply = reply.as_bytes().unwrap();
    assert_eq!(reply.len(), n as usize);
    assert!(reply.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    eprintln!("64 MiB reply in {:?}", started.elapsed());

    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 253) as u8).collect();
    assert_eq!(echo.call("Plugin.Echo", bytes(&big)).await, Ok(bytes(&big)));
    // The control stream was not disturbed meanwhile.
    client.connection().ping().await.unwrap();
    client.kill().await.unwrap();
}

#[tokio::test]
async fn plugin_exits_when_the_host_connection_drops() {
    let mut client = start().await;
    let path = socket_path(&client);
    let echo = client.dispense("echo").await.unwrap();
    echo.call("Plugin.Echo", bytes(b"x")).await.unwrap();
    let dropped = Instant::now();
    client.disconnect();
    let status = client
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("plugin exits after the connection drops");
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "{:?}",
        dropped.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists() && !path.parent().unwrap().exists());
    assert_hclog_lines(&client.stderr_lines());
    assert!(matches!(
        echo.call("Plugin.Echo", bytes(b"x")).await,
        Err(CallError::Shutdown(_))
    ));
}

#[tokio::test]
async fn sigint_is_ignored() {
    let client = start().await;
    let echo = client.dispense("echo").await.unwrap();
    let pid = client.pid().unwrap() as libc::pid_t;
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        echo.call("Plugin.Echo", bytes(b"alive")).await,
        Ok(bytes(b"alive"))
    );
    client.kill().await.unwrap();
}

#[tokio::test]
async fn without_the_cookie_exit_1_with_the_message_and_empty_stdout() {
    let out = tokio::process::Command::new(PLUGIN)
        .env_remove(HANDSHAKE.magic_cookie_key)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(goplugin::handshake::COOKIE_MISMATCH_MESSAGE),
        "{stderr}"
    );

    // A wrong value is as bad as none.
    let out = tokio::process::Command::new(PLUGIN)
        .env(HANDSHAKE.magic_cookie_key, "wrong")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn handshake_line_socket_directory_and_sealed_stdout() {
    let base = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(PLUGIN)
        .env(HANDSHAKE.magic_cookie_key, HANDSHAKE.magic_cookie_value)
        .env("PLUGIN_UNIX_SOCKET_DIR", base.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let parts: Vec<&str> = line.trim_end_matches('\n').split('|').collect();
    assert_eq!(parts.len(), 6, "{line:?}");
    assert_eq!(&parts[..3], ["1", "1", "unix"]);
    assert_eq!(&parts[4..], ["netrpc", ""]);
    let path = std::path::Path::new(parts[3]);
    assert!(path.starts_with(base.path()), "{line}");
    let dir = path.parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // Nothing after the handshake: stdout is /dev/null now, so EOF once the process ends.
    let _conn = tokio::net::UnixStream::connect(path).await.unwrap();
    drop(_conn);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stdout.read_to_end(&mut rest))
        .await
        .expect("stdout reaches EOF")
        .unwrap();
    assert!(rest.is_empty());
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!dir.exists());
}

#[tokio::test]
async fn hostile_bytes_close_only_their_stream() {
    let mut cfg = config();
    cfg.env
        .push(("GOPLUGIN_ECHO_MAX_MESSAGE".into(), "4096".into()));
    let client = PluginClient::start(cfg).await.unwrap();
    let good = client.dispense("echo").await.unwrap();

    // A body over the plugin's limit is skipped unread and refused with an RPC error; the
    // stream goes on. 1 MiB is four yamux windows, so a plugin that stopped reading would
    // leave this write hanging.
    let big = client.dispense("echo").await.unwrap();
    let r = big.call("Plugin.Echo", bytes(&vec![7u8; 1 << 20])).await;
    assert!(
        matches!(&r, Err(CallError::Server(m)) if m.contains("over the plugin's limit")),
        "{r:?}"
    );
    assert_eq!(
        big.call("Plugin.Echo", bytes(b"again")).await,
        Ok(bytes(b"again"))
    );

    // A header over the limit cannot be answered (its Seq is unknown): the stream is closed
    // and the call fails instead of hanging…
    let victim = client.dispense("echo").await.unwrap();
    let r = victim
        .call(&format!("Plugin.{}", "E".repeat(8192)), bytes(b"x"))
        .await;
    assert!(matches!(r, Err(CallError::Shutdown(_))), "{r:?}");

    // …garbage on a raw broker stream is dropped the same way…
    let id = client
        .connection()
        .control()
        .call("Dispenser.Dispense", Value::String("echo".into()))
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    let mut raw = client.connection().open_stream().await.unwrap();
    raw.write_all(&id.to_le_bytes()).await.unwrap();
    let mut ack = [0u8; 4];
    raw.read_exact(&mut ack).await.unwrap();
    assert_eq!(u32::from_le_bytes(ack), id);
    // A type definition with a reserved id (-1), then junk.
    raw.write_all(&[0x05, 0x01, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), raw.read_to_end(&mut rest))
        .await
        .expect("the plugin closes the stream")
        .ok();
    assert!(rest.is_empty());

    // …an unknown broker id is refused…
    let mut stray = client.connection().open_stream().await.unwrap();
    stray.write_all(&999u32.to_le_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), stray.read_to_end(&mut buf))
        .await
        .expect("the plugin closes a stream with an unknown id");
    assert!(n.is_err() || buf.is_empty());

    // …and everything else keeps working.
    assert_eq!(
        good.call("Plugin.Echo", bytes(b"ok")).await,
        Ok(bytes(b"ok"))
    );
    client.connection().ping().await.unwrap();
    let lines = client.stderr_lines();
    client.kill().await.unwrap();
    assert_hclog_lines(&lines);
}

#[tokio::test]
async fn many_distinct_results_match_their_calls() {
    // Seq matching under load: each reply is unique to its call.
    let client = start().await;
    let echo = client.dispense("echo").await.unwrap();
    let calls = (0..300u32).map(|i| {
        let echo = echo.clone();
        async move { (i, echo.call("Plugin.Echo", Value::Uint(u64::from(i))).await) }
    });
    let results = futures::future::join_all(calls).await;
    let mut seen = HashSet::new();
    for (i, r) in results {
        assert_eq!(r, Ok(Value::Uint(u64::from(i))));
        seen.insert(i);
    }
    assert_eq!(seen.len(), 300);
    client.kill().await.unwrap();
}
