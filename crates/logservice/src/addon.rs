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
use serde_json::value::RawValue;

use crate::{EntryRecords, LogEntry, LogError, LogService, Step};

/// Woodpecker's `addon.HandshakeConfig`.
pub const HANDSHAKE: HandshakeConfig = HandshakeConfig {
    protocol_version: 1,
    magic_cookie_key: "WOODPECKER_LOG_ADDON_PLUGIN",
    magic_cookie_value: "woodpecker-plugin-magic-cookie-value",
};

/// The name Woodpecker dispenses (`pluginKey`).
pub const PLUGIN_NAME: &str = "log";

/// LogAppend arguments up to this size are parsed where the call runs.
const INLINE_PARSE: usize = 256 << 10;

const METHODS: [&str; 4] = ["LogFind", "LogAppend", "LogDelete", "StepFinished"];

/// Woodpecker's `argumentsAppend`, as the host writes it.
#[derive(Serialize)]
struct AppendArgs {
    step: Option<Step>,
    log_entries: Vec<Option<LogEntry>>,
}

/// [`AppendArgs`] as the plugin reads it: the entries stay JSON text, so a store that keeps
/// text never decodes them (see [`EntryRecords`]).
#[derive(Deserialize)]
struct AppendArgsText<'a> {
    step: Option<Step>,
    #[serde(borrow, default)]
    log_entries: Option<&'a RawValue>,
}

/// Serves a [`LogService`] as Woodpecker's `Plugin` net/rpc service.
pub struct LogHandler<S>(Arc<S>);

impl<S: LogService> LogHandler<S> {
    /// Serves `service`; register it under the plugin name [`PLUGIN_NAME`].
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
                // A large batch is taken apart on a blocking thread, so the stream's reader
                // (often the thread that runs this) goes on reading the next request.
                let (step, records) = if json.len() > INLINE_PARSE {
                    tokio::task::spawn_blocking(move || parse_append(json))
                        .await
                        .map_err(|e| format!("{method}: {e}"))??
                } else {
                    parse_append(json)?
                };
                service
                    .log_append_records(&step, records)
                    .await
                    .map_err(text)?;
                Ok(Vec::new())
            }
            "LogFind" => {
                let step: Step = parse(method, &json)?;
                service.log_find_json(&step).await.map_err(text)
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

/// LogAppend's arguments: the step, and the entries as text (see [`EntryRecords`]).
///
/// Go writes them as `{"step":…,"log_entries":[…]}`; then only the step is decoded, and the
/// entries are taken where they lie in `json`. Any other shape goes through a JSON parser.
fn parse_append(json: Vec<u8>) -> Result<(Step, EntryRecords), String> {
    const METHOD: &str = "LogAppend";
    let json = match split_append(&json) {
        Some((Some(step), entries)) => match EntryRecords::take_canonical_array(json, entries) {
            Ok(records) => return Ok((step, records)),
            Err(json) => json,
        },
        _ => json,
    };
    let args: AppendArgsText = parse(METHOD, &json)?;
    let step = args
        .step
        .ok_or_else(|| format!("{METHOD}: the arguments carry no step"))?;
    let records = match args.log_entries {
        // Go decodes `null` array items to nil pointers and the store then skips them;
        // `EntryRecords` does the same rather than failing the batch.
        Some(entries) => EntryRecords::from_json_array(entries.get().as_bytes())
            .map_err(|e| format!("{METHOD}: malformed JSON arguments: {e}"))?,
        None => EntryRecords::default(),
    };
    Ok((step, records))
}

/// The step and the byte range of the entries array, if `json` has the exact shape Go's
/// `json.Marshal` gives `argumentsAppend`.
fn split_append(json: &[u8]) -> Option<(Option<Step>, std::ops::Range<usize>)> {
    const STEP: &[u8] = b"{\"step\":";
    const ENTRIES: &[u8] = b",\"log_entries\":";
    let rest = json.strip_prefix(STEP)?;
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Option<Step>>();
    let step = values.next()?.ok()?;
    let entries = STEP.len() + values.byte_offset() + ENTRIES.len();
    if !json.get(..entries)?.ends_with(ENTRIES) || json.last() != Some(&b'}') {
        return None;
    }
    Some((step, entries..json.len() - 1))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn handler() -> LogHandler<MemoryStore> {
        LogHandler::new(Arc::new(MemoryStore::default()))
    }

    async fn call(
        h: &LogHandler<MemoryStore>,
        method: &str,
        json: &str,
    ) -> Result<Vec<u8>, String> {
        h.dispatch(method, Value::Bytes(json.as_bytes().to_vec()))
            .await
    }

    /// Go's exact bytes take the in-place path, anything else the parser; both store the same.
    #[tokio::test]
    async fn append_arguments_in_any_valid_shape_store_the_same_entries() {
        let go = r#"{"step":{"id":7,"name":"build"},"log_entries":[{"id":0,"step_id":7,"time":1,"line":1,"data":"Yg==","type":0},{"id":0,"step_id":7,"time":1,"line":0,"data":"YQ==","type":0}]}"#;
        let spaced = r#"{ "log_entries": [ {"line":3,"data":"ZA==","step_id":7}, null ], "step": {"id":7} }"#;
        let h = handler();
        call(&h, "LogAppend", go).await.unwrap();
        call(&h, "LogAppend", spaced).await.unwrap();
        call(&h, "LogAppend", r#"{"step":{"id":7},"log_entries":null}"#)
            .await
            .unwrap();
        let found = call(&h, "LogFind", r#"{"id":7}"#).await.unwrap();
        let entries: Vec<LogEntry> = serde_json::from_slice(&found).unwrap();
        let lines: Vec<(i64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.line, e.data.unwrap()))
            .collect();
        assert_eq!(
            lines,
            [(0, b"a".to_vec()), (1, b"b".to_vec()), (3, b"d".to_vec())]
        );
    }

    #[tokio::test]
    async fn malformed_append_arguments_are_named_errors() {
        let h = handler();
        for (json, expected) in [
            (r#"{"step":null,"log_entries":[]}"#, "carry no step"),
            (
                r#"{"step":{"id":1},"log_entries":[{"data":"%"}]}"#,
                "malformed JSON",
            ),
            (r#"{"step":{"id":1},"log_entries":[}"#, "malformed JSON"),
            (r#"{"step":{"id":"x"},"log_entries":[]}"#, "malformed JSON"),
        ] {
            let err = call(&h, "LogAppend", json).await.unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
