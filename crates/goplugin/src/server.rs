//! The plugin side: go-plugin's `plugin.Serve` for the net/rpc protocol (spec §1–§5).

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
    pub handshake: HandshakeConfig,
    /// Plugin name (what the host passes to `Dispense`, e.g. `"log"`) → its handler, served
    /// under the net/rpc service name `Plugin` on the broker stream.
    pub plugins: Vec<(String, Arc<dyn Handler>)>,
    /// Bounds on what the host may send on each stream.
    pub limits: Limits,
}

/// How one connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The host closed the connection (EOF), or it broke.
    Closed(Option<std::io::Error>),
    /// The host called `Control.Quit`.
    Quit,
}

/// Runs the plugin until the host is gone, then exits the process; never returns.
///
/// Exit status: 1 without the magic cookie (after go-plugin's message on stderr) or when the
/// listener cannot be set up or the host never dials; 0 once a served connection has ended or
/// on SIGTERM. The socket and its directory are removed on every path.
///
/// Logging must be set up by the caller (see [`crate::hclog::init`]); nothing but the
/// handshake line is ever written to stdout.
pub async fn serve(config: ServeConfig) -> ! {
    if !config.handshake.cookie_present() {
        process::write_stderr(format!("{COOKIE_MISMATCH_MESSAGE}\n").as_bytes());
        std::process::exit(1);
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

    let listener = match ListenOptions::from_env().and_then(|o| PluginListener::bind(&o)) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "cannot listen for the host");
            std::process::exit(1);
        }
    };
    let line = handshake::handshake_line(version, listener.addr());
    if let Err(error) = process::announce(&line).and_then(|()| process::seal_stdio()) {
        tracing::error!(%error, "cannot write the handshake to stdout");
        listener.cleanup();
        std::process::exit(1);
    }
    tracing::debug!(addr = %listener.addr(), "plugin listening");

    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
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
    std::process::exit(code);
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
                    // never write. The host's copy loops see EOF and end quietly (spec §2.2).
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
