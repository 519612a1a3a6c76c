//! The plugin side: go-plugin's `plugin.Serve` for the net/rpc protocol (PROTOCOL.md §Handshake to
//! §net/rpc).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gob::{Limits, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::handshake::{self, COOKIE_MISMATCH_MESSAGE, HandshakeConfig};
use crate::listener::{Io, ListenOptions, PluginListener};
use crate::mux::{self, SessionType};
use crate::netrpc::{self, BoxFuture, Handler, Router};
use crate::process;

/// How long the plugin waits for the host to dial after printing the handshake. The host
/// dials as soon as it has read the line; if it never does, it died, and the plugin must not
/// linger as an orphan.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// After `Control.Quit`, the longest the plugin waits for the host to close the connection
/// (which tells it the reply arrived) before exiting anyway. The host's grace is 2 s.
pub const QUIT_GRACE: Duration = Duration::from_secs(1);

/// Everything [`serve`] needs.
pub struct ServeConfig {
    /// Cookie and protocol version the host expects.
    pub handshake: HandshakeConfig,
    /// Plugin name (what the host passes to `Dispense`, e.g. `"log"`) → its handler, served
    /// under the net/rpc service name `Plugin` on the broker stream.
    pub plugins: Vec<(String, Arc<dyn Handler>)>,
    /// Bounds on what the host may send on each stream.
    pub limits: Limits,
    /// The last place for the socket's private directory, when go-plugin's choice
    /// (`PLUGIN_UNIX_SOCKET_DIR`, `TMPDIR`, `/tmp`), `XDG_RUNTIME_DIR` and `XDG_CACHE_HOME`
    /// are all missing or not writable: a directory of the program's own (created 0700).
    pub socket_fallback_dir: Option<PathBuf>,
}

/// How one connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The host closed the connection (EOF), or it broke.
    Closed(Option<std::io::Error>),
    /// The host called `Control.Quit`.
    Quit,
}

/// Runs the plugin until the host is gone and returns the status the process should exit
/// with. The caller exits promptly (after flushing its own state): Woodpecker never
/// reconnects, so a plugin that outlives its connection is an orphan.
///
/// Exit status: 1 without the magic cookie (after go-plugin's message on stderr) or when the
/// listener cannot be set up or the host never dials; 0 once a served connection has ended or
/// on SIGTERM. The socket and its directory are removed on every path.
///
/// Logging must be set up by the caller (see [`crate::hclog::init`]); nothing but the
/// handshake line is ever written to stdout.
///
/// No `PR_SET_PDEATHSIG`: it fires when the *thread* that forked us exits, and Go forks from
/// whatever OS thread runs the goroutine, so a live host could kill its plugin. The host's
/// death is noticed anyway: the kernel closes its end of the socket and the session ends.
pub async fn serve(config: ServeConfig) -> i32 {
    if !config.handshake.cookie_present() {
        process::write_stderr(format!("{COOKIE_MISMATCH_MESSAGE}\n").as_bytes());
        return 1;
    }
    let version = config.handshake.protocol_version;
    let (offered, bad) = handshake::parse_protocol_versions(
        &std::env::var("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default(),
    );
    for entry in bad {
        tracing::warn!(
            entry,
            "PLUGIN_PROTOCOL_VERSIONS: ignoring an entry that is not a number"
        );
    }
    if !offered.is_empty() && !offered.contains(&version) {
        // Like Go: announce ours anyway and let the host report the mismatch.
        tracing::warn!(
            ?offered,
            version,
            "the host does not offer our protocol version"
        );
    }
    process::ignore_sigint();

    let listener = match ListenOptions::from_env(config.socket_fallback_dir.as_deref())
        .and_then(|o| PluginListener::bind(&o))
    {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "cannot listen for the host");
            return 1;
        }
    };
    // Before the handshake line: a SIGTERM sent as soon as the plugin is up must be seen.
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let line = handshake::handshake_line(version, listener.addr());
    if let Err(error) = process::announce(&line).and_then(|()| process::seal_stdio()) {
        tracing::error!(%error, "cannot write the handshake to stdout");
        listener.cleanup();
        return 1;
    }
    tracing::debug!(addr = %listener.addr(), "plugin listening");

    let terminated = async {
        match sigterm.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let plugins = Arc::new(config.plugins);
    let limits = config.limits;
    let run = async {
        let io = match tokio::time::timeout(ACCEPT_TIMEOUT, listener.accept()).await {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::error!(%error, "accepting the host's connection failed");
                return 1;
            }
            Err(_) => {
                tracing::error!("the host never connected; exiting");
                return 1;
            }
        };
        // The path has served its purpose: remove it now, so nothing is left behind even if
        // the process is later killed with SIGKILL.
        listener.cleanup();
        match serve_connection(io, plugins, limits).await {
            ConnectionEnd::Quit => tracing::debug!("host asked the plugin to quit"),
            ConnectionEnd::Closed(None) => tracing::debug!("host closed the connection; exiting"),
            ConnectionEnd::Closed(Some(error)) => {
                tracing::info!(%error, "connection to the host broke; exiting")
            }
        }
        0
    };
    let code = tokio::select! {
        code = run => code,
        () = terminated => {
            tracing::info!("received SIGTERM; exiting");
            0
        }
    };
    listener.cleanup();
    code
}

/// Serves one host connection: yamux server, control stream, stdout/stderr streams, broker
/// streams. Returns when the connection ends or the host calls `Control.Quit`.
pub async fn serve_connection(
    io: Box<dyn Io>,
    plugins: Arc<Vec<(String, Arc<dyn Handler>)>>,
    limits: Limits,
) -> ConnectionEnd {
    let mut mux = mux::start(io, SessionType::Server);
    let quit = Arc::new(Notify::new());
    let broker = Arc::new(Broker::default());
    let mut control = Router::new();
    control.register("Control", Arc::new(ControlService { quit: quit.clone() }));
    control.register(
        "Dispenser",
        Arc::new(DispenserService {
            broker: broker.clone(),
            plugins: plugins.iter().map(|(n, _)| n.clone()).collect(),
        }),
    );
    let control = Arc::new(control);
    let mut accepted = 0u64;
    loop {
        tokio::select! {
            stream = mux.inbound.recv() => {
                let Some(mut stream) = stream else {
                    // The driver dropped its sender: the session is over.
                    return closed((&mut mux.driver).await);
                };
                accepted += 1;
                match accepted {
                    1 => { tokio::spawn(netrpc::serve(stream, control.clone(), limits)); }
                    // stdout and stderr: the stream was ACKed when accepted; FIN it now and
                    // never write. The host's copy loops see EOF and end quietly (PROTOCOL.md §Yamux).
                    2 | 3 => { let _ = stream.shutdown().await; }
                    _ => {
                        let broker = broker.clone();
                        let plugins = plugins.clone();
                        tokio::spawn(async move {
                            let name = match broker.accept(&mut stream).await {
                                Ok(name) => name,
                                Err(error) => {
                                    tracing::warn!(%error, "refusing a broker stream");
                                    let _ = stream.shutdown().await;
                                    return;
                                }
                            };
                            let Some((_, handler)) = plugins.iter().find(|(n, _)| *n == name) else {
                                return;
                            };
                            let mut router = Router::new();
                            router.register("Plugin", handler.clone());
                            netrpc::serve(stream, Arc::new(router), limits).await;
                        });
                    }
                }
            }
            () = quit.notified() => {
                // Give the Quit reply time to leave; the host closes the connection as soon
                // as it has it.
                let _ = tokio::time::timeout(QUIT_GRACE, &mut mux.driver).await;
                return ConnectionEnd::Quit;
            }
            result = &mut mux.driver => return closed(result),
        }
    }
}

fn closed(driver: Result<std::io::Result<()>, tokio::task::JoinError>) -> ConnectionEnd {
    ConnectionEnd::Closed(match driver {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(std::io::Error::other(e)),
    })
}

/// go-plugin's `Control` service.
struct ControlService {
    quit: Arc<Notify>,
}

impl Handler for ControlService {
    fn methods(&self) -> &[&str] {
        &["Ping", "Quit"]
    }

    fn call<'a>(&'a self, method: &'a str, _arg: Value) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            if method == "Quit" {
                self.quit.notify_one();
            }
            Ok(Value::empty_struct())
        })
    }
}

/// go-plugin's `Dispenser` service.
struct DispenserService {
    broker: Arc<Broker>,
    plugins: Vec<String>,
}

impl Handler for DispenserService {
    fn methods(&self) -> &[&str] {
        &["Dispense"]
    }

    fn call<'a>(&'a self, _method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let name = arg.as_str().ok_or_else(|| {
                format!("Dispense: expected a string argument, got {}", arg.kind())
            })?;
            if !self.plugins.iter().any(|p| p == name) {
                return Err(format!("unknown plugin type: {name}"));
            }
            // Registered before the reply is written: the host's stream cannot arrive first.
            Ok(Value::Uint(u64::from(self.broker.register(name))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    struct Echo;
    impl Handler for Echo {
        fn methods(&self) -> &[&str] {
            &["LogFind"]
        }
        fn call<'a>(&'a self, _: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>> {
            Box::pin(async move { Ok(arg) })
        }
    }

    /// Drives `serve_connection` with the exact bytes a Go host sends (PROTOCOL.md §gob) over a raw
    /// yamux client, and checks the plugin's bytes.
    #[tokio::test]
    async fn go_host_bytes_get_go_plugin_bytes() {
        let (host_io, plugin_io) = tokio::net::UnixStream::pair().unwrap();
        let plugins: Arc<Vec<(String, Arc<dyn Handler>)>> =
            Arc::new(vec![("log".into(), Arc::new(Echo))]);
        let served = tokio::spawn(serve_connection(
            Box::new(plugin_io),
            plugins,
            Limits::default(),
        ));
        let mut host = mux::start(Box::new(host_io), SessionType::Client);
        let mut control = host.control.open_stream().await.unwrap();
        let mut stdout = host.control.open_stream().await.unwrap();
        let mut stderr = host.control.open_stream().await.unwrap();

        // stdout/stderr are FINed at once and never carry a byte.
        for s in [&mut stdout, &mut stderr] {
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
                .await
                .expect("FIN arrives at once")
                .unwrap();
            assert!(buf.is_empty());
        }

        // (a) Dispenser.Dispense("log") → (b), byte for byte.
        let request = hex(
            "2e 7f 03 01 01 07 52 65 71 75 65 73 74 01 ff 80 00 01 02 01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00 01 03 53 65 71 01 06 00 00 00
             17 ff 80 01 12 44 69 73 70 65 6e 73 65 72 2e 44 69 73 70 65 6e 73 65 00
             06 0c 00 03 6c 6f 67",
        );
        control.write_all(&request).await.unwrap();
        let expected = hex("39 7f 03 01 01 08 52 65 73 70 6f 6e 73 65 01 ff 80 00 01 03
             01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00
             01 03 53 65 71 01 06 00 01 05 45 72 72 6f 72 01 0c 00 00 00
             17 ff 80 01 12 44 69 73 70 65 6e 73 65 72 2e 44 69 73 70 65 6e 73 65 00
             03 06 00 01");
        let mut reply = vec![0u8; expected.len()];
        control.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, expected);

        // Broker stream: id 1 echoed, then Woodpecker's first Plugin.LogFind (PROTOCOL.md §gob).
        let mut broker = host.control.open_stream().await.unwrap();
        broker.write_all(&[1, 0, 0, 0]).await.unwrap();
        let mut ack = [0u8; 4];
        broker.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack, [1, 0, 0, 0]);
        let call = hex(
            "2e 7f 03 01 01 07 52 65 71 75 65 73 74 01 ff 80 00 01 02 01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00 01 03 53 65 71 01 06 00 00 00
             13 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 00
             0b 0a 00 08 7b 22 69 64 22 3a 35 7d",
        );
        broker.write_all(&call).await.unwrap();
        let mut expected = hex("39 7f 03 01 01 08 52 65 73 70 6f 6e 73 65 01 ff 80 00 01 03
             01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00
             01 03 53 65 71 01 06 00 01 05 45 72 72 6f 72 01 0c 00 00 00
             13 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 00
             0b 0a 00 08 7b 22 69 64 22 3a 35 7d");
        let mut reply = vec![0u8; expected.len()];
        broker.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, expected);

        // An unknown method with Seq 1: error header (Response already defined on this
        // stream), then an empty-struct body with its definition.
        let call = hex(
            "14 ff 80 01 0d 50 6c 75 67 69 6e 2e 4c 6f 67 46 6f 6f 01 01 00
             03 0a 00 00",
        );
        broker.write_all(&call).await.unwrap();
        let error = b"rpc: can't find method Plugin.LogFoo";
        let mut header = hex("ff 80 01 0d 50 6c 75 67 69 6e 2e 4c 6f 67 46 6f 6f 01 01 01");
        header.push(error.len() as u8);
        header.extend_from_slice(error);
        header.push(0);
        expected.clear();
        expected.push(header.len() as u8);
        expected.extend_from_slice(&header);
        // The empty struct gets the next id, 65: definition, then the value `00`.
        expected.extend_from_slice(&hex("0a ff 81 03 01 02 ff 82 00 00 00"));
        expected.extend_from_slice(&hex("03 ff 82 00"));
        let mut reply = vec![0u8; expected.len()];
        broker.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, expected);

        // Quit ends the connection.
        let quit = hex("13 ff 80 01 0c 43 6f 6e 74 72 6f 6c 2e 51 75 69 74 01 01 00
             03 02 00 01");
        control.write_all(&quit).await.unwrap();
        let mut first = [0u8; 1];
        control.read_exact(&mut first).await.unwrap();
        host.driver.abort();
        let end = tokio::time::timeout(Duration::from_secs(3), served)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, ConnectionEnd::Quit), "{end:?}");
    }

    /// The session ending (host gone) ends `serve_connection` promptly.
    #[tokio::test]
    async fn connection_end_is_noticed() {
        let (host_io, plugin_io) = tokio::net::UnixStream::pair().unwrap();
        let served = tokio::spawn(serve_connection(
            Box::new(plugin_io),
            Arc::new(Vec::new()),
            Limits::default(),
        ));
        drop(host_io);
        let end = tokio::time::timeout(Duration::from_secs(1), served)
            .await
            .expect("ends within 1 s")
            .unwrap();
        assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
    }
}
