//! The go-plugin handshake: the magic cookie, protocol-version negotiation and the one line a
//! plugin prints on stdout to tell the host where to dial (PROTOCOL.md §Handshake).
//!
//! Both sides live here so that the line the server prints and the line the client parses can
//! never drift apart.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// go-plugin's core protocol version, field 1 of the handshake line. Always 1.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// The exact text go-plugin's `Serve` prints on stderr when the magic cookie is missing. Users
/// who run the binary by hand see it, so it matches what every Go plugin says.
pub const COOKIE_MISMATCH_MESSAGE: &str = "This binary is a plugin. These are not meant to be executed directly. Please execute the program that consumes these plugins, which will load any plugins automatically";

/// What host and plugin must agree on before anything else (go-plugin's `HandshakeConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// The application protocol version (field 2 of the handshake line).
    pub protocol_version: u32,
    /// The environment variable the host sets so the plugin knows it was launched by a host.
    pub magic_cookie_key: &'static str,
    /// The value that variable must hold, compared byte for byte.
    pub magic_cookie_value: &'static str,
}

impl HandshakeConfig {
    /// Whether the process environment carries the cookie. A missing variable reads as empty,
    /// exactly as Go's `os.Getenv` does, so an empty expected value would match it.
    pub fn cookie_present(&self) -> bool {
        let actual = std::env::var_os(self.magic_cookie_key).unwrap_or_default();
        actual == self.magic_cookie_value
    }
}

/// Parses `PLUGIN_PROTOCOL_VERSIONS` (comma-separated integers) the way go-plugin does: bad
/// entries are skipped and returned separately so the caller can report them, never fatal.
pub fn parse_protocol_versions(raw: &str) -> (Vec<u32>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for part in raw.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.parse::<u32>() {
            Ok(v) => good.push(v),
            Err(_) => bad.push(part.to_string()),
        }
    }
    (good, bad)
}

/// Where the plugin listens: what the handshake line announces and the host dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginAddr {
    /// A Unix socket path (network `unix`).
    Unix(PathBuf),
    /// A TCP address on the loopback (network `tcp`).
    Tcp(SocketAddr),
}

impl PluginAddr {
    fn network(&self) -> &'static str {
        match self {
            PluginAddr::Unix(_) => "unix",
            PluginAddr::Tcp(_) => "tcp",
        }
    }
}

impl fmt::Display for PluginAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginAddr::Unix(p) => write!(f, "{}", p.display()),
            PluginAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// The handshake line, `CORE|APP|NETWORK|ADDRESS|PROTOCOL|SERVERCERT`, with the trailing
/// newline. Field 6 stays empty: a value over 50 characters makes Woodpecker's client
/// dereference a nil TLS config and crash the server (PROTOCOL.md §Handshake).
pub fn handshake_line(app_version: u32, addr: &PluginAddr) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{app_version}|{}|{addr}|netrpc|\n",
        addr.network()
    )
}

/// Why a handshake line was refused, worded like go-plugin's own client errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// Fewer than four `|`-separated fields.
    #[error("Unrecognized remote plugin message: {0:?}")]
    Unrecognized(String),
    /// Field 1 is not a number.
    #[error("error parsing core protocol version {0:?}")]
    CoreVersionSyntax(String),
    /// Field 1 is not [`CORE_PROTOCOL_VERSION`].
    #[error(
        "incompatible core API version with plugin: plugin {0}, client {CORE_PROTOCOL_VERSION}"
    )]
    CoreVersion(u32),
    /// Field 2 is not a number.
    #[error("Error parsing protocol version {0:?}")]
    AppVersionSyntax(String),
    /// Field 2 is not the application version the client speaks.
    #[error(
        "incompatible API version with plugin. Plugin version: {plugin}, Client versions: [{client}]"
    )]
    AppVersion {
        /// The version the plugin announced.
        plugin: u32,
        /// The version the client speaks.
        client: u32,
    },
    /// Fields 3 and 4 are not a `unix` path or a `tcp` address.
    #[error("unknown address type: {network}|{address}")]
    Address {
        /// Field 3.
        network: String,
        /// Field 4.
        address: String,
    },
    /// Field 5 names a protocol other than `netrpc`.
    #[error("unsupported plugin protocol {0:?}. Supported: [netrpc]")]
    Protocol(String),
    /// Field 6 carries a certificate (PROTOCOL.md §Handshake).
    #[error("the plugin announced a TLS server certificate, but this client does not do AutoMTLS")]
    Tls,
}

/// Parses a handshake line as go-plugin's `Client.Start` does (trim, split on every `|`, at
/// least 4 parts), for a client that only speaks net/rpc without TLS.
pub fn parse_handshake_line(line: &str, app_version: u32) -> Result<PluginAddr, HandshakeError> {
    let line = line.trim();
    let parts: Vec<&str> = line.split('|').collect();
    if parts.len() < 4 {
        return Err(HandshakeError::Unrecognized(line.to_string()));
    }
    let core: u32 = parts[0]
        .parse()
        .map_err(|_| HandshakeError::CoreVersionSyntax(parts[0].to_string()))?;
    if core != CORE_PROTOCOL_VERSION {
        return Err(HandshakeError::CoreVersion(core));
    }
    let app: u32 = parts[1]
        .parse()
        .map_err(|_| HandshakeError::AppVersionSyntax(parts[1].to_string()))?;
    if app != app_version {
        return Err(HandshakeError::AppVersion {
            plugin: app,
            client: app_version,
        });
    }
    let address_error = || HandshakeError::Address {
        network: parts[2].to_string(),
        address: parts[3].to_string(),
    };
    let addr = match parts[2] {
        "unix" if !parts[3].is_empty() => PluginAddr::Unix(PathBuf::from(parts[3])),
        "tcp" => PluginAddr::Tcp(parts[3].parse().map_err(|_| address_error())?),
        _ => return Err(address_error()),
    };
    let protocol = parts.get(4).copied().unwrap_or("");
    if !protocol.is_empty() && protocol != "netrpc" {
        return Err(HandshakeError::Protocol(protocol.to_string()));
    }
    if parts.get(5).is_some_and(|cert| cert.len() > 50) {
        return Err(HandshakeError::Tls);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips_and_keeps_field_six_empty() {
        let addr = PluginAddr::Unix(PathBuf::from("/tmp/plugin-x/plugin.sock"));
        let line = handshake_line(1, &addr);
        assert_eq!(line, "1|1|unix|/tmp/plugin-x/plugin.sock|netrpc|\n");
        assert_eq!(parse_handshake_line(&line, 1), Ok(addr));
        let tcp = PluginAddr::Tcp("127.0.0.1:10000".parse().unwrap());
        assert_eq!(handshake_line(1, &tcp), "1|1|tcp|127.0.0.1:10000|netrpc|\n");
    }

    #[test]
    fn client_rejects_what_go_plugin_rejects() {
        assert!(matches!(
            parse_handshake_line("hello", 1),
            Err(HandshakeError::Unrecognized(_))
        ));
        assert_eq!(
            parse_handshake_line("2|1|unix|/x", 1),
            Err(HandshakeError::CoreVersion(2))
        );
        assert!(matches!(
            parse_handshake_line("1|2|unix|/x", 1),
            Err(HandshakeError::AppVersion { .. })
        ));
        assert!(matches!(
            parse_handshake_line("1|1|udp|/x", 1),
            Err(HandshakeError::Address { .. })
        ));
        assert_eq!(
            parse_handshake_line("1|1|unix|/x|grpc|", 1),
            Err(HandshakeError::Protocol("grpc".into()))
        );
        let cert = "A".repeat(51);
        assert_eq!(
            parse_handshake_line(&format!("1|1|unix|/x|netrpc|{cert}"), 1),
            Err(HandshakeError::Tls)
        );
        // The minimal 4-field form is valid, protocol defaults to netrpc.
        assert_eq!(
            parse_handshake_line(" 1|1|unix|/x \n", 1),
            Ok(PluginAddr::Unix("/x".into()))
        );
    }

    #[test]
    fn protocol_versions_skip_bad_entries() {
        let (good, bad) = parse_protocol_versions("1, 2,x,,3");
        assert_eq!(good, vec![1, 2, 3]);
        assert_eq!(bad, vec!["x".to_string()]);
    }
}
