//! Woodpecker's file log store (`WOODPECKER_LOG_STORE=file`): one `<step id>.json` file per
//! step in a directory, NDJSON of `LogEntry` as Go's `json.Marshal` writes it, appended batch
//! by batch as the agent sent them.
//!
//! Woodpecker's own `LogFind` returns such a file's entries in file order, duplicates
//! (agent retries) and all, and skips blank lines. Here a file is read the way every other
//! log of this addon is read (invariant 2): ordered by line, one entry per line, the first
//! written winning. That is what `migrate` archives too, so a log reads the same before and
//! after it is migrated.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use engine::legacy::{LegacyError, LegacyLogs};
use logservice::{LogEntry, StepId};

use crate::db::StepStatus;

/// A directory written by Woodpecker's file log store.
#[derive(Clone, Debug)]
pub struct FileStoreLogs {
    dir: PathBuf,
}

impl FileStoreLogs {
    /// The store in `dir` (not touched until used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where Woodpecker keeps the log of step `id`.
    pub fn path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn unavailable(&self, cause: io::Error) -> LegacyError {
        LegacyError::Unavailable {
            what: self.describe(),
            cause: cause.into(),
        }
    }

    /// Reads step `id`'s file, keeping (by line, first written) what `keep` accepts, at
    /// most `limit` entries with the lowest lines.
    fn scan(
        &self,
        id: i64,
        keep: impl Fn(i64) -> bool,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LegacyError> {
        let path = self.path(id);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.unavailable(e)),
        };
        let mut lines: BTreeMap<i64, LogEntry> = BTreeMap::new();
        let mut reader = BufReader::new(file);
        let mut record = Vec::new();
        let mut number = 0u64;
        loop {
            record.clear();
            if reader
                .read_until(b'\n', &mut record)
                .map_err(|e| self.unavailable(e))?
                == 0
            {
                break;
            }
            number += 1;
            if record.trim_ascii().is_empty() {
                continue;
            }
            let entry: LogEntry =
                serde_json::from_slice(&record).map_err(|e| LegacyError::Failed {
                    what: format!("{}: line {number}", path.display()),
                    cause: format!("not a log entry: {e}").into(),
                })?;
            if !keep(entry.line) || lines.contains_key(&entry.line) {
                continue;
            }
            // Bounded: once full, a line above the highest kept can never be among the
            // lowest `limit`, nor can a later duplicate of a line evicted here.
            if lines.len() == limit {
                match lines.last_key_value() {
                    Some((&highest, _)) if entry.line < highest => {
                        lines.pop_last();
                    }
                    _ => continue,
                }
            }
            lines.insert(entry.line, entry);
        }
        Ok(lines.into_values().collect())
    }

    /// Up to `limit` step ids above `after` that have a file, ascending.
    fn list(&self, after: i64, limit: usize) -> Result<Vec<i64>, LegacyError> {
        let mut ids = std::collections::BTreeSet::new();
        for dirent in std::fs::read_dir(&self.dir).map_err(|e| self.unavailable(e))? {
            let dirent = dirent.map_err(|e| self.unavailable(e))?;
            let name = dirent.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if id <= after {
                continue;
            }
            ids.insert(id);
            if ids.len() > limit {
                ids.pop_last();
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LegacyError> + Send + 'static,
) -> Result<T, LegacyError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[async_trait::async_trait]
impl LegacyLogs for FileStoreLogs {
    fn describe(&self) -> String {
        format!("Woodpecker's file log store in {}", self.dir.display())
    }

    async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, LegacyError> {
        let store = self.clone();
        blocking(move || store.scan(id.get(), |_| true, usize::MAX)).await
    }

    async fn delete(&self, id: StepId) -> Result<(), LegacyError> {
        match tokio::fs::remove_file(self.path(id.get())).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LegacyError::Failed {
                what: format!(
                    "{}: removing {}",
                    self.describe(),
                    self.path(id.get()).display()
                ),
                cause: e.into(),
            }),
        }
    }

    async fn step_ids(&self, after: i64, limit: usize) -> Result<Vec<i64>, LegacyError> {
        let store = self.clone();
        blocking(move || store.list(after.max(0), limit)).await
    }

    async fn entries(
        &self,
        id: StepId,
        after_line: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LegacyError> {
        let store = self.clone();
        let after = after_line.unwrap_or(i64::MIN);
        blocking(move || store.scan(id.get(), move |line| line > after, limit.max(1))).await
    }

    /// A file written to in the last few minutes may still grow (Woodpecker on the file
    /// store appends until the pipeline ends + 5 minutes).
    async fn running(&self, id: StepId) -> Result<bool, LegacyError> {
        match tokio::fs::metadata(self.path(id.get())).await {
            Ok(meta) => {
                let modified = meta.modified().map_err(|e| self.unavailable(e))?;
                let age = SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default();
                Ok(age < StepStatus::LATE_LINES)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.unavailable(e)),
        }
    }
}
