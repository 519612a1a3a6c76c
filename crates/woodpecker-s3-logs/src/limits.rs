//! Process limits the addon raises for itself at start.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit of open files to the hard limit. Many containers and shells start
/// processes at a soft limit of 1024 (or less) under a hard limit hundreds of times larger;
/// the addon holds a descriptor per cached spool file and per sort run being merged, so a
/// busy server with large steps could run out and fail appends. Returns the limits before,
/// `None` when there was nothing to raise.
pub(crate) fn raise_open_files() -> Result<Option<Rlimit>, rustix::io::Errno> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(None);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(Some(limit))
}
