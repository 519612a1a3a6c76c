//! Empty files kept ready in the spool's `tmp/` directory, so the spool rarely creates or
//! deletes a file on the way of a call.
//!
//! A step's spool segments, its finished marker and its archive build file each live for
//! seconds to minutes, so a busy server creates and deletes files all the time. Creating a
//! file costs an inode allocation, and on ext4 without a journal that allocation skips every
//! inode deleted in the last minute, one by one: measured here (`perf record` during
//! `bench/run`), it put file creation on LogAppend's slowest calls. Taking a file from the
//! pool is a rename; a file done with is emptied and goes back to the pool, or is deleted
//! when the pool is full (or, for a segment, when a reader still holds it: see
//! `spool/reading.rs`). Pooled files are always empty and live in `tmp/`, which a start
//! clears, so a crash at any point leaves nothing that could be mistaken for data.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many empty files a refill keeps ready.
const REFILL_TO: usize = 32;
/// How many files the pool keeps at most; beyond this, returned files are deleted.
const CAPACITY: usize = 256;

pub(crate) struct FilePool {
    dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next_name: AtomicU64,
}

impl FilePool {
    /// A pool in `dir`, which must exist and hold no files of an earlier pool.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            free: Mutex::new(Vec::new()),
            next_name: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Places an empty file at `path`: a pooled one moved there, or a new one. An existing
    /// file at `path` is replaced, so callers only ask for paths that hold nothing.
    pub(crate) fn place(&self, path: &Path) -> io::Result<()> {
        let pooled = self.lock().pop();
        if let Some(pooled) = pooled {
            match fs::rename(&pooled, path) {
                Ok(()) => return Ok(()),
                // Someone cleared tmp/ under us: fall back to creating.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        create(path).map(drop)
    }

    /// An empty scratch file in the pool's directory; it goes back to the pool when dropped.
    pub(crate) fn scratch(self: &Arc<Self>) -> io::Result<Scratch> {
        let pooled = self.lock().pop();
        let path = match pooled {
            Some(path) => path,
            None => self.new_path(),
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Scratch {
            pool: self.clone(),
            path,
            file,
        })
    }

    /// Empties the file at `path` and keeps it for reuse (moved into the pool's directory),
    /// or deletes it when the pool is full. A missing file is fine.
    pub(crate) fn give_back(&self, path: &Path) -> io::Result<()> {
        if self.lock().len() >= CAPACITY {
            return remove_if_exists(path);
        }
        match OpenOptions::new().write(true).open(path) {
            Ok(file) => file.set_len(0)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let pooled = if path.parent() == Some(&self.dir) {
            path.to_owned()
        } else {
            let pooled = self.new_path();
            fs::rename(path, &pooled)?;
            pooled
        };
        self.lock().push(pooled);
        Ok(())
    }

    /// Moves the file at `path` into the pool's directory under a fresh name, not yet
    /// pooled: the caller then [gives it back](Self::give_back) or deletes it. `None` when
    /// there is no file.
    pub(crate) fn withdraw(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        let moved = self.new_path();
        match fs::rename(path, &moved) {
            Ok(()) => Ok(Some(moved)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates files until [`REFILL_TO`] are ready. Runs in the background.
    pub(crate) fn refill(&self) -> io::Result<usize> {
        let missing = REFILL_TO.saturating_sub(self.lock().len());
        for _ in 0..missing {
            let path = self.new_path();
            create(&path)?;
            self.lock().push(path);
        }
        Ok(missing)
    }

    fn new_path(&self) -> PathBuf {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("free-{n}"))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A file from [`FilePool::scratch`], returned to the pool (emptied) when dropped.
pub(crate) struct Scratch {
    pool: Arc<FilePool>,
    path: PathBuf,
    pub(crate) file: File,
}

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = self.pool.give_back(&self.path) {
            tracing::warn!(file = %self.path.display(), %error, "cannot recycle a scratch file");
        }
    }
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_round_empty_and_the_pool_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let pool = Arc::new(FilePool::new(&tmp));
        assert_eq!(pool.refill().unwrap(), REFILL_TO);
        assert_eq!(pool.refill().unwrap(), 0);

        let segment = dir.path().join("1.0.ndjson");
        pool.place(&segment).unwrap();
        assert_eq!(pool.len(), REFILL_TO - 1);
        fs::write(&segment, b"secret line\n").unwrap();
        pool.give_back(&segment).unwrap();
        assert!(!segment.exists());
        assert_eq!(pool.len(), REFILL_TO);
        for entry in fs::read_dir(&tmp).unwrap() {
            assert_eq!(entry.unwrap().metadata().unwrap().len(), 0);
        }

        let scratch = pool.scratch().unwrap();
        let path = scratch.path().to_owned();
        fs::write(&path, b"built object").unwrap();
        drop(scratch);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(pool.len(), REFILL_TO);
        pool.give_back(&dir.path().join("missing")).unwrap();

        for n in 0..CAPACITY + 10 {
            let path = dir.path().join(format!("extra-{n}"));
            fs::write(&path, b"x").unwrap();
            pool.give_back(&path).unwrap();
            assert!(!path.exists());
        }
        assert_eq!(pool.len(), CAPACITY);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), CAPACITY);
    }
}
