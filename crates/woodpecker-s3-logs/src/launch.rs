//! This binary launched as the addon, the way the Woodpecker server launches it (go-plugin
//! handshake over a Unix socket, then `Dispense("log")`): what `demo` and `doctor` drive.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use archive::ObjectStore;
use goplugin::{ClientConfig, PluginClient};
use logservice::addon::{HANDSHAKE, LogClient, PLUGIN_NAME};

/// A running addon and its log client.
pub(crate) struct LaunchedAddon {
    plugin: PluginClient,
    /// Woodpecker's four log calls.
    pub(crate) log: LogClient,
    /// The binary that was launched.
    pub(crate) exe: PathBuf,
}

/// Launches this binary with our environment plus `overrides`, as Woodpecker does, and
/// dispenses the log plugin. `capture_stderr` keeps the addon's log lines for
/// [`LaunchedAddon::stderr_lines`] (they are relayed to our log either way).
pub(crate) async fn launch(
    overrides: &[(String, String)],
    capture_stderr: bool,
) -> Result<LaunchedAddon, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut config = ClientConfig::new(&exe, HANDSHAKE);
    config.env = overrides
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    config.capture_stderr = capture_stderr;
    let plugin = PluginClient::start(config)
        .await
        .map_err(|e| format!("the addon did not start: {e}"))?;
    let dispensed = plugin.dispense(PLUGIN_NAME).await;
    match dispensed {
        Ok(rpc) => Ok(LaunchedAddon {
            plugin,
            log: LogClient::new(rpc),
            exe,
        }),
        Err(e) => {
            let _ = plugin.kill().await;
            Err(format!("dispensing the log plugin: {e}"))
        }
    }
}

impl LaunchedAddon {
    /// Where the addon listens, as its handshake line announced it.
    pub(crate) fn addr(&self) -> String {
        self.plugin.addr().to_string()
    }

    /// The addon's stderr lines so far (hclog JSON), when launched with `capture_stderr`.
    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        self.plugin.stderr_lines()
    }

    /// Stops the addon as the host does (graceful, then SIGKILL after go-plugin's grace).
    pub(crate) async fn stop(self) {
        let _ = self.plugin.kill().await;
    }
}

/// Waits until `key` exists in `store` (the addon archived it) and returns its size.
pub(crate) async fn wait_for_object(
    store: &dyn ObjectStore,
    key: &str,
    within: Duration,
) -> Result<u64, String> {
    let deadline = Instant::now() + within;
    loop {
        match store.head(key).await {
            Ok(Some(info)) => return Ok(info.size),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(None) => return Err(format!("{key} was not archived within {within:?}")),
            Err(e) => return Err(format!("checking {key}: {e}")),
        }
    }
}
