//! The local directories: spool, plugin socket, and the archive directory of the embedded
//! default. Each must take a new file; free space is shown.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use engine::SPOOL_DIR;
use goplugin::listener::{ListenOptions, probe_socket_dir};

use super::report::{CheckId, Report};
use crate::progress::human_bytes;
use crate::serve::SOCKET_FALLBACK_SUBDIR;
use crate::variables::ARCHIVE_DIR;

/// Less free space than this is worth a warning: a busy server spools tens of MiB per running
/// step, and a full disk makes appends fail.
const LOW_SPACE: u64 = 1 << 30;

/// The spool directory: created as the addon would, a file written and removed in it.
pub(super) fn spool_dir(report: &mut Report, spool: &Path) {
    match writable(spool, true) {
        Ok(free) => space(report, CheckId::SpoolDir, spool, free, SPOOL_DIR.name),
        Err(e) => report.fail(
            CheckId::SpoolDir,
            format!("{}: {e}", spool.display()),
            format!(
                "make {} writable for this user (uid {}), or set {} to a writable directory on a persistent volume",
                spool.display(),
                rustix::process::getuid().as_raw(),
                SPOOL_DIR.name
            ),
        ),
    }
}

/// The plugin socket's fallback directory with spool staging.
pub(super) fn spool_socket_fallback(spool: &Path) -> PathBuf {
    spool.join(SOCKET_FALLBACK_SUBDIR)
}

/// The plugin socket's directory, chosen exactly as the addon chooses it (`fallback` when
/// neither the temporary nor an XDG directory is writable).
pub(super) fn socket_dir(report: &mut Report, fallback: &Path) {
    let fallback = fallback.to_owned();
    let probe = ListenOptions::from_env(Some(&fallback)).and_then(|o| probe_socket_dir(&o));
    match probe {
        Ok(probe) => {
            let mut detail = format!("{}", probe.chosen);
            for (skipped, error) in &probe.skipped {
                detail.push_str(&format!("\nskipped {skipped}: {error}"));
            }
            match free_space(&probe.chosen.dir) {
                Ok(free) => {
                    report.pass(
                        CheckId::SocketDir,
                        format!("{detail}\nwritable, {} free", human_bytes(free)),
                    );
                }
                Err(e) => report.pass(
                    CheckId::SocketDir,
                    format!("{detail}\nwritable (free space unknown: {e})"),
                ),
            }
        }
        Err(e) => report.fail(
            CheckId::SocketDir,
            e.to_string(),
            "set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a writable directory (Woodpecker's server passes its own environment to the addon)",
        ),
    }
}

/// The private directory database staging builds archives in, chosen and created as the
/// addon does (the temporary directory, else `XDG_CACHE_HOME`, else Woodpecker's data
/// directory); returned so the socket check can use it as the addon does, removed on drop.
pub(super) fn scratch_dir(report: &mut Report) -> Option<tempfile::TempDir> {
    let dir = match crate::staging::scratch_dir() {
        Ok(dir) => dir,
        Err(e) => {
            report.fail(
                CheckId::ScratchDir,
                e,
                format!(
                    "set TMPDIR (or XDG_CACHE_HOME) to a writable directory, or make {} writable for this user (uid {}): each archive build writes its object there before the upload",
                    engine::WOODPECKER_DATA,
                    rustix::process::getuid().as_raw()
                ),
            );
            return None;
        }
    };
    // Shown as the base the addon picks: the directory itself is new at every start.
    let base = dir.path().parent().unwrap_or(dir.path());
    match writable(dir.path(), false) {
        Ok(free) => space(report, CheckId::ScratchDir, base, free, "TMPDIR"),
        Err(e) => report.fail(
            CheckId::ScratchDir,
            format!("{}: {e}", dir.path().display()),
            "set TMPDIR (or XDG_CACHE_HOME) to a writable directory with room for the largest step's compressed log",
        ),
    }
    Some(dir)
}

/// The local archive directory of the embedded default.
pub(super) fn archive_dir(report: &mut Report, dir: &Path) {
    match writable(dir, true) {
        Ok(free) => space(report, CheckId::ArchiveDir, dir, free, ARCHIVE_DIR.name),
        Err(e) => report.fail(
            CheckId::ArchiveDir,
            format!("{}: {e}", dir.display()),
            format!(
                "make {} writable, or set {} (or a bucket with {})",
                dir.display(),
                ARCHIVE_DIR.name,
                archive::variables::BUCKET.name
            ),
        ),
    }
}

fn space(report: &mut Report, id: CheckId, dir: &Path, free: u64, variable: &str) {
    let detail = format!("{}: writable, {} free", dir.display(), human_bytes(free));
    if free < LOW_SPACE {
        report.warn(
            id,
            detail,
            format!(
                "free some space, or point {variable} at a larger volume (less than {} left)",
                human_bytes(LOW_SPACE)
            ),
        );
    } else {
        report.pass(id, detail);
    }
}

/// Creates `dir` (0700, as the addon does) when asked, writes and removes a probe file, and
/// returns the free space there.
fn writable(dir: &Path, create: bool) -> Result<u64, String> {
    if create {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create: {e}"))?;
    }
    let probe: PathBuf = dir.join(format!(".doctor-probe-{}", std::process::id()));
    std::fs::write(&probe, b"doctor\n").map_err(|e| format!("cannot write a file: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))?;
    free_space(dir).map_err(|e| format!("cannot read free space: {e}"))
}

/// Bytes available to this user on the file system holding `dir`.
fn free_space(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_the_directory_should_be_fails_with_the_variable() {
        let base = tempfile::tempdir().unwrap();
        let file = base.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let mut report = Report::default();
        spool_dir(&mut report, &file.join("spool"));
        archive_dir(&mut report, &base.path().join("archive"));
        let report = report.finish();
        let spool = report.checks.iter().find(|c| c.id == "spool_dir").unwrap();
        assert_eq!(spool.status, super::super::report::Status::Fail);
        assert!(spool.fix.as_deref().unwrap().contains(SPOOL_DIR.name));
        let archive = report
            .checks
            .iter()
            .find(|c| c.id == "archive_dir")
            .unwrap();
        assert_ne!(archive.status, super::super::report::Status::Fail);
        assert!(archive.detail.contains("writable"), "{}", archive.detail);
        assert_eq!(
            std::fs::read_dir(base.path().join("archive"))
                .unwrap()
                .count(),
            0
        );
    }
}
