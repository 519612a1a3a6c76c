//! Woodpecker's log addon protocol on top of the go-plugin runtime: the plugin side
//! ([`LogHandler`]) and the host side ([`LogClient`]), both byte-compatible with
//! Woodpecker's `server/services/log/addon`.
//!
//! Each call carries JSON in a gob `[]byte` both ways: the argument is a `Step` (or
//! `{"step":…, "log_entries":[…]}` for LogAppend), the reply is the JSON of the `[]LogEntry`
//! for LogFind and an empty byte slice otherwise.

use std::sync::Arc;

use goplugin::{BoxFuture, CallError, Handler, HandshakeConfig, RpcClient, Value};
use serde::{Deserialize, Serialize};

use crate::{LogEntry, LogError, LogService, Step};

/// Woodpecker's `addon.HandshakeConfig`.
pub const HANDSHAKE: HandshakeConfig = HandshakeConfig {
    protocol_version: 1,
    magic_cookie_key: "WOODPECKER_LOG_ADDON_PLUGIN",
    magic_cookie_value: "woodpecker-plugin-magic-cookie-value",
};

/// The name Woodpecker dispenses (`pluginKey`).
pub const PLUGIN_NAME: &str = "log";

const METHODS: [&str; 4] = ["LogFind", "LogAppend", "LogDelete", "StepFinished"];

/// Woodpecker's `argumentsAppend`.
#[derive(Serialize, Deserialize)]
struct AppendArgs {
    step: Option<Step>,
    #[serde(default)]
    log_entries: Vec<Option<LogEntry>>,
}

/// Serves a [`LogService`] as Woodpecker's `Plugin` net/rpc service.
pub struct LogHandler<S>(Arc<S>);

impl<S: LogService> LogHandler<S> {
    pub fn new(service: Arc<S>) -> Self {
        Self(service)
    }

    async fn dispatch(&self, method: &str, arg: Value) -> Result<Vec<u8>, String> {
        let Value::Bytes(json) = arg else {
            return Err(format!(
                "{method}: the argument must be JSON in a []byte, got {}",
                arg.kind()
            ));
        };
        let service = &self.0;
        match method {
            "LogAppend" => {
                let args: AppendArgs = parse(method, &json)?;
                let step = args
                    .step
                    .ok_or_else(|| format!("{method}: the arguments carry no step"))?;
                // Go decodes `null` array items to nil pointers and the store then skips
                // them; do the same rather than failing the whole batch.
                let entries = args.log_entries.into_iter().flatten().collect();
                service.log_append(&step, entries).await.map_err(text)?;
                Ok(Vec::new())
            }
            "LogFind" => {
                let step: Step = parse(method, &json)?;
                let entries = service.log_find(&step).await.map_err(text)?;
                serde_json::to_vec(&entries)
                    .map_err(|e| format!("LogFind: encoding the reply: {e}"))
            }
            "LogDelete" => {
                let step: Step = parse(method, &json)?;
                service.log_delete(&step).await.map_err(text)?;
                Ok(Vec::new())
            }
            "StepFinished" => {
                let step: Step = parse(method, &json)?;
                service.step_finished(&step).await;
                Ok(Vec::new())
            }
            _ => Err(format!("rpc: can't find method Plugin.{method}")),
        }
    }
}

impl<S: LogService> Handler for LogHandler<S> {
    fn methods(&self) -> &[&str] {
        &METHODS
    }

    fn call<'a>(&'a self, method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move { self.dispatch(method, arg).await.map(Value::Bytes) })
    }
}

fn parse<'a, T: Deserialize<'a>>(method: &str, json: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(json).map_err(|e| format!("{method}: malformed JSON arguments: {e}"))
}

fn text(error: LogError) -> String {
    error.to_string()
}

/// The host side: what Woodpecker's `addon.RPC` does, as a [`LogService`], so tests, `demo`
/// and benchmarks drive the addon exactly as the server does.
#[derive(Clone)]
pub struct LogClient {
    rpc: RpcClient,
}

impl LogClient {
    /// Wraps the net/rpc client of a dispensed `log` plugin.
    pub fn new(rpc: RpcClient) -> Self {
        Self { rpc }
    }

    /// Calls `Plugin.<method>` with raw JSON bytes, as a host would; returns the reply bytes.
    pub async fn call_raw(&self, method: &str, json: Vec<u8>) -> Result<Vec<u8>, CallError> {
        match self
            .rpc
            .call(&format!("Plugin.{method}"), Value::Bytes(json))
            .await?
        {
            Value::Bytes(reply) => Ok(reply),
            other => Ok(format!("{other:?}").into_bytes()),
        }
    }

    async fn call_json(&self, method: &str, arg: &impl Serialize) -> Result<Vec<u8>, LogError> {
        let json = serde_json::to_vec(arg).map_err(|e| LogError::Storage(e.to_string()))?;
        self.call_raw(method, json)
            .await
            .map_err(|e| LogError::Storage(format!("Plugin.{method}: {e}")))
    }
}

impl LogService for LogClient {
    async fn log_find(&self, step: &Step) -> Result<Vec<LogEntry>, LogError> {
        let reply = self.call_json("LogFind", step).await?;
        serde_json::from_slice::<Option<Vec<LogEntry>>>(&reply)
            .map(Option::unwrap_or_default)
            .map_err(|e| LogError::Storage(format!("Plugin.LogFind: malformed reply: {e}")))
    }

    async fn log_append(&self, step: &Step, entries: Vec<LogEntry>) -> Result<(), LogError> {
        let args = AppendArgs {
            step: Some(step.clone()),
            log_entries: entries.into_iter().map(Some).collect(),
        };
        self.call_json("LogAppend", &args).await.map(drop)
    }

    async fn log_delete(&self, step: &Step) -> Result<(), LogError> {
        self.call_json("LogDelete", step).await.map(drop)
    }

    async fn step_finished(&self, step: &Step) {
        if let Err(e) = self.call_json("StepFinished", step).await {
            tracing::error!(error = %e, "StepFinished via addon failed");
        }
    }
}
