//! Which directory the spool takes, and the checks before it creates, changes or removes
//! anything there.
//!
//! The spool clears its `tmp/` at every start and keeps its files private, so it must only
//! ever work in a directory that is its own. The directory the admin names
//! ([`SPOOL_DIR`]) is used as it is when it is missing (then created 0700), an existing
//! spool, or an empty private directory of the addon's user; any other directory (`/tmp`,
//! Woodpecker's data directory, a volume's mount point) gets a subdirectory
//! [`SUBDIR`] of ours instead, so nothing of anyone else is touched. Refused, with an error
//! naming the variable and the fix: a symbolic link (its target would be changed), a
//! directory of another user (it could swap our files for links), and a non-directory. An
//! existing directory is never chmodded: only directories the spool creates get 0700.
//!
//! Checks use `lstat`, so no link is followed; directories are created one level at a time
//! with `mkdir`, which fails rather than follow a link planted under the same name.

use std::fs::{self, DirBuilder, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::settings::SPOOL_DIR;

/// The spool's own subdirectory in a directory it cannot take over.
pub(crate) const SUBDIR: &str = "woodpecker-s3-logs-spool";

/// Why the spool directory cannot be used. Each names [`SPOOL_DIR`] and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpoolDirError {
    /// The directory (or a directory the spool keeps inside it) is a symbolic link.
    #[error(
        "{path} is a symbolic link (to {target}); the spool does not follow links, so that it \
         never changes or clears a directory that is not its own: set {var} to the real \
         directory, or remove the link",
        var = SPOOL_DIR.name,
        target = target.display(),
        path = path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// Something other than a directory is where a directory must be.
    #[error(
        "{path} is not a directory: set {var} to a directory, or remove what is there",
        var = SPOOL_DIR.name,
        path = path.display()
    )]
    NotADirectory {
        /// What is there.
        path: PathBuf,
    },
    /// The directory belongs to another user, who could replace the spool's files.
    #[error(
        "{path} belongs to uid {owner}, but the addon runs as uid {uid}: set {var} to a \
         directory of the addon's user (or root's), or `chown {uid} {path}`",
        var = SPOOL_DIR.name,
        path = path.display()
    )]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The addon's effective uid.
        uid: u32,
    },
    /// The spool's own directory is writable by other users.
    #[error(
        "{path} is writable by other users (mode {mode:o}); the spool keeps its files \
         private: `chmod 700 {path}`, or set {var} to another directory",
        var = SPOOL_DIR.name,
        path = path.display()
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file system refused.
    #[error(
        "cannot {action} {path} ({var}={configured}): {source}",
        var = SPOOL_DIR.name,
        path = path.display(),
        configured = configured.display()
    )]
    Io {
        /// What the spool was doing.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The configured spool directory.
        configured: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// What is at a path, without following a link.
enum Found {
    Nothing,
    Dir(Metadata),
}

/// The checks of one directory the spool uses or may use.
struct Checker<'a> {
    configured: &'a Path,
    uid: u32,
}

impl<'a> Checker<'a> {
    fn new(configured: &'a Path) -> Self {
        Self {
            configured,
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolDirError {
        let (path, configured) = (path.to_owned(), self.configured.to_owned());
        move |source| SpoolDirError::Io {
            action,
            path,
            configured,
            source,
        }
    }

    /// What is at `path`: nothing, or a directory owned by the addon's user (or root).
    fn look(&self, path: &Path) -> Result<Found, SpoolDirError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
            Err(e) => return Err(self.io("inspect", path)(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(SpoolDirError::Symlink {
                path: path.to_owned(),
                target: fs::read_link(path).unwrap_or_default(),
            });
        }
        if !meta.is_dir() {
            return Err(SpoolDirError::NotADirectory {
                path: path.to_owned(),
            });
        }
        if meta.uid() != self.uid && meta.uid() != 0 {
            return Err(SpoolDirError::ForeignOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                uid: self.uid,
            });
        }
        Ok(Found::Dir(meta))
    }

    /// A directory of the spool's own: created 0700 if missing, else checked to be the
    /// addon user's and not writable by others.
    fn own_dir(&self, path: &Path) -> Result<(), SpoolDirError> {
        match self.look(path)? {
            Found::Nothing => create_private(path).map_err(self.io("create", path)),
            Found::Dir(meta) if meta.uid() != self.uid => Err(SpoolDirError::ForeignOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                uid: self.uid,
            }),
            Found::Dir(meta) if meta.mode() & 0o022 != 0 => Err(SpoolDirError::NotPrivate {
                path: path.to_owned(),
                mode: meta.mode() & 0o7777,
            }),
            Found::Dir(_) => Ok(()),
        }
    }
}

/// Creates `path` (its missing parents with default permissions), the last level 0700.
fn create_private(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    DirBuilder::new().mode(0o700).create(path)?;
    // Whatever the umask: the directory is new and ours.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Whether `dir` already holds a spool: its `lock` file, which every version makes first.
fn holds_spool(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(super::LOCK)).is_ok()
}

fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// Chooses the spool's directory for the configured one (see the module's text), creating
/// it when missing; the result is a directory of the addon's user, not writable by others.
pub(crate) fn prepare(configured: &Path) -> Result<PathBuf, SpoolDirError> {
    let checker = Checker::new(configured);
    let root = match checker.look(configured)? {
        Found::Nothing => configured.to_owned(),
        Found::Dir(meta) if meta.uid() == checker.uid && holds_spool(configured) => {
            configured.to_owned()
        }
        Found::Dir(meta)
            if meta.uid() == checker.uid
                && meta.mode() & 0o022 == 0
                && is_empty(configured).map_err(checker.io("read", configured))? =>
        {
            configured.to_owned()
        }
        Found::Dir(_) => configured.join(SUBDIR),
    };
    checker.own_dir(&root)?;
    Ok(root)
}

/// The directory `name` that the spool keeps in its `root` (chosen by [`prepare`] for
/// `configured`): created 0700 when missing, else checked like the root.
pub(crate) fn own_subdir(
    configured: &Path,
    root: &Path,
    name: &str,
) -> Result<PathBuf, SpoolDirError> {
    let path = root.join(name);
    Checker::new(configured).own_dir(&path)?;
    Ok(path)
}

/// Where a spool in the configured directory keeps its files, for readers beside a running
/// engine: the subdirectory when the engine made one, else the directory itself. Creates
/// and checks nothing.
pub(crate) fn locate(configured: &Path) -> PathBuf {
    if !holds_spool(configured) && holds_spool(&configured.join(SUBDIR)) {
        configured.join(SUBDIR)
    } else {
        configured.to_owned()
    }
}
