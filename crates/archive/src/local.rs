//! The embedded default archive: one file per object under a root directory.
//!
//! # On-disk layout (version 1)
//!
//! A key `a/b/c` is the file `<root>/a/b/c`; `/` in keys maps to subdirectories (0700), files
//! are 0600 because logs can hold secrets. Each file is self-contained:
//!
//! ```text
//! {"v":1,"content_type":"…","content_encoding":"…","user":{"k":"v"}}\n   ← one line of JSON
//! <object bytes>                                                        ← exactly as stored
//! ```
//!
//! The metadata lives in the file itself rather than in a sidecar or an xattr so that one
//! `rename` replaces object and metadata together (a reader never sees new metadata with old
//! bytes), and so the directory can be copied or backed up by any tool. An admin gets the
//! object bytes with `tail -n +2 FILE` (e.g. `tail -n +2 FILE | zstd -d | jq`).
//!
//! Writes go to a hidden temp file (`.<name>.tmp-…`) in the target directory, are fsynced,
//! renamed over the target, and the directory is fsynced, so a crash leaves the old object or
//! the new one. Names starting with `.` are never keys (see `validate_key`), so temp files
//! cannot collide with objects and listing skips them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::key::{validate_key, validate_prefix};
use crate::{
    DeleteFailure, ListPage, ListedObject, MAX_BATCH, ObjectInfo, ObjectMeta, ObjectStore,
    StoreError,
};

/// Header lines longer than this are not ours: the file is reported corrupt instead of
/// being read into memory.
const MAX_HEADER: u64 = 64 * 1024;
const FORMAT_VERSION: u32 = 1;

/// Objects as files under a root directory. See the module docs for the layout.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    content_type: String,
    content_encoding: String,
    user: std::collections::BTreeMap<String, String>,
}

impl LocalDirStore {
    /// Opens (creating with mode 0700 if needed) the store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| StoreError::io(&root, "create archive directory", e))?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|source| StoreError::Task { source })?
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError> {
        let target = self.path_of(key)?;
        let root = self.root.clone();
        let body = body.to_owned();
        let header = Header {
            v: FORMAT_VERSION,
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            user: meta.user.clone(),
        };
        Self::blocking(move || write_atomically(&root, &target, &body, &header)).await?;
        self.head(key)
            .await?
            .ok_or_else(|| StoreError::corrupt_object(key, "missing right after it was written"))
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError> {
        let path = self.path_of(key)?;
        Self::blocking(move || {
            let Some((mut reader, info)) = open_object(&path)? else {
                return Ok(None);
            };
            let mut data = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
            reader
                .read_to_end(&mut data)
                .map_err(|e| StoreError::io(&path, "read", e))?;
            if data.len() as u64 != info.size {
                return Err(StoreError::corrupt_object(
                    path.display(),
                    format!(
                        "changed while reading ({} bytes expected, {} read)",
                        info.size,
                        data.len()
                    ),
                ));
            }
            Ok(Some((data, info)))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key)?;
        Self::blocking(move || Ok(open_object(&path)?.map(|(_, info)| info))).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        Self::blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(StoreError::io(&path, "delete", e)),
            }
            let dir = path.parent().unwrap_or(&root);
            sync_dir(dir)?;
            remove_empty_parents(&root, dir);
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        Self::blocking(move || {
            // Only the directory named by the prefix's complete segments can hold matches.
            let base = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
            let mut keys = Vec::new();
            walk(&root.join(base), base, &mut keys)?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: Option<&str>,
        page_size: usize,
    ) -> Result<ListPage, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start = start.map(str::to_owned);
        let page_size = page_size.clamp(1, MAX_BATCH);
        Self::blocking(move || {
            let base = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
            let mut page = Page {
                prefix: &prefix,
                after: start.as_deref(),
                limit: page_size,
                objects: Vec::with_capacity(page_size),
                full: false,
            };
            page.walk(&root.join(base), base)?;
            let next = page
                .full
                .then(|| page.objects.last().map(|o| o.key.clone()))
                .flatten();
            Ok(ListPage {
                objects: page.objects,
                next,
            })
        })
        .await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        // Files go one by one, but with one directory fsync per directory instead of one per
        // key: a batch of a thousand keys in a shard costs one fsync.
        let mut failures = Vec::new();
        let mut paths = Vec::with_capacity(keys.len());
        for key in keys {
            match self.path_of(key) {
                Ok(path) => paths.push((key.clone(), path)),
                Err(error) => failures.push(DeleteFailure {
                    key: key.clone(),
                    error,
                }),
            }
        }
        let root = self.root.clone();
        let removed = Self::blocking(move || {
            let mut failures = Vec::new();
            let mut dirs = std::collections::BTreeSet::new();
            for (key, path) in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        dirs.insert(path.parent().unwrap_or(&root).to_owned());
                    }
                    Err(e) if is_missing(&e) => {}
                    Err(e) => failures.push(DeleteFailure {
                        key,
                        error: StoreError::io(&path, "delete", e),
                    }),
                }
            }
            for dir in dirs {
                if let Err(error) = sync_dir(&dir) {
                    failures.push(DeleteFailure {
                        key: dir.display().to_string(),
                        error,
                    });
                }
                remove_empty_parents(&root, &dir);
            }
            Ok(failures)
        })
        .await;
        match removed {
            Ok(more) => failures.extend(more),
            Err(error) => {
                let text = error.to_string();
                failures.extend(keys.iter().map(|key| DeleteFailure {
                    key: key.clone(),
                    error: StoreError::transient(text.clone()),
                }));
            }
        }
        failures
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

fn write_atomically(
    root: &Path,
    target: &Path,
    body: &Path,
    header: &Header,
) -> Result<(), StoreError> {
    let dir = target.parent().unwrap_or(root);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let mut source = File::open(body).map_err(|e| StoreError::io(body, "open upload source", e))?;
    let expected = source
        .metadata()
        .map_err(|e| StoreError::io(body, "stat upload source", e))?
        .len();

    // A concurrent delete may remove a freshly created (empty) parent directory between
    // creating it and creating the temp file: create both again in that case.
    let (temp_path, mut temp) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            create_dirs(root, dir)?;
            let temp_path = dir.join(format!(".{name}.tmp-{}", unique_suffix()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp_path)
            {
                Ok(file) => break (temp_path, file),
                Err(e) if is_missing(&e) && attempt < 3 => continue,
                Err(e) => return Err(StoreError::io(&temp_path, "create temp file", e)),
            }
        }
    };
    let result = (|| {
        let mut line = serde_json::to_vec(header).map_err(|e| StoreError::Corrupt {
            target: target.display().to_string(),
            problem: "cannot encode metadata".to_owned(),
            source: Some(e.into()),
        })?;
        line.push(b'\n');
        temp.write_all(&line)
            .map_err(|e| StoreError::io(&temp_path, "write", e))?;
        let copied =
            io::copy(&mut source, &mut temp).map_err(|e| StoreError::io(&temp_path, "write", e))?;
        if copied != expected {
            return Err(StoreError::UploadSourceChanged {
                path: body.to_owned(),
                expected,
                copied,
            });
        }
        temp.sync_all()
            .map_err(|e| StoreError::io(&temp_path, "fsync", e))?;
        fs::rename(&temp_path, target)
            .map_err(|e| StoreError::io(target, "rename into place", e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// Creates `dir` and its missing ancestors below `root` with mode 0700, fsyncing each
/// parent so the new entries survive a crash along with the object put into them.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), StoreError> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(root, parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_dir(dir.parent().unwrap_or(root)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io(dir, "create directory", e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "fsync directory", e))
}

/// Best effort: leaves no empty directories behind so listings stay fast. A directory that
/// is not empty (or is being filled concurrently) simply stays.
fn remove_empty_parents(root: &Path, mut dir: &Path) {
    while dir != root && dir.starts_with(root) {
        if fs::remove_dir(dir).is_err() {
            return;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return,
        }
    }
}

/// Opens an object and parses its header; the reader is positioned at the first body byte.
fn open_object(path: &Path) -> Result<Option<(BufReader<File>, ObjectInfo)>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(StoreError::io(path, "open", e)),
    };
    let stat = file
        .metadata()
        .map_err(|e| StoreError::io(path, "stat", e))?;
    if stat.is_dir() {
        // A key that is only a prefix of other keys (`a` when `a/b` exists).
        return Ok(None);
    }
    let len = stat.len();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_HEADER)
        .read_until(b'\n', &mut line)
        .map_err(|e| StoreError::io(path, "read", e))?;
    if line.last() != Some(&b'\n') {
        return Err(StoreError::corrupt_object(
            path.display(),
            "no metadata line (not written by this store, or truncated)",
        ));
    }
    let header: Header =
        serde_json::from_slice(&line[..line.len() - 1]).map_err(|e| StoreError::Corrupt {
            target: path.display().to_string(),
            problem: "unreadable metadata line".to_owned(),
            source: Some(e.into()),
        })?;
    if header.v != FORMAT_VERSION {
        return Err(StoreError::corrupt_object(
            path.display(),
            format!("unknown format version {}", header.v),
        ));
    }
    let info = ObjectInfo {
        size: len - line.len() as u64,
        meta: ObjectMeta {
            content_type: header.content_type,
            content_encoding: header.content_encoding,
            user: header.user,
        },
        etag: None,
    };
    Ok(Some((reader, info)))
}

fn walk(dir: &Path, key_prefix: &str, keys: &mut Vec<String>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, "list", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, "list", e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{key_prefix}{name}");
        let kind = entry
            .file_type()
            .map_err(|e| StoreError::io(dir, "list", e))?;
        if kind.is_dir() {
            walk(&entry.path(), &format!("{key}/"), keys)?;
        } else if kind.is_file() {
            keys.push(key);
        }
    }
    Ok(())
}

/// A page of a listing being collected: a depth-first walk in lexical key order that skips
/// subtrees wholly before `after` and stops after `limit` objects.
struct Page<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
    objects: Vec<ListedObject>,
    /// Set when the limit was reached with possibly more keys after it.
    full: bool,
}

impl Page<'_> {
    fn walk(&mut self, dir: &Path, key_prefix: &str) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(StoreError::io(dir, "list", e)),
        };
        // Sorted as the keys sort: a directory `a` holds keys `a/…`, so it sorts as `a/`
        // (before a file `ab`, after a file `a-`).
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, "list", e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(|e| StoreError::io(dir, "list", e))?;
            if kind.is_dir() {
                names.push((format!("{key_prefix}{name}/"), entry));
            } else if kind.is_file() {
                names.push((format!("{key_prefix}{name}"), entry));
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, entry) in names {
            if key.ends_with('/') {
                // Every key below starts with `key`: compare the whole subtree at once.
                let skip = self
                    .after
                    .is_some_and(|after| !after.starts_with(key.as_str()) && after > key.as_str());
                let relevant =
                    self.prefix.starts_with(key.as_str()) || key.starts_with(self.prefix);
                if !skip && relevant {
                    self.walk(&entry.path(), &key)?;
                }
            } else if key.starts_with(self.prefix)
                && self.after.is_none_or(|after| key.as_str() > after)
            {
                if self.objects.len() == self.limit {
                    // One more key exists: the page is complete and another follows.
                    self.full = true;
                    return Ok(());
                }
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted since the directory was read.
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(StoreError::io(entry.path(), "stat", e)),
                };
                self.objects.push(ListedObject {
                    key,
                    size: meta.len(),
                    last_modified: meta.modified().ok(),
                });
            }
            if self.full {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Missing file, or a path component that is a file (key `a/b` when `a` is an object).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
