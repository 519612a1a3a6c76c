//! LogFind with database staging: the step's rows, then its object, spliced by line.
//!
//! Rows first, object second: a run deletes rows only after their object is stored, so a
//! line missing from the rows read is in the object read next. The object wins per line
//! (it holds earlier writes); rows fill in the rest.

use std::sync::Arc;

use futures_util::StreamExt;
use logservice::{LogError, StepId};

use super::Inner;
use crate::budget::ReadCost;
use crate::format;
use crate::read::{Staged, read_through, splice, too_large};
use crate::shared::storage;

impl Inner {
    pub(super) async fn find(self: &Arc<Self>, id: StepId) -> Result<Vec<u8>, LogError> {
        let max = self.settings.max_log_size;
        let key = format::object_key(&self.settings.key_prefix, id);

        let mut staged = Staged::default();
        let mut staged_bytes = 0u64;
        let mut rows = self.table.read(id);
        while let Some(entry) = rows.next().await {
            let entry = entry.map_err(|e| {
                storage(format!(
                    "cannot read the staged log of step {id} from {}: {e}",
                    self.table.describe()
                ))
            })?;
            // A comma per record in the answer.
            staged_bytes += staged.push_entry(&entry) as u64 + 1;
            if staged_bytes > max {
                return Err(too_large(id, staged_bytes, max));
            }
        }
        drop(rows);

        let unreachable = |e: archive::StoreError| {
            storage(format!(
                "cannot read the archived log of step {id} ({key} in {}): {e}",
                self.store.describe()
            ))
        };
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
