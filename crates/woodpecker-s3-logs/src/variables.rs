//! The binary's own variables; the archive and engine crates declare theirs.
//!
//! Kept apart from `config.rs` so the README check (`tests/readme.rs`) can include the
//! declarations without the rest of the binary.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use goplugin::hclog::{self, LevelFilter};
use settings::DefaultValue::Described;
use settings::DefaultValue::Literal;
use settings::{Setting, SettingError, parse_absolute_path, parse_bool};

/// Where archives go when no bucket is configured.
pub(crate) const ARCHIVE_DIR: Setting<PathBuf> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
    default: Described("next to the spool"),
    doc: "archive directory when no bucket is set",
    parse: parse_absolute_path,
};

/// Where running steps' lines are staged until archived.
pub(crate) const STAGING: Setting<Staging> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_STAGING",
    default: Literal("spool"),
    doc: "`spool`: a local directory that survives restarts (`SPOOL_DIR`); `database`: Woodpecker's own `log_entries` table (needs `WOODPECKER_DATABASE_*`; no local state, for servers with no persistent volume)",
    parse: parse_staging,
};

/// Where running steps' lines are staged ([`STAGING`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Staging {
    /// The local spool directory.
    #[default]
    Spool,
    /// Woodpecker's `log_entries` table.
    Database,
}

fn parse_staging(variable: &str, value: &str) -> Result<Staging, SettingError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "spool" => Ok(Staging::Spool),
        "database" => Ok(Staging::Database),
        _ => Err(SettingError::new(
            variable,
            value,
            "not a staging mode (use spool or database)",
        )),
    }
}

/// Take over a bucket prefix whose instance marker names another Woodpecker.
pub(crate) const ADOPT_PREFIX: Setting<bool> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ADOPT_PREFIX",
    default: Literal("false"),
    doc: "`true`: take over an archive prefix whose instance marker names another Woodpecker (after restoring or moving the server's database); the addon otherwise refuses to start there",
    parse: parse_bool,
};

/// The addon's own log level. The addon reads it with [`hclog::level_from_env`] before
/// logging starts (hclog's error text, and [`LOG_LEVEL_VARS`]' fallback); this parser is the
/// same level parser, so the declaration documents what is accepted.
pub(crate) const LOG_LEVEL: Setting<LevelFilter> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_LOG_LEVEL",
    default: Described("`WOODPECKER_LOG_LEVEL`, else `info`"),
    doc: "the addon's own log level (`trace` … `error`, `disabled`)",
    parse: parse_log_level,
};

/// Where Prometheus scrapes the addon's metrics; unset, no port is opened.
pub(crate) const METRICS_ADDR: Setting<ListenAddr> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_METRICS_ADDR",
    default: Described("unset: no metrics, no listener"),
    doc: "serve Prometheus metrics at `http://ADDR/metrics`: `127.0.0.1:9464`, `[::1]:9464`, or `:9464` for all interfaces (as in Go); an address that cannot be bound stops the start, like any bad setting",
    parse: parse_listen_addr,
};

/// The addon's own log level, falling back to the server's.
pub(crate) const LOG_LEVEL_VARS: [&str; 2] = [LOG_LEVEL.name, "WOODPECKER_LOG_LEVEL"];

fn parse_log_level(variable: &str, value: &str) -> Result<LevelFilter, SettingError> {
    hclog::level_from_str(value).ok_or_else(|| {
        SettingError::new(
            variable,
            value,
            "not a log level (use trace, debug, info, warn, error, fatal, panic or disabled)",
        )
    })
}

/// Where to listen, as [`METRICS_ADDR`] writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    /// One address: `127.0.0.1:9464`, `[::1]:9464`, `localhost:9464` (IPv4 loopback).
    Socket(SocketAddr),
    /// Every interface, IPv6 and IPv4 (`:9464`, Go's notation).
    AllInterfaces(u16),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Socket(addr) => addr.fmt(f),
            ListenAddr::AllInterfaces(port) => write!(f, ":{port}"),
        }
    }
}

/// `HOST:PORT` with an IP address (or `localhost`), or `:PORT` for every interface. Host
/// names other than `localhost` are refused rather than resolved: a listener belongs on an
/// address of this machine, and the static binary has no resolver configuration to trust.
fn parse_listen_addr(variable: &str, value: &str) -> Result<ListenAddr, SettingError> {
    let text = value.trim();
    let error = |reason: &str| SettingError::new(variable, value, reason);
    let usage = "expected IP:PORT such as 127.0.0.1:9464 or [::1]:9464, or :PORT such as :9464 for all interfaces";
    let addr = if let Some(port) = text.strip_prefix(':') {
        ListenAddr::AllInterfaces(port.parse().map_err(|_| error(usage))?)
    } else if let Some(port) = text.strip_prefix("localhost:") {
        let port = port.parse().map_err(|_| error(usage))?;
        ListenAddr::Socket(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    } else {
        ListenAddr::Socket(text.parse().map_err(|_| error(usage))?)
    };
    let port = match addr {
        ListenAddr::Socket(addr) => addr.port(),
        ListenAddr::AllInterfaces(port) => port,
    };
    if port == 0 {
        return Err(error(
            "port 0 would listen on a random port that Prometheus cannot know; name a port such as 9464",
        ));
    }
    Ok(addr)
}
