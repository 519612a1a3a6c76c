//! The plugin's listener (PROTOCOL.md §Listener): a Unix socket inside a fresh private directory,
//! or TCP on 127.0.0.1 when no usable socket path exists.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::handshake::PluginAddr;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Any byte stream the yamux session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Why the listener could not be set up. Each variant names the variable at fault so the one
/// line in the Woodpecker log says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The private socket directory could not be created.
    #[error("cannot create the plugin socket directory in {dir} (from {source_var}): {error}")]
    Dir {
        /// Where it was to be created.
        dir: PathBuf,
        /// The variable `dir` came from.
        source_var: &'static str,
        /// What the OS said.
        error: io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot bind the plugin socket {path}: {error}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The socket could not be given to `PLUGIN_UNIX_SOCKET_GROUP`.
    #[error("PLUGIN_UNIX_SOCKET_GROUP={group:?}: {error}")]
    Group {
        /// The group as given.
        group: String,
        /// Why resolving it or granting it access failed.
        error: io::Error,
    },
    /// `PLUGIN_MIN_PORT` or `PLUGIN_MAX_PORT` is not a port number.
    #[error("{var}={value:?} is not a port number")]
    Port {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `PLUGIN_MIN_PORT` is above `PLUGIN_MAX_PORT`.
    #[error("PLUGIN_MIN_PORT value of {min} is greater than PLUGIN_MAX_PORT value of {max}")]
    PortRange {
        /// `PLUGIN_MIN_PORT`.
        min: u16,
        /// `PLUGIN_MAX_PORT`.
        max: u16,
    },
    /// Every port of the range is taken.
    #[error("couldn't bind a plugin TCP listener on 127.0.0.1 in ports {min}..={max}")]
    NoPort {
        /// First port tried.
        min: u16,
        /// Last port tried.
        max: u16,
    },
}

/// Where to listen, normally read from the environment the host gave us.
#[derive(Clone, Debug, Default)]
pub struct ListenOptions {
    /// `PLUGIN_UNIX_SOCKET_DIR`, else `TMPDIR`, else `/tmp`.
    pub socket_dir: PathBuf,
    /// Which variable `socket_dir` came from, for error messages.
    pub socket_dir_var: &'static str,
    /// `PLUGIN_UNIX_SOCKET_GROUP`: a group name or numeric gid allowed to connect.
    pub socket_group: Option<String>,
    /// `PLUGIN_MIN_PORT`: the first port the TCP fallback tries.
    pub min_port: u16,
    /// `PLUGIN_MAX_PORT`: the last port the TCP fallback tries.
    pub max_port: u16,
}

impl ListenOptions {
    /// Reads the options from the variables go-plugin's host sets (PROTOCOL.md §Listener);
    /// empty variables count as unset.
    pub fn from_env() -> Result<Self, ListenError> {
        let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        let (socket_dir, socket_dir_var) = if let Some(d) = non_empty("PLUGIN_UNIX_SOCKET_DIR") {
            (PathBuf::from(d), "PLUGIN_UNIX_SOCKET_DIR")
        } else if let Some(d) = non_empty("TMPDIR") {
            (PathBuf::from(d), "TMPDIR")
        } else {
            (PathBuf::from("/tmp"), "the default /tmp")
        };
        let port = |var: &'static str| -> Result<u16, ListenError> {
            let value = std::env::var(var).unwrap_or_default();
            if value.trim().is_empty() {
                return Ok(0);
            }
            value
                .trim()
                .parse()
                .map_err(|_| ListenError::Port { var, value })
        };
        Ok(Self {
            socket_dir,
            socket_dir_var,
            socket_group: std::env::var("PLUGIN_UNIX_SOCKET_GROUP")
                .ok()
                .filter(|g| !g.is_empty()),
            min_port: port("PLUGIN_MIN_PORT")?,
            max_port: port("PLUGIN_MAX_PORT")?,
        })
    }
}

enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A bound listener. The socket file and its private directory are removed by
/// [`PluginListener::cleanup`], which the server calls on every exit path it controls.
pub struct PluginListener {
    inner: Inner,
    addr: PluginAddr,
    dir: Option<PathBuf>,
}

impl PluginListener {
    /// Binds as go-plugin's `serverListener` does on Unix, with one difference: the socket
    /// lives in its own 0700 directory, so no other user can connect or swap the path between
    /// bind and the host's dial.
    pub fn bind(opts: &ListenOptions) -> Result<Self, ListenError> {
        let dir = tempfile::Builder::new()
            .prefix("plugin")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&opts.socket_dir)
            .map_err(|error| ListenError::Dir {
                dir: opts.socket_dir.clone(),
                source_var: opts.socket_dir_var,
                error,
            })?
            .keep();
        let path = dir.join("plugin.sock");
        let raw = path.as_os_str().as_encoded_bytes();
        if raw.len() > MAX_SOCKET_PATH || raw.contains(&b'|') {
            let _ = std::fs::remove_dir(&dir);
            tracing::debug!(path = %path.display(), "socket path unusable, falling back to TCP");
            return Self::bind_tcp(opts.min_port, opts.max_port);
        }
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(error) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(ListenError::Bind { path, error });
            }
        };
        let this = Self {
            inner: Inner::Unix(listener),
            addr: PluginAddr::Unix(path.clone()),
            dir: Some(dir.clone()),
        };
        if let Some(group) = &opts.socket_group {
            let grant = |group: &str| -> io::Result<()> {
                let gid = resolve_group(group)?;
                std::os::unix::fs::chown(&path, None, Some(gid))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
                // The group needs search permission on the private directory to reach the
                // socket, and nothing more.
                std::os::unix::fs::chown(&dir, None, Some(gid))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))
            };
            if let Err(error) = grant(group) {
                this.cleanup();
                return Err(ListenError::Group {
                    group: group.clone(),
                    error,
                });
            }
        }
        Ok(this)
    }

    /// go-plugin's TCP listener: the first free port of `min..=max` on 127.0.0.1.
    fn bind_tcp(min: u16, max: u16) -> Result<Self, ListenError> {
        if min > max {
            return Err(ListenError::PortRange { min, max });
        }
        for port in min..=max {
            let Ok(std_listener) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
                continue;
            };
            let bound = std_listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(std_listener));
            if let Ok(listener) = bound
                && let Ok(addr) = listener.local_addr()
            {
                return Ok(Self {
                    inner: Inner::Tcp(listener),
                    addr: PluginAddr::Tcp(addr),
                    dir: None,
                });
            }
        }
        Err(ListenError::NoPort { min, max })
    }

    /// What the handshake line announces.
    pub fn addr(&self) -> &PluginAddr {
        &self.addr
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<Box<dyn Io>> {
        match &self.inner {
            Inner::Unix(l) => Ok(Box::new(l.accept().await?.0)),
            Inner::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Box::new(s))
            }
        }
    }

    /// Removes the socket file and its directory. Idempotent; errors are ignored because this
    /// runs on the way out, when nobody can act on them.
    pub fn cleanup(&self) {
        if let (PluginAddr::Unix(path), Some(dir)) = (&self.addr, &self.dir) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A group given by name or numeric gid, as go-plugin accepts both.
fn resolve_group(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| io::Error::other("group name contains NUL"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: `grp` and `result` are plain out-parameters; `buf` outlives the call and its
    // length is passed alongside it.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such group"));
        }
        Ok(grp.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// True when `path` is a directory only its owner can enter.
    fn is_private_dir(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o077 == 0)
    }

    fn opts(dir: &Path) -> ListenOptions {
        ListenOptions {
            socket_dir: dir.to_path_buf(),
            socket_dir_var: "PLUGIN_UNIX_SOCKET_DIR",
            socket_group: None,
            min_port: 0,
            max_port: 0,
        }
    }

    #[tokio::test]
    async fn unix_socket_in_private_dir_and_cleanup() {
        let base = tempfile::tempdir().unwrap();
        let l = PluginListener::bind(&opts(base.path())).unwrap();
        let PluginAddr::Unix(path) = l.addr().clone() else {
            panic!("expected a unix socket, got {}", l.addr())
        };
        let dir = path.parent().unwrap().to_path_buf();
        assert!(dir.starts_with(base.path()));
        assert!(is_private_dir(&dir));
        assert!(path.exists());
        let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
        let _s = l.accept().await.unwrap();
        l.cleanup();
        assert!(!path.exists() && !dir.exists());
    }

    #[tokio::test]
    async fn long_or_pipe_paths_fall_back_to_tcp() {
        let base = tempfile::tempdir().unwrap();
        let long = base.path().join("d".repeat(100));
        std::fs::create_dir(&long).unwrap();
        let l = PluginListener::bind(&opts(&long)).unwrap();
        assert!(matches!(l.addr(), PluginAddr::Tcp(a) if a.ip().is_loopback()));
        // The abandoned socket directory was removed again.
        assert_eq!(std::fs::read_dir(&long).unwrap().count(), 0);

        let piped = base.path().join("a|b");
        std::fs::create_dir(&piped).unwrap();
        let l = PluginListener::bind(&opts(&piped)).unwrap();
        assert!(matches!(l.addr(), PluginAddr::Tcp(_)));
    }

    #[tokio::test]
    async fn tcp_range_is_honoured() {
        assert!(matches!(
            PluginListener::bind_tcp(20, 10),
            Err(ListenError::PortRange { min: 20, max: 10 })
        ));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        assert!(matches!(
            PluginListener::bind_tcp(port, port),
            Err(ListenError::NoPort { .. })
        ));
    }

    #[tokio::test]
    async fn socket_group_by_gid() {
        let base = tempfile::tempdir().unwrap();
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let mut o = opts(base.path());
        o.socket_group = Some(gid.to_string());
        let l = PluginListener::bind(&o).unwrap();
        let PluginAddr::Unix(path) = l.addr().clone() else {
            panic!()
        };
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        o.socket_group = Some("no-such-group-xyz".into());
        let err = PluginListener::bind(&o).err().unwrap();
        assert!(err.to_string().contains("PLUGIN_UNIX_SOCKET_GROUP"));
        l.cleanup();
    }
}
