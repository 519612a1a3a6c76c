//! The four calls Woodpecker makes on a log store.

use std::future::Future;

use crate::{EntryRecords, LogEntry, Step};

/// A validated Woodpecker step id: strictly positive, as the database assigns them.
///
/// Every store keys its data by this, never by anything else the host sent, so a hostile or
/// broken step can never name a path or object outside the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(i64);

impl StepId {
    /// `id` if it is a step id Woodpecker can give out (1 and above).
    pub fn new(id: i64) -> Result<Self, LogError> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(LogError::InvalidStepId(id))
        }
    }

    /// The id of `step`, checked as [`StepId::new`] does.
    pub fn of(step: &Step) -> Result<Self, LogError> {
        Self::new(step.id)
    }

    /// The id as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a call failed. The text reaches the Woodpecker log through the host, so it says what
/// went wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The step id is 0 or negative.
    #[error("step id {0} is not a valid Woodpecker step id (ids start at 1)")]
    InvalidStepId(i64),
    /// The store could not do it; the text says what and where.
    #[error("{0}")]
    Storage(String),
}

/// A Woodpecker log store: the server's `server/services/log.Service`.
///
/// Semantics every implementation keeps (Woodpecker's database store is the reference):
/// `log_find` returns entries ordered by `line`, one entry per line number, the first one
/// written winning; `log_append` may receive the same lines twice and batches out of order.
pub trait LogService: Send + Sync + 'static {
    /// The whole log of a step; `[]` for a step never seen.
    fn log_find(&self, step: &Step)
    -> impl Future<Output = Result<Vec<LogEntry>, LogError>> + Send;

    /// Stores a batch. Woodpecker only logs an error here, so a store must not fail for
    /// reasons it could have absorbed.
    fn log_append(
        &self,
        step: &Step,
        entries: Vec<LogEntry>,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// [`Self::log_append`] with the entries still as Woodpecker's JSON text. A store that
    /// keeps text overrides this to skip decoding them; the default decodes.
    fn log_append_records(
        &self,
        step: &Step,
        records: EntryRecords,
    ) -> impl Future<Output = Result<(), LogError>> + Send {
        async move {
            let entries = records
                .to_entries()
                .map_err(|e| LogError::Storage(format!("undecodable log entries: {e}")))?;
            self.log_append(step, entries).await
        }
    }

    /// [`Self::log_find`] as the JSON array the host receives. A store that keeps text
    /// overrides this to build the answer without decoding; the default encodes.
    fn log_find_json(&self, step: &Step) -> impl Future<Output = Result<Vec<u8>, LogError>> + Send {
        async move {
            let entries = self.log_find(step).await?;
            serde_json::to_vec(&entries)
                .map_err(|e| LogError::Storage(format!("encoding the log: {e}")))
        }
    }

    /// Removes every copy of a step's log. Deleting an unknown step succeeds.
    fn log_delete(&self, step: &Step) -> impl Future<Output = Result<(), LogError>> + Send;

    /// The agent reported the step as exited. Must return quickly: the host calls it inside
    /// the agent's update RPC.
    fn step_finished(&self, step: &Step) -> impl Future<Output = ()> + Send;
}
