//! A HashiCorp go-plugin runtime for the **net/rpc** protocol, in Rust.
//!
//! A Go program built on go-plugin (the Woodpecker server is one) launches its plugins as
//! child processes and talks to them over yamux-multiplexed net/rpc with the gob codec. This
//! crate is both ends of that door, knowing nothing about what the plugin does:
//!
//! * [`server::serve`] turns a Rust binary into a plugin: magic-cookie check, handshake line,
//!   private Unix socket, yamux server, `Control`/`Dispenser` services, MuxBroker, and a
//!   concurrent net/rpc server dispatching to your [`Handler`]s.
//! * [`client::PluginClient`] launches a plugin the way go-plugin's host does and calls it,
//!   for tests, diagnostics and benchmarks.
//! * [`hclog`] logs as hclog JSON on stderr, the format the host relays into its own log.
//!
//! The protocol facts this relies on, and how they were verified against go-plugin and
//! yamux, are in `PROTOCOL.md` next to this crate's manifest; module docs cite its sections.
//!
//! A plugin binary:
//!
//! ```no_run
//! use std::sync::Arc;
//! use goplugin::{hclog, BoxFuture, Handler, HandshakeConfig, Limits, ServeConfig, Value};
//!
//! struct Log;
//! impl Handler for Log {
//!     fn methods(&self) -> &[&str] {
//!         &["LogFind"]
//!     }
//!     fn call<'a>(&'a self, _method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>> {
//!         Box::pin(async move {
//!             let _json = arg.as_bytes().ok_or("expected []byte")?;
//!             Ok(Value::Bytes(b"[]".to_vec()))
//!         })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let level = hclog::level_from_env(&["MY_LOG_LEVEL"], hclog::LevelFilter::INFO)
//!         .unwrap_or(hclog::LevelFilter::INFO);
//!     let _ = hclog::init(level);
//!     let code = goplugin::serve(ServeConfig {
//!         handshake: HandshakeConfig {
//!             protocol_version: 1,
//!             magic_cookie_key: "MY_PLUGIN",
//!             magic_cookie_value: "my-cookie",
//!         },
//!         plugins: vec![("log".into(), Arc::new(Log) as Arc<dyn Handler>)],
//!         limits: Limits::default(),
//!         socket_fallback_dir: None,
//!     })
//!     .await;
//!     std::process::exit(code);
//! }
//! ```

pub mod broker;
pub mod client;
pub mod handshake;
pub mod hclog;
pub mod listener;
pub mod mux;
pub mod netrpc;
pub mod process;
pub mod server;

pub use client::{ClientConfig, ClientError, Connection, PluginClient};
pub use gob::{Limits, Value};
pub use handshake::HandshakeConfig;
pub use netrpc::{BoxFuture, CallError, Handler, RpcClient};
pub use server::{ServeConfig, serve};
