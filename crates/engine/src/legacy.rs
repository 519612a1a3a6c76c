//! Logs written before the switch to this addon: Woodpecker's database store
//! (`log_entries`) or its file store (`<step id>.json`), reached through [`LegacyLogs`].
//!
//! The engine reads them only for a step with no archive object and nothing in the spool
//! (read-through), and removes them on `LogDelete` (so a deleted log cannot resurface).
//! The implementations live outside the engine (the `woodpecker-db` crate), so the engine
//! needs no database driver; `migrate` and `gc` use the same trait.

use std::sync::Arc;

use logservice::{LogEntry, StepId};

/// Any error of a legacy source, boxed so the engine needs none of their crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a legacy source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The source cannot be reached right now (database down, directory unmounted):
    /// worth retrying later.
    #[error("{what} is unavailable: {cause}")]
    Unavailable {
        /// The source, as [`LegacyLogs::describe`] names it (password masked).
        what: String,
        /// The driver's or the file system's error.
        #[source]
        cause: BoxError,
    },
    /// The source answered, but not as Woodpecker's schema or file format promises (a
    /// missing table, a record that is not a log entry, a refused delete).
    #[error("{what}: {cause}")]
    Failed {
        /// The source, and what was being done.
        what: String,
        /// The underlying error.
        #[source]
        cause: BoxError,
    },
}

/// A store of logs Woodpecker wrote itself before the addon took over.
///
/// Entries come back as Woodpecker's own store returns them: ordered by `line`, one per
/// line number (the first written winning), with the fields as stored (`id` included).
#[async_trait::async_trait]
pub trait LegacyLogs: Send + Sync + 'static {
    /// Names the source for people (database with its password masked, or a directory).
    fn describe(&self) -> String;

    /// The step's whole legacy log; empty when the source has none for it.
    async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, LegacyError>;

    /// Removes the step's legacy log; removing one that does not exist succeeds.
    async fn delete(&self, id: StepId) -> Result<(), LegacyError>;

    /// Up to `limit` ids of steps with a legacy log, ascending, each greater than `after`
    /// (start at 0: ids below 1 are not step ids Woodpecker gives out). Page through a
    /// source of any size in bounded memory.
    async fn step_ids(&self, after: i64, limit: usize) -> Result<Vec<i64>, LegacyError>;

    /// Up to `limit` entries of a step, ordered by line, one per line, each with a line
    /// greater than `after_line` (`None`: from the first): one step in bounded memory.
    async fn entries(
        &self,
        id: StepId,
        after_line: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LegacyError>;

    /// Whether Woodpecker may still write lines of this step to the source (it is pending
    /// or running, or finished moments ago): such a step must be left alone by `migrate`.
    async fn running(&self, id: StepId) -> Result<bool, LegacyError>;
}

/// Several legacy sources read as one: the first with lines for a step answers `find`;
/// `delete` removes the step from every source. The engine's read-through uses this.
#[derive(Clone, Default)]
pub struct LegacySources {
    sources: Vec<Arc<dyn LegacyLogs>>,
}

impl LegacySources {
    /// The sources, asked in this order.
    pub fn new(sources: Vec<Arc<dyn LegacyLogs>>) -> Self {
        Self { sources }
    }

    /// Whether there is no source at all.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[Arc<dyn LegacyLogs>] {
        &self.sources
    }

    /// The step's log from the first source that has one; empty when none has. A source
    /// that fails does not hide another's copy; its error is returned only when no other
    /// source has the step (the answer might otherwise look complete while it is not).
    pub async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, LegacyError> {
        let mut first_error = None;
        for source in &self.sources {
            match source.find(id).await {
                Ok(entries) if !entries.is_empty() => return Ok(entries),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(Vec::new()), Err)
    }

    /// Removes the step from every source; the first error is returned after all were
    /// tried, so one unreachable source does not keep the others' copies.
    pub async fn delete(&self, id: StepId) -> Result<(), LegacyError> {
        let mut first_error = None;
        for source in &self.sources {
            if let Err(e) = source.delete(id).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The sources' names, for messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.sources.iter().map(|s| s.describe()).collect();
        names.join(" and ")
    }
}

/// The JSON array `LogFind` answers for `entries` (already ordered, one per line), each as
/// Go's `json.Marshal` writes a `LogEntry`.
pub(crate) fn entries_json(entries: &[LogEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + entries.len() * 96);
    out.push(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        logservice::push_entry(entry, &mut out);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_the_json_array_woodpecker_answers() {
        let entries = [
            LogEntry {
                id: 7,
                step_id: 3,
                time: 1,
                line: 0,
                data: Some(b"hi".to_vec()),
                entry_type: 0,
            },
            LogEntry {
                id: 8,
                step_id: 3,
                line: 1,
                data: None,
                ..LogEntry::default()
            },
        ];
        assert_eq!(
            String::from_utf8(entries_json(&entries)).unwrap(),
            r#"[{"id":7,"step_id":3,"time":1,"line":0,"data":"aGk=","type":0},{"id":8,"step_id":3,"time":0,"line":1,"data":null,"type":0}]"#
        );
        assert_eq!(entries_json(&[]), b"[]");
    }
}
