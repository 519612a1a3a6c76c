//! Room on the spool's file system: appends stop short of filling it, so that archive
//! builds, which write their object (and, for large steps, their sort runs) into the spool's
//! `tmp/`, always find space, and a full spool drains by itself.
//!
//! Without this, a spool that filled up (typically during a long S3 outage) could never be
//! emptied: every archive build failed with ENOSPC, so no step left the spool, so no space was
//! ever freed, until an admin intervened. Now appends are refused while less than the
//! reserve is free (5% of the file system, at most [`MAX_RESERVE`]); finished steps still
//! archive into that reserve, and their deletion makes room for appends again.
//!
//! Asking the kernel (`statvfs`) on every append would put a system call on the fast path, so
//! appends draw on an estimate of the free space, which is measured again whenever it runs
//! low (so space freed by archived steps counts from then on). Other writers on the same
//! file system can make the estimate optimistic: the kernel's own ENOSPC then still stops
//! the write, and the append cuts its partial batch back (see `Spool::append`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest reserve: enough for many concurrent builds of ordinary steps.
const MAX_RESERVE: u64 = 512 << 20;
/// The reserve is this fraction (1/n) of the file system's size when that is smaller.
const RESERVE_FRACTION: u64 = 20;

pub(crate) struct Room {
    dir: PathBuf,
    /// Bytes kept free for archive builds.
    reserve: u64,
    /// Free bytes as last measured, minus what appends took since.
    estimate: AtomicU64,
}

/// Free and total bytes of the file system holding `dir`, as an unprivileged writer sees it.
fn measure(dir: &Path) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("cannot measure the free space of {}: {e}", dir.display()),
        )
    })?;
    Ok((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

impl Room {
    /// The room of the file system holding `dir`.
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let (free, total) = measure(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            reserve: (total / RESERVE_FRACTION).min(MAX_RESERVE),
            estimate: AtomicU64::new(free),
        })
    }

    /// Measures the free space again (space freed by archived steps shows up here).
    fn refresh(&self) -> io::Result<u64> {
        let (free, _) = measure(&self.dir)?;
        self.estimate.store(free, Ordering::Relaxed);
        Ok(free)
    }

    /// Takes `bytes` for an append, or refuses with [`io::ErrorKind::StorageFull`] when they
    /// would leave less than the reserve free.
    pub(crate) fn claim(&self, bytes: u64) -> io::Result<()> {
        let needed = bytes.saturating_add(self.reserve);
        let take = |free: u64| free.checked_sub(bytes).filter(|_| free >= needed);
        if self
            .estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .is_ok()
        {
            return Ok(());
        }
        let free = self.refresh()?;
        if self
            .estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .is_ok()
        {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{} KiB free on the spool's file system; the last {} KiB are kept for building \
                 archives",
                free >> 10,
                self.reserve >> 10
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(dir: &Path, reserve: u64) -> Room {
        let (free, _) = measure(dir).unwrap();
        Room {
            dir: dir.to_owned(),
            reserve,
            estimate: AtomicU64::new(free),
        }
    }

    #[test]
    fn appends_stop_at_the_reserve_whatever_the_estimate_says() {
        let dir = tempfile::tempdir().unwrap();
        let (_, total) = measure(dir.path()).unwrap();
        // A reserve of the whole file system: nothing may be appended, even though the
        // estimate (the free space) would cover the batch without a reserve.
        let refused = room(dir.path(), total).claim(1).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::StorageFull);
        assert!(
            refused.to_string().contains("kept for building archives"),
            "{refused}"
        );
        let open = room(dir.path(), 0);
        open.claim(1).unwrap();
        let too_big = open.claim(total).unwrap_err();
        assert_eq!(too_big.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn a_low_estimate_is_measured_again_before_refusing() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(dir.path(), 0);
        // As after many appends whose space archiving has freed since.
        room.estimate.store(0, Ordering::Relaxed);
        room.claim(1).unwrap();
        assert!(room.estimate.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn the_reserve_is_a_twentieth_of_the_file_system_at_most_512_mib() {
        let dir = tempfile::tempdir().unwrap();
        let (_, total) = measure(dir.path()).unwrap();
        let room = Room::new(dir.path()).unwrap();
        assert_eq!(room.reserve, (total / 20).min(512 << 20));
    }
}
