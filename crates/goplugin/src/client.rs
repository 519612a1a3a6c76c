//! The host side: launches a plugin binary and talks to it exactly as go-plugin's net/rpc
//! client does (PROTOCOL.md §Launch, §Yamux, §Broker, §Control). It exists so Rust tests,
//! the `demo` subcommand and the benchmarks can drive a plugin the way Woodpecker does.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gob::{Limits, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_yamux::{Control, StreamHandle};

use crate::broker::BROKER_TIMEOUT;
use crate::handshake::{self, HandshakeConfig, HandshakeError, PluginAddr};
use crate::listener::Io;
use crate::mux::{self, SessionType};
use crate::netrpc::{CallError, RpcClient};

/// go-plugin's default `StartTimeout`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`PluginClient::kill`] waits for a graceful exit before SIGKILL, as go-plugin.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The host's stdout scanner refuses longer lines (bufio.Scanner's 64 KiB token limit).
const MAX_HANDSHAKE_LINE: usize = 64 * 1024;

/// Why the plugin could not be started, dialled or dispensed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The plugin process could not be started.
    #[error("cannot start plugin {cmd}: {error}")]
    Spawn {
        /// The plugin binary.
        cmd: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// No handshake line within [`ClientConfig::start_timeout`].
    #[error("timeout while waiting for plugin to start")]
    StartTimeout,
    /// stdout ended without a handshake line.
    #[error("plugin exited before we could connect (no handshake line on stdout)")]
    NoHandshake,
    /// The handshake line was refused.
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The announced address could not be dialled.
    #[error("cannot dial the plugin at {addr}: {error}")]
    Dial {
        /// The address from the handshake line.
        addr: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A yamux stream could not be opened (the session is gone).
    #[error("yamux: {0:?}")]
    Mux(tokio_yamux::error::Error),
    /// A net/rpc call on the control stream failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// `Dispenser.Dispense` answered something other than a `uint32` (shown as debug text).
    #[error("Dispense returned {0}, not a uint32 id")]
    DispenseReply(String),
    /// The broker stream's id exchange failed.
    #[error("broker stream: {0}")]
    Broker(#[from] BrokerAckError),
}

/// Why the host side's broker stream did not get its id echoed (PROTOCOL.md §Broker).
#[derive(Debug, thiserror::Error)]
pub enum BrokerAckError {
    /// Writing the id or reading the echo failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No echo within [`BROKER_TIMEOUT`].
    #[error("timed out waiting for the ack")]
    Timeout,
    /// The plugin echoed another id.
    #[error("bad ack: {got} (expected {expected})")]
    BadAck {
        /// The id echoed.
        got: u32,
        /// The id sent.
        expected: u32,
    },
}

/// How to launch a plugin.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The plugin binary.
    pub cmd: PathBuf,
    /// Its arguments (go-plugin hosts pass none).
    pub args: Vec<OsString>,
    /// The cookie to set and the protocol version to offer and expect.
    pub handshake: HandshakeConfig,
    /// Extra environment, on top of ours (which the plugin inherits, as with go-plugin).
    pub env: Vec<(OsString, OsString)>,
    /// How long to wait for the handshake line ([`START_TIMEOUT`] by default).
    pub start_timeout: Duration,
    /// Keep every stderr line of the plugin for [`PluginClient::stderr_lines`] (tests).
    pub capture_stderr: bool,
    /// Bounds on what the plugin may send on each stream.
    pub limits: Limits,
}

impl ClientConfig {
    /// Launch `cmd` with go-plugin's defaults: no arguments, no extra environment, a 60 s
    /// start timeout, default limits.
    pub fn new(cmd: impl Into<PathBuf>, handshake: HandshakeConfig) -> Self {
        Self {
            cmd: cmd.into(),
            args: Vec::new(),
            handshake,
            env: Vec::new(),
            start_timeout: START_TIMEOUT,
            capture_stderr: false,
            limits: Limits::default(),
        }
    }
}

/// An established go-plugin connection: the yamux client session with its control,
/// stdout and stderr streams. Independent of how the connection was made.
pub struct Connection {
    control: Control,
    rpc: RpcClient,
    driver: JoinHandle<std::io::Result<()>>,
    limits: Limits,
}

impl Connection {
    /// Runs go-plugin's `NewRPCClient` over `io`: yamux client, then streams 1 (control),
    /// 3 (stdout) and 5 (stderr) in that order, the last two drained and discarded.
    pub async fn establish(io: Box<dyn Io>, limits: Limits) -> Result<Self, ClientError> {
        let mux = mux::start(io, SessionType::Client);
        let mut control = mux.control;
        let mut open = async || control.open_stream().await.map_err(ClientError::Mux);
        let control_stream = open().await?;
        for _ in 0..2 {
            tokio::spawn(discard(open().await?));
        }
        Ok(Self {
            control,
            rpc: RpcClient::new(control_stream, limits),
            driver: mux.driver,
            limits,
        })
    }

    /// The net/rpc client of the control stream (`Control.*`, `Dispenser.*`).
    pub fn control(&self) -> &RpcClient {
        &self.rpc
    }

    /// `Control.Ping`.
    pub async fn ping(&self) -> Result<(), CallError> {
        self.rpc
            .call("Control.Ping", Value::Bool(true))
            .await
            .map(drop)
    }

    /// go-plugin's `Dispense`: `Dispenser.Dispense(name)`, then a broker stream carrying the
    /// id as 4 little-endian bytes and waiting for the same 4 bytes back.
    pub async fn dispense(&self, name: &str) -> Result<RpcClient, ClientError> {
        let reply = self
            .rpc
            .call("Dispenser.Dispense", Value::String(name.into()))
            .await?;
        let id = reply
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| ClientError::DispenseReply(format!("{reply:?}")))?;
        let mut stream = self.open_stream().await?;
        stream
            .write_all(&id.to_le_bytes())
            .await
            .map_err(BrokerAckError::Io)?;
        let mut ack = [0u8; 4];
        tokio::time::timeout(BROKER_TIMEOUT, stream.read_exact(&mut ack))
            .await
            .map_err(|_| BrokerAckError::Timeout)?
            .map_err(BrokerAckError::Io)?;
        let got = u32::from_le_bytes(ack);
        if got != id {
            return Err(BrokerAckError::BadAck { got, expected: id }.into());
        }
        Ok(RpcClient::new(stream, self.limits))
    }

    /// Opens a raw yamux stream: what `dispense` builds on, and a way for tests and
    /// diagnostics to speak to the plugin's broker byte by byte.
    pub async fn open_stream(&self) -> Result<StreamHandle, ClientError> {
        self.control
            .clone()
            .open_stream()
            .await
            .map_err(ClientError::Mux)
    }

    /// Drops the connection without any goodbye, as when the host process dies.
    pub fn close(&self) {
        self.driver.abort();
    }

    /// Whether the session has ended (closed by us or by the plugin).
    pub fn is_closed(&self) -> bool {
        self.driver.is_finished()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads a stream to its end and throws the bytes away (go-plugin copies the plugin's
/// stdout/stderr streams to `io.Discard` in Woodpecker), then closes our side cleanly so
/// dropping the handle does not reset it.
async fn discard(mut stream: StreamHandle) {
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    let _ = stream.shutdown().await;
}

/// A launched plugin process with its connection.
pub struct PluginClient {
    child: Child,
    addr: PluginAddr,
    conn: Connection,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_task: JoinHandle<()>,
}

/// How [`PluginClient::kill`] ended the plugin.
#[derive(Debug)]
pub struct KillOutcome {
    /// True when the plugin exited by itself after `Control.Quit`, within [`KILL_GRACE`].
    pub graceful: bool,
    /// The plugin's exit status.
    pub status: ExitStatus,
}

impl PluginClient {
    /// Launches the plugin as go-plugin's `Client.Start` does: our environment plus the magic
    /// cookie, `PLUGIN_MIN_PORT=10000`, `PLUGIN_MAX_PORT=25000`,
    /// `PLUGIN_PROTOCOL_VERSIONS=<version>`; stdin from /dev/null; the first stdout line
    /// within `start_timeout` is the handshake; stdout is drained after that; each stderr
    /// line is relayed into our tracing. Then dials and establishes the connection.
    pub async fn start(config: ClientConfig) -> Result<Self, ClientError> {
        let mut cmd = Command::new(&config.cmd);
        cmd.args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .env(
                config.handshake.magic_cookie_key,
                config.handshake.magic_cookie_value,
            )
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .env(
                "PLUGIN_PROTOCOL_VERSIONS",
                config.handshake.protocol_version.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|error| ClientError::Spawn {
            cmd: config.cmd.clone(),
            error,
        })?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let plugin = config.cmd.display().to_string();
        let stderr_task = tokio::spawn(relay_stderr(
            child.stderr.take().expect("stderr is piped"),
            plugin,
            config.capture_stderr.then(|| stderr.clone()),
        ));

        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = Vec::new();
        let mut limited = (&mut stdout).take(MAX_HANDSHAKE_LINE as u64);
        let read = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout(config.start_timeout, read).await {
            Err(_) => return Err(ClientError::StartTimeout),
            Ok(Ok(0)) => return Err(ClientError::NoHandshake),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(ClientError::NoHandshake),
        }
        // Keep draining stdout so the plugin can never block writing to it.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
        });
        let line = String::from_utf8_lossy(&line);
        let addr = handshake::parse_handshake_line(&line, config.handshake.protocol_version)?;

        let dial_error = |error| ClientError::Dial {
            addr: addr.to_string(),
            error,
        };
        let io: Box<dyn Io> = match &addr {
            PluginAddr::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(dial_error)?,
            ),
            PluginAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(dial_error)?;
                s.set_nodelay(true).map_err(dial_error)?;
                Box::new(s)
            }
        };
        let conn = Connection::establish(io, config.limits).await?;
        Ok(Self {
            child,
            addr,
            conn,
            stderr,
            stderr_task,
        })
    }

    /// The go-plugin connection to the plugin.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// See [`Connection::dispense`].
    pub async fn dispense(&self, name: &str) -> Result<RpcClient, ClientError> {
        self.conn.dispense(name).await
    }

    /// The address from the handshake line.
    pub fn addr(&self) -> &PluginAddr {
        &self.addr
    }

    /// The plugin's process id, until it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The stderr lines captured so far (only with [`ClientConfig::capture_stderr`]).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Drops the connection without `Control.Quit`, like a host that died.
    pub fn disconnect(&self) {
        self.conn.close();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()?
            .ok()?;
        self.finish_stderr().await;
        Some(status)
    }

    /// go-plugin's `Client.Kill`: `Control.Quit`, close the connection, wait up to 2 s for
    /// the process, then SIGKILL.
    pub async fn kill(mut self) -> std::io::Result<KillOutcome> {
        let quit = tokio::time::timeout(
            KILL_GRACE,
            self.conn.control().call("Control.Quit", Value::Bool(true)),
        )
        .await;
        self.conn.close();
        let quit_ok = matches!(quit, Ok(Ok(_)));
        if quit_ok && let Ok(status) = tokio::time::timeout(KILL_GRACE, self.child.wait()).await {
            self.finish_stderr().await;
            return Ok(KillOutcome {
                graceful: true,
                status: status?,
            });
        }
        self.child.start_kill()?;
        let status = self.child.wait().await?;
        self.finish_stderr().await;
        Ok(KillOutcome {
            graceful: false,
            status,
        })
    }

    /// After exit, lets the stderr relay reach EOF so every line has been captured.
    async fn finish_stderr(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr_task).await;
    }
}

/// Reads the plugin's stderr line by line (lossy UTF-8), relays each line into our tracing
/// the way go-plugin's host does, and optionally keeps a copy.
async fn relay_stderr(
    stderr: impl AsyncRead + Unpin,
    plugin: String,
    capture: Option<Arc<Mutex<Vec<String>>>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        crate::hclog::relay(&plugin, line);
        if let Some(capture) = &capture {
            capture.lock().unwrap().push(line.to_string());
        }
    }
}
