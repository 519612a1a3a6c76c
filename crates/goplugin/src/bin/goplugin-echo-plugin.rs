//! A tiny plugin for the runtime's own tests: it serves the plugin `echo` with methods that
//! exercise every path of the server (echo, errors, panics, large and slow replies, logging).
//!
//! Launched through [`goplugin::PluginClient`] with [`HANDSHAKE`]'s cookie. Environment:
//! `GOPLUGIN_ECHO_MAX_MESSAGE` caps the gob message size it accepts (to test the limit).

use std::sync::Arc;
use std::time::Duration;

use goplugin::hclog;
use goplugin::{BoxFuture, Handler, HandshakeConfig, Limits, ServeConfig, Value};
use tracing::level_filters::LevelFilter;

const HANDSHAKE: HandshakeConfig = HandshakeConfig {
    protocol_version: 1,
    magic_cookie_key: "GOPLUGIN_ECHO_PLUGIN",
    magic_cookie_value: "echo-plugin-cookie",
};

struct Echo;

impl Handler for Echo {
    fn methods(&self) -> &[&str] {
        &[
            "Echo",
            "Fail",
            "Big",
            "Sleep",
            "Panic",
            "Log",
            "Unencodable",
        ]
    }

    fn call<'a>(&'a self, method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            match method {
                // The argument back, whatever its type.
                "Echo" => Ok(arg),
                // An error whose text is the (string or bytes) argument.
                "Fail" => Err(text(&arg)),
                // `Uint(n)`: n bytes of a known pattern.
                "Big" => {
                    let n = arg.as_u64().ok_or("Big wants a uint")? as usize;
                    Ok(Value::Bytes((0..n).map(|i| (i % 251) as u8).collect()))
                }
                // `Uint(ms)`: answers after that long, so replies complete out of order.
                "Sleep" => {
                    let ms = arg.as_u64().ok_or("Sleep wants a uint")?;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Value::Bytes(ms.to_string().into_bytes()))
                }
                "Panic" => panic!("asked to panic: {}", text(&arg)),
                "Log" => {
                    tracing::info!(detail = %text(&arg), "asked to log");
                    Ok(Value::Bytes(Vec::new()))
                }
                "Unencodable" => Ok(Value::Map(vec![(Value::Int(1), Value::Int(2))])),
                _ => unreachable!("the server only calls listed methods"),
            }
        })
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

fn main() {
    let level = hclog::level_from_env(&["GOPLUGIN_ECHO_LOG_LEVEL"], LevelFilter::TRACE)
        .unwrap_or_else(|e| {
            goplugin::process::write_stderr(format!("{e}\n").as_bytes());
            std::process::exit(1)
        });
    let _ = hclog::init(level);
    let mut limits = Limits::default();
    if let Some(max) = std::env::var("GOPLUGIN_ECHO_MAX_MESSAGE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.max_message_len = max;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = runtime.block_on(async {
        goplugin::serve(ServeConfig {
            handshake: HANDSHAKE,
            plugins: vec![("echo".to_string(), Arc::new(Echo) as Arc<dyn Handler>)],
            limits,
            socket_fallback_dir: None,
        })
        .await
    });
    std::process::exit(code);
}
