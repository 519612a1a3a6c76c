//! LogFind with database staging: the step's rows, then its object, spliced by line.
//!
//! Rows first, object second: a run deletes rows only after their object is stored, so a
//! line missing from the rows read is in the object read next. The object wins per line
//! (it holds earlier writes); rows fill in the rest.

use std::sync::Arc;

use futures_util::StreamExt;
use logservice::{LogError, StepId};

use archive::ObjectStore;

use super::{Inner, TableStaging};
use crate::budget::ReadCost;
use crate::format;
use crate::read::{Staged, archive_unreadable, read_spool_dir, read_through, splice, too_large};
use crate::settings::EngineSettings;
use crate::shared::storage;
use crate::threads::blocking;

impl Inner {
    pub(super) async fn find(self: &Arc<Self>, id: StepId) -> Result<Vec<u8>, LogError> {
        let max = self.settings.max_log_size;
        let key = format::object_key(&self.settings.key_prefix, id);

        // With the database down, a step this process knows has nothing staged (archived
        // and nothing since) is still served from its object.
        let mut rows_unreadable = None;
        // A spool left by spool staging and not yet moved into the table: read before the
        // rows (the move commits rows before it removes the files) and winning per line
        // (written first).
        let spool_left = self
            .spool_left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (spooled, spooled_bytes) = match spool_left {
            Some(dir) => blocking(move || read_spool_dir(&dir, id))
                .await
                .map_err(|e| storage(format!("cannot read the spooled log of step {id}: {e}")))?,
            None => (Staged::default(), 0),
        };
        let read = read_rows_after(&*self.table, id, max, spooled, spooled_bytes).await;
        let (staged, staged_bytes) = match read {
            Ok(rows) => rows,
            Err(RowsError::Table(e)) if e.is_unavailable() && self.steps.nothing_staged(id) => {
                tracing::warn!(step = %id, error = %e,
                    "database unreachable; serving the step's archived log alone (this addon archived it and staged nothing since)");
                rows_unreadable = Some(e);
                (Staged::default(), 0)
            }
            Err(e) => return Err(e.into_log_error(&*self.table, id)),
        };

        let unreachable = |e| archive_unreadable(&*self.store, id, &key, e);
        // The object's size and metadata first, to reserve the read's memory.
        let expected = match self.store.head(&key).await {
            Ok(info) => info,
            Err(e) if self.serves_rows_alone(id, &staged) => {
                tracing::warn!(step = %id, error = %e,
                    "archive unreachable; serving the step's log from the database");
                return splice(&*self.store, id, &key, staged, None, max).await;
            }
            Err(e) => return Err(unreachable(e)),
        };
        let limit = expected
            .as_ref()
            .map(|info| format::text_limit(info.size, &info.meta, max));
        let cost = ReadCost {
            staged: staged_bytes,
            compressed: expected.as_ref().map_or(0, |info| info.size),
            object_text: limit.map_or(0, |limit| limit.bytes),
        };
        if limit.is_some_and(|limit| limit.recorded) && cost.answer() > max {
            return Err(too_large(id, cost.answer(), max));
        }
        let _reserved = self.read_budget.reserve(cost.total()).await;
        let object = match self.store.get(&key).await {
            Ok(object) => object,
            Err(e) if self.serves_rows_alone(id, &staged) => {
                tracing::warn!(step = %id, error = %e,
                    "archive unreachable; serving the step's log from the database");
                None
            }
            Err(e) => return Err(unreachable(e)),
        };
        if object.is_none()
            && let Some(e) = rows_unreadable
        {
            return Err(RowsError::Table(e).into_log_error(&*self.table, id));
        }
        if object.is_none()
            && staged.is_empty()
            && let Some(legacy) = self.legacy.get()
        {
            return read_through(legacy, id).await;
        }
        splice(&*self.store, id, &key, staged, object, max).await
    }

    /// Whether the rows are the step's whole log, so that an unreachable archive need not
    /// fail the read: this process took the step's first line and has not archived it.
    fn serves_rows_alone(&self, id: StepId, staged: &Staged) -> bool {
        !staged.is_empty() && self.steps.whole_log_staged(id)
    }
}

/// Why the rows could not be read.
enum RowsError {
    Table(super::TableError),
    TooLarge(LogError),
}

impl RowsError {
    fn into_log_error(self, table: &dyn TableStaging, id: StepId) -> LogError {
        match self {
            RowsError::Table(e) => storage(format!(
                "cannot read the staged log of step {id} from {}: {e}",
                table.describe()
            )),
            RowsError::TooLarge(e) => e,
        }
    }
}

/// The step's rows as staged records, and the bytes they add to the answer; a log over
/// `max` is refused.
async fn read_rows(
    table: &dyn TableStaging,
    id: StepId,
    max: u64,
) -> Result<(Staged, u64), RowsError> {
    read_rows_after(table, id, max, Staged::default(), 0).await
}

/// [`read_rows`] into `staged`, which holds `staged_bytes` of the answer already (and wins
/// per line).
async fn read_rows_after(
    table: &dyn TableStaging,
    id: StepId,
    max: u64,
    mut staged: Staged,
    mut staged_bytes: u64,
) -> Result<(Staged, u64), RowsError> {
    let mut rows = table.read(id);
    while let Some(entry) = rows.next().await {
        let entry = entry.map_err(RowsError::Table)?;
        // A comma per record in the answer.
        staged_bytes += staged.push_entry(&entry) as u64 + 1;
        if staged_bytes > max {
            return Err(RowsError::TooLarge(too_large(id, staged_bytes, max)));
        }
    }
    Ok((staged, staged_bytes))
}

/// A step's rows as staged records, for a spool engine reading rows being moved into it.
pub(crate) async fn rows_as_staged(
    table: &dyn TableStaging,
    id: StepId,
    max: u64,
) -> Result<(Staged, u64), LogError> {
    read_rows(table, id, max)
        .await
        .map_err(|e| e.into_log_error(table, id))
}

/// Reads a step's log with database staging, as the JSON array LogFind answers, without
/// starting an engine (for `get` beside a live addon): rows first, then the object; no
/// maximum (it is how an admin reads a log past `MAX_LOG_SIZE`); logs from before the
/// switch are the table's own rows.
pub async fn read_table_step_log(
    settings: &EngineSettings,
    store: &dyn ObjectStore,
    table: &dyn TableStaging,
    id: StepId,
) -> Result<Vec<u8>, LogError> {
    let (staged, _) = read_rows(table, id, u64::MAX)
        .await
        .map_err(|e| e.into_log_error(table, id))?;
    let key = format::object_key(&settings.key_prefix, id);
    let object = store
        .get(&key)
        .await
        .map_err(|e| archive_unreadable(store, id, &key, e))?;
    splice(store, id, &key, staged, object, u64::MAX).await
}
