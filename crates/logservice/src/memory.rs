//! An in-memory store: the executable statement of the read contract.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::{LogEntry, LogError, LogService, Step, StepId};

/// Keeps every step's lines in memory, keyed by line number (first write wins).
#[derive(Default)]
pub struct MemoryStore {
    steps: Mutex<HashMap<StepId, BTreeMap<i64, LogEntry>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LogService for MemoryStore {
    async fn log_find(&self, step: &Step) -> Result<Vec<LogEntry>, LogError> {
        let id = StepId::of(step)?;
        let steps = self.steps.lock().expect("memory store lock");
        Ok(steps
            .get(&id)
            .map(|lines| lines.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn log_append(&self, step: &Step, entries: Vec<LogEntry>) -> Result<(), LogError> {
        let id = StepId::of(step)?;
        let mut steps = self.steps.lock().expect("memory store lock");
        let lines = steps.entry(id).or_default();
        for entry in entries {
            lines.entry(entry.line).or_insert(entry);
        }
        Ok(())
    }

    async fn log_delete(&self, step: &Step) -> Result<(), LogError> {
        let id = StepId::of(step)?;
        self.steps.lock().expect("memory store lock").remove(&id);
        Ok(())
    }

    async fn step_finished(&self, _step: &Step) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: i64, text: &str) -> LogEntry {
        LogEntry {
            step_id: 1,
            line,
            data: Some(text.as_bytes().to_vec()),
            ..LogEntry::default()
        }
    }

    fn step(id: i64) -> Step {
        Step {
            id,
            ..Step::default()
        }
    }

    #[tokio::test]
    async fn reads_are_ordered_deduplicated_first_write_wins() {
        let store = MemoryStore::new();
        store
            .log_append(&step(1), vec![entry(2, "c"), entry(0, "a")])
            .await
            .unwrap();
        store
            .log_append(&step(1), vec![entry(1, "b"), entry(2, "resent")])
            .await
            .unwrap();
        let lines: Vec<_> = store
            .log_find(&step(1))
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.line, e.data.unwrap()))
            .collect();
        assert_eq!(
            lines,
            vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
        );
    }

    #[tokio::test]
    async fn unknown_step_is_empty_and_bad_ids_are_rejected() {
        let store = MemoryStore::new();
        assert!(store.log_find(&step(9)).await.unwrap().is_empty());
        assert!(matches!(
            store.log_append(&step(0), vec![]).await,
            Err(LogError::InvalidStepId(0))
        ));
        assert!(store.log_find(&step(-4)).await.is_err());
    }

    #[tokio::test]
    async fn delete_removes_and_is_idempotent() {
        let store = MemoryStore::new();
        store
            .log_append(&step(3), vec![entry(0, "x")])
            .await
            .unwrap();
        store.log_delete(&step(3)).await.unwrap();
        store.log_delete(&step(3)).await.unwrap();
        assert!(store.log_find(&step(3)).await.unwrap().is_empty());
    }
}
