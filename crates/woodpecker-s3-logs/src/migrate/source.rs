//! Where `migrate` reads from: Woodpecker's `log_entries` table or its file store directory,
//! one step at a time, and how it removes a step's legacy copy once the object is verified.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::legacy::{LegacyError, LegacyLogs};
use futures::Stream;
use logservice::{LogEntry, StepId};
use woodpecker_db::{Database, FileStoreLogs};

use super::writer::LegacyShape;

/// Entries read per query: a page of a step's rows.
const PAGE: usize = 5_000;

/// One legacy store.
#[derive(Clone)]
pub(crate) enum Source {
    /// Woodpecker's `log_entries` (boxed: the pool's options are large).
    Database(Box<Database>),
    /// Woodpecker's file store directory.
    Files(FileStoreLogs),
}

/// What a step is to Woodpecker right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepState {
    /// Finished long enough ago that no line can come any more.
    Settled,
    /// Pending, running, or finished moments ago: Woodpecker may still write lines.
    Running,
    /// Not in `steps` any more (its pipeline was deleted): nobody can read its log.
    Deleted,
}

impl Source {
    /// The source as a [`LegacyLogs`].
    pub(crate) fn logs(&self) -> &dyn LegacyLogs {
        match self {
            Source::Database(db) => &**db,
            Source::Files(files) => files,
        }
    }

    /// Names it for people.
    pub(crate) fn describe(&self) -> String {
        self.logs().describe()
    }

    /// A step's state: from `steps` when a database is known (`database`), and for the
    /// file store also from its file's age (a file written minutes ago may still grow).
    pub(crate) async fn state(
        &self,
        database: Option<&Database>,
        id: StepId,
    ) -> Result<StepState, LegacyError> {
        if let Some(db) = database {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            match db.step_status(id.get()).await.map_err(LegacyError::from)? {
                None => return Ok(StepState::Deleted),
                Some(status) if status.may_get_lines(now) => return Ok(StepState::Running),
                Some(_) => {}
            }
        }
        if let Source::Files(files) = self
            && files.running(id).await?
        {
            return Ok(StepState::Running);
        }
        Ok(StepState::Settled)
    }

    /// How many distinct lines the step has and their range, or `None` when it has none.
    /// The database counts; a file is read (the file store keeps one file per step).
    pub(crate) async fn shape(&self, id: StepId) -> Result<Option<LegacyShape>, LegacyError> {
        match self {
            Source::Database(db) => Ok(db
                .log_shape(id.get())
                .await
                .map_err(LegacyError::from)?
                .map(|shape| LegacyShape {
                    lines: shape.lines,
                    first: shape.first,
                    last: shape.last,
                })),
            Source::Files(files) => {
                let entries = files.find(id).await?;
                Ok(shape_of(&entries))
            }
        }
    }

    /// The step's entries by line, one per line, page by page.
    pub(crate) fn entries(
        &self,
        id: StepId,
    ) -> impl Stream<Item = Result<LogEntry, LegacyError>> + Send + '_ {
        let pages = futures::stream::try_unfold(Some(None), move |after| async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = self.logs().entries(id, after, PAGE).await?;
            let next = (page.len() == PAGE).then(|| page.last().map(|e| e.line));
            Ok::<_, LegacyError>(Some((
                futures::stream::iter(page.into_iter().map(Ok)),
                next,
            )))
        });
        futures::TryStreamExt::try_flatten(pages)
    }

    /// Removes the step's legacy copy: its rows `batch` at a time (each statement short, so
    /// Woodpecker's own writes wait little), or its file. Returns the rows (or entries)
    /// removed and the longest statement.
    pub(crate) async fn delete(
        &self,
        id: StepId,
        batch: u64,
    ) -> Result<(u64, Duration), LegacyError> {
        match self {
            Source::Database(db) => {
                let (mut total, mut longest) = (0, Duration::ZERO);
                loop {
                    let started = Instant::now();
                    let deleted = db
                        .log_delete_batch(id.get(), batch)
                        .await
                        .map_err(LegacyError::from)?;
                    longest = longest.max(started.elapsed());
                    total += deleted;
                    if deleted < batch {
                        return Ok((total, longest));
                    }
                }
            }
            Source::Files(files) => {
                let started = Instant::now();
                files.delete(id).await?;
                Ok((0, started.elapsed()))
            }
        }
    }
}

/// Distinct lines and their range.
pub(crate) fn shape_of(entries: &[LogEntry]) -> Option<LegacyShape> {
    let first = entries.iter().map(|e| e.line).min()?;
    let last = entries.iter().map(|e| e.line).max()?;
    let mut lines: Vec<i64> = entries.iter().map(|e| e.line).collect();
    lines.sort_unstable();
    lines.dedup();
    Some(LegacyShape {
        lines: lines.len() as u64,
        first,
        last,
    })
}
