//! Switching staging modes with steps in flight: whatever the staging being left holds is
//! moved into the one now configured, at start, before it is dropped from the other.
//!
//! - spool → database ([`import_spool`]): each step's spool segments, in the order written,
//!   are appended to the table (the first write of a line wins there too); a step's segment
//!   files are removed only after its rows are committed, so a crash in between appends the
//!   same lines again at the next start, which changes nothing.
//! - database → spool ([`drain_table`]): each step with rows of staging is appended to the
//!   spool engine, which makes it durable; only then are those rows deleted.
//!
//! A step archived in part keeps its object: the next archive run merges the moved lines
//! into it (the object's lines win). Until the move is done, a read of a moved step may miss
//! the lines still on the other side; the move starts with the addon and takes seconds.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use logservice::{LogEntry, LogService, Step, StepId};

use super::{LineRanges, TableStaging};
use crate::spool::{Spool, locate, read_segment_file};
use crate::threads::blocking;

/// Entries appended per statement (or per spool append) while moving.
const MOVE_BATCH: usize = 1000;

/// What a move found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Steps moved, with whether their StepFinished had come (spool → database only).
    pub steps: Vec<(StepId, bool)>,
    /// Entries moved.
    pub entries: u64,
}

/// Whether the spool configured at `spool_dir` holds any step's lines (creates nothing).
pub fn spool_holds_lines(spool_dir: &Path) -> bool {
    std::fs::read_dir(locate(spool_dir).join(crate::spool::STEPS))
        .is_ok_and(|mut files| files.next().is_some())
}

/// Moves what the spool configured at `spool_dir` holds into `table` (see the module's
/// text). Does nothing (and creates nothing) when there is no spool there. Takes the
/// spool's lock, so a spool another addon still uses is refused.
pub async fn import_spool(
    spool_dir: &Path,
    table: &dyn TableStaging,
) -> Result<Moved, std::io::Error> {
    import_spool_with(spool_dir, table, None).await
}

/// [`import_spool`], each step's move under `moving` when given.
pub(super) async fn import_spool_with(
    spool_dir: &Path,
    table: &dyn TableStaging,
    moving: Option<&tokio::sync::Mutex<()>>,
) -> Result<Moved, std::io::Error> {
    let root = locate(spool_dir);
    if !root.join(crate::spool::LOCK).exists() {
        return Ok(Moved::default());
    }
    let (configured, opened) = (spool_dir.to_owned(), root.clone());
    let (spool, lock, found) = blocking(move || {
        let (spool, lock) = Spool::open(&configured, &opened, 16).map_err(std::io::Error::other)?;
        let found = spool.recover()?;
        Ok::<_, std::io::Error>((spool, lock, found))
    })
    .await?;
    let spool = Arc::new(spool);
    let mut moved = Moved::default();
    for (id, step) in found {
        let _moving = match moving {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let paths: Vec<_> = step
            .segments
            .iter()
            .map(|segment| spool.segment_path(id, *segment))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<LogEntry>>(2);
        let reading = paths.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(MOVE_BATCH);
            for path in &reading {
                let mut undecodable = 0u64;
                // A file LogDelete removed before this step's move reads as empty; nothing
                // else removes them meanwhile, so a file is never read half.
                let _whole = read_segment_file(path, None, |_, record, _| {
                    match serde_json::from_slice::<LogEntry>(record) {
                        Ok(entry) => batch.push(entry),
                        Err(_) => undecodable += 1,
                    }
                    if batch.len() == MOVE_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(MOVE_BATCH));
                        let _ = tx.blocking_send(full);
                    }
                })?;
                if undecodable > 0 {
                    tracing::warn!(step = %id, file = %path.display(), records = undecodable,
                        "skipping spool records that are not log entries");
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            Ok::<_, std::io::Error>(())
        });
        let mut entries = 0u64;
        let mut failed = None;
        while let Some(batch) = rx.recv().await {
            if failed.is_none() {
                match table.append(id, &batch).await {
                    Ok(_) => entries += batch.len() as u64,
                    Err(e) => failed = Some(e),
                }
            }
        }
        reader.await.map_err(std::io::Error::other)??;
        if let Some(e) = failed {
            return Err(std::io::Error::other(format!(
                "moving the spooled lines of step {id} into {}: {e}",
                table.describe()
            )));
        }
        blocking(move || {
            for path in &paths {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
        moved.steps.push((id, step.finished));
        moved.entries += entries;
    }
    drop(lock);
    Ok(moved)
}

/// Moves the rows of staging that `table` holds (steps whose newest row is from `since`
/// on) into `engine` (the spool engine; see the module's text). Returns what was moved.
pub async fn drain_table(
    table: &dyn TableStaging,
    since: i64,
    engine: &crate::Engine,
) -> Result<Moved, String> {
    let mut moved = Moved::default();
    let mut after = 0;
    loop {
        let page = table
            .staged_steps(after, 500)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            return Ok(moved);
        };
        after = last.step_id;
        let more = page.len() == 500;
        for staged in page {
            let Ok(id) = StepId::new(staged.step_id) else {
                continue;
            };
            if staged.last_created < since {
                continue;
            }
            let step = Step {
                id: id.get(),
                ..Step::default()
            };
            // A LogDelete of the step waits for its move (and then deletes what moved).
            let _moving = engine.draining.moving.lock().await;
            let mut lines = LineRanges::new();
            let mut rows = table.read_in_background(id);
            let mut batch = Vec::with_capacity(MOVE_BATCH);
            loop {
                let next = rows.next().await;
                let done = next.is_none();
                if let Some(entry) = next {
                    let entry = entry
                        .map_err(|e| format!("reading step {id} from {}: {e}", table.describe()))?;
                    lines.insert(entry.line);
                    batch.push(entry);
                }
                if batch.len() == MOVE_BATCH || (done && !batch.is_empty()) {
                    moved.entries += batch.len() as u64;
                    engine
                        .log_append(&step, std::mem::take(&mut batch))
                        .await
                        .map_err(|e| format!("moving step {id} into the spool: {e}"))?;
                }
                if done {
                    break;
                }
            }
            drop(rows);
            engine
                .flush()
                .await
                .map_err(|e| format!("making step {id} durable in the spool: {e}"))?;
            table
                .delete_lines(id, &lines)
                .await
                .map_err(|e| format!("deleting the moved rows of step {id}: {e}"))?;
            moved.steps.push((id, false));
        }
        if !more {
            return Ok(moved);
        }
    }
}
