//! The plugin's listener (PROTOCOL.md §Listener): a Unix socket inside a fresh private directory,
//! or TCP on 127.0.0.1 when no usable socket path exists.

use std::ffi::{CString, OsString};
use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// The private socket directory could not be created in any of the candidates.
    #[error(
        "cannot create the plugin socket directory; tried {}{}. Set PLUGIN_UNIX_SOCKET_DIR or \
         TMPDIR to a writable directory",
        tried.iter().map(|(dir, error)| format!("{dir}: {error}")).collect::<Vec<_>>().join("; "),
        if unset.is_empty() { String::new() } else { format!("; unset: {}", unset.join(", ")) }
    )]
    NoDir {
        /// Each candidate in the order tried, with what the OS said.
        tried: Vec<(SocketDir, io::Error)>,
        /// The fallback variables that were not set (or not absolute paths).
        unset: Vec<&'static str>,
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

/// A directory the socket's private directory may be created in, and where that came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketDir {
    /// The directory.
    pub dir: PathBuf,
    /// The variable it came from (or what else chose it), for log lines and errors.
    pub source: &'static str,
}

impl fmt::Display for SocketDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.dir.display(), self.source)
    }
}

/// What [`SocketDir::source`] says of the directory the program passed in.
const PRIVATE_DIR_SOURCE: &str = "the plugin's private directory";

/// Where to listen, normally read from the environment the host gave us.
#[derive(Clone, Debug, Default)]
pub struct ListenOptions {
    /// Where to create the socket's private directory, tried in order until one works:
    /// go-plugin's choice (`PLUGIN_UNIX_SOCKET_DIR`, else `TMPDIR`, else `/tmp`), then
    /// `XDG_RUNTIME_DIR`, `XDG_CACHE_HOME` and the program's own private directory, so that a
    /// container without a writable `/tmp` still gets a socket.
    pub socket_dirs: Vec<SocketDir>,
    /// Fallback variables that were unset, named in the error when no candidate works.
    pub unset_fallbacks: Vec<&'static str>,
    /// `PLUGIN_UNIX_SOCKET_GROUP`: a group name or numeric gid allowed to connect.
    pub socket_group: Option<String>,
    /// `PLUGIN_MIN_PORT`: the first port the TCP fallback tries.
    pub min_port: u16,
    /// `PLUGIN_MAX_PORT`: the last port the TCP fallback tries.
    pub max_port: u16,
}

impl ListenOptions {
    /// Reads the options from the variables go-plugin's host sets (PROTOCOL.md §Listener);
    /// empty variables count as unset. `private_dir` is the last socket directory candidate,
    /// one the program owns (created 0700 when needed).
    pub fn from_env(private_dir: Option<&Path>) -> Result<Self, ListenError> {
        Self::from_vars(|var| std::env::var_os(var), private_dir)
    }

    /// [`ListenOptions::from_env`] over any variable lookup.
    fn from_vars(
        var: impl Fn(&str) -> Option<OsString>,
        private_dir: Option<&Path>,
    ) -> Result<Self, ListenError> {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());
        let go_plugin_choice = if let Some(d) = non_empty("PLUGIN_UNIX_SOCKET_DIR") {
            (PathBuf::from(d), "PLUGIN_UNIX_SOCKET_DIR")
        } else if let Some(d) = non_empty("TMPDIR") {
            (PathBuf::from(d), "TMPDIR")
        } else {
            (PathBuf::from("/tmp"), "the default /tmp")
        };
        let mut socket_dirs = vec![SocketDir {
            dir: go_plugin_choice.0,
            source: go_plugin_choice.1,
        }];
        let mut unset_fallbacks = Vec::new();
        // The XDG base directory spec says to ignore relative paths in these variables.
        for name in ["XDG_RUNTIME_DIR", "XDG_CACHE_HOME"] {
            match non_empty(name).map(PathBuf::from) {
                Some(dir) if dir.is_absolute() => socket_dirs.push(SocketDir { dir, source: name }),
                _ => unset_fallbacks.push(name),
            }
        }
        if let Some(dir) = private_dir {
            socket_dirs.push(SocketDir {
                dir: dir.to_path_buf(),
                source: PRIVATE_DIR_SOURCE,
            });
        }
        let port = |name: &'static str| -> Result<u16, ListenError> {
            let value = var(name)
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default();
            if value.trim().is_empty() {
                return Ok(0);
            }
            value
                .trim()
                .parse()
                .map_err(|_| ListenError::Port { var: name, value })
        };
        Ok(Self {
            socket_dirs,
            unset_fallbacks,
            socket_group: non_empty("PLUGIN_UNIX_SOCKET_GROUP")
                .map(|g| g.to_string_lossy().into_owned()),
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
        let dir = private_socket_dir(opts)?;
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

/// Where [`PluginListener::bind`] would put the socket's private directory now, found the same
/// way (a private directory is created there and removed again), with the candidates skipped
/// before it and why. For diagnostics such as a `doctor` command.
pub fn probe_socket_dir(opts: &ListenOptions) -> Result<SocketDirProbe, ListenError> {
    let created = create_private_dir(opts)?;
    let _ = std::fs::remove_dir(&created.dir);
    Ok(created.probe)
}

/// The outcome of [`probe_socket_dir`].
#[derive(Debug)]
pub struct SocketDirProbe {
    /// The candidate the private directory goes in.
    pub chosen: SocketDir,
    /// Candidates tried before it, in order, with what the OS said.
    pub skipped: Vec<(SocketDir, io::Error)>,
}

/// A private directory just created, and where.
struct CreatedDir {
    dir: PathBuf,
    probe: SocketDirProbe,
}

/// Creates a fresh 0700 `plugin<random>` directory in the first candidate of
/// [`ListenOptions::socket_dirs`] that allows it (one that is missing or not writable is
/// skipped) and says once when it is not the first.
fn private_socket_dir(opts: &ListenOptions) -> Result<PathBuf, ListenError> {
    let created = create_private_dir(opts)?;
    if let Some((first, error)) = created.probe.skipped.first() {
        tracing::info!(
            "plugin socket directory {first} is not usable ({error}); using {}",
            created.probe.chosen
        );
    }
    Ok(created.dir)
}

fn create_private_dir(opts: &ListenOptions) -> Result<CreatedDir, ListenError> {
    let mut tried: Vec<(SocketDir, io::Error)> = Vec::new();
    for candidate in &opts.socket_dirs {
        let created = if candidate.source == PRIVATE_DIR_SOURCE {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&candidate.dir)
        } else {
            Ok(())
        }
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix("plugin")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(&candidate.dir)
        });
        match created {
            Ok(dir) => {
                return Ok(CreatedDir {
                    dir: dir.keep(),
                    probe: SocketDirProbe {
                        chosen: candidate.clone(),
                        skipped: tried,
                    },
                });
            }
            Err(error) => {
                tracing::debug!(%error, "plugin socket directory {candidate} is not usable");
                tried.push((candidate.clone(), error));
            }
        }
    }
    Err(ListenError::NoDir {
        tried,
        unset: opts.unset_fallbacks.clone(),
    })
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
            socket_dirs: vec![SocketDir {
                dir: dir.to_path_buf(),
                source: "PLUGIN_UNIX_SOCKET_DIR",
            }],
            unset_fallbacks: Vec::new(),
            socket_group: None,
            min_port: 0,
            max_port: 0,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: std::collections::HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn candidates(opts: &ListenOptions) -> Vec<(String, &'static str)> {
        opts.socket_dirs
            .iter()
            .map(|c| (c.dir.display().to_string(), c.source))
            .collect()
    }

    #[test]
    fn socket_dir_candidates_in_fallback_order() {
        let private = Path::new("/var/lib/woodpecker/s3-logs-spool/sockets");
        let all = ListenOptions::from_vars(
            vars(&[
                ("PLUGIN_UNIX_SOCKET_DIR", "/plugin"),
                ("TMPDIR", "/tmpdir"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("XDG_CACHE_HOME", "/var/lib/woodpecker"),
            ]),
            Some(private),
        )
        .unwrap();
        assert_eq!(
            candidates(&all),
            [
                ("/plugin".into(), "PLUGIN_UNIX_SOCKET_DIR"),
                ("/run/user/1000".into(), "XDG_RUNTIME_DIR"),
                ("/var/lib/woodpecker".into(), "XDG_CACHE_HOME"),
                (private.display().to_string(), PRIVATE_DIR_SOURCE),
            ]
        );
        assert!(all.unset_fallbacks.is_empty());

        // go-plugin's own order for the first candidate; empty and relative values are unset.
        let tmpdir = ListenOptions::from_vars(
            vars(&[
                ("PLUGIN_UNIX_SOCKET_DIR", ""),
                ("TMPDIR", "/tmpdir"),
                ("XDG_RUNTIME_DIR", "relative"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(candidates(&tmpdir), [("/tmpdir".into(), "TMPDIR")]);
        assert_eq!(
            tmpdir.unset_fallbacks,
            ["XDG_RUNTIME_DIR", "XDG_CACHE_HOME"]
        );

        let bare = ListenOptions::from_vars(vars(&[]), Some(private)).unwrap();
        assert_eq!(
            candidates(&bare),
            [
                ("/tmp".into(), "the default /tmp"),
                (private.display().to_string(), PRIVATE_DIR_SOURCE),
            ]
        );
    }

    #[tokio::test]
    async fn missing_or_unwritable_candidates_are_skipped_in_order() {
        let base = tempfile::tempdir().unwrap();
        let missing = base.path().join("missing");
        // A file where a directory should be: unusable even for root, which ignores modes.
        let file = base.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let cache = base.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let private = base.path().join("spool/sockets");
        let candidate = |dir: &Path, source| SocketDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut o = opts(&missing);
        o.socket_dirs.extend([
            candidate(&file, "XDG_RUNTIME_DIR"),
            candidate(&cache, "XDG_CACHE_HOME"),
            candidate(&private, PRIVATE_DIR_SOURCE),
        ]);
        // The probe names the same candidate, the skipped ones in order, and leaves nothing.
        let probe = probe_socket_dir(&o).unwrap();
        assert_eq!(probe.chosen, candidate(&cache, "XDG_CACHE_HOME"));
        let skipped: Vec<&str> = probe.skipped.iter().map(|(c, _)| c.source).collect();
        assert_eq!(skipped, ["PLUGIN_UNIX_SOCKET_DIR", "XDG_RUNTIME_DIR"]);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
        let l = PluginListener::bind(&o).unwrap();
        let PluginAddr::Unix(path) = l.addr().clone() else {
            panic!("expected a unix socket, got {}", l.addr())
        };
        assert!(path.starts_with(&cache), "{}", path.display());
        l.cleanup();

        // Without a usable XDG_CACHE_HOME, the program's private directory is made (0700).
        o.socket_dirs[2] = candidate(&base.path().join("no-cache"), "XDG_CACHE_HOME");
        let l = PluginListener::bind(&o).unwrap();
        let PluginAddr::Unix(path) = l.addr().clone() else {
            panic!("expected a unix socket, got {}", l.addr())
        };
        assert!(path.starts_with(&private), "{}", path.display());
        assert!(is_private_dir(&private) && is_private_dir(path.parent().unwrap()));
        let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
        l.cleanup();
        assert!(!path.exists());
    }

    #[test]
    fn error_names_every_candidate_and_unset_variable() {
        let base = tempfile::tempdir().unwrap();
        let mut o = ListenOptions::from_vars(
            vars(&[("TMPDIR", base.path().join("gone").to_str().unwrap())]),
            Some(&base.path().join("file/sockets")),
        )
        .unwrap();
        std::fs::write(base.path().join("file"), b"").unwrap();
        let err = PluginListener::bind(&o).err().unwrap().to_string();
        assert!(
            err.starts_with("cannot create the plugin socket directory; tried "),
            "{err}"
        );
        assert!(err.contains("gone (TMPDIR): "), "{err}");
        assert!(
            err.contains(&format!("sockets ({PRIVATE_DIR_SOURCE}): ")),
            "{err}"
        );
        assert!(
            err.contains("; unset: XDG_RUNTIME_DIR, XDG_CACHE_HOME."),
            "{err}"
        );
        assert!(err.ends_with("Set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a writable directory"));
        o.unset_fallbacks.clear();
        let err = PluginListener::bind(&o).err().unwrap().to_string();
        assert!(!err.contains("unset"), "{err}");
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
