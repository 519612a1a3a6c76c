//! Database staging: the lines of running steps kept in Woodpecker's own `log_entries`
//! table, in exactly the rows its database store writes, until the step's archive is
//! verified (`WOODPECKER_LOG_STORE_S3_STAGING=database`; see `STAGING.md` for the design).
//!
//! - [`LogEntriesStaging::append`]: one transaction per batch, multi-row inserts that
//!   skip lines the step already has (first write wins), committed before it returns.
//! - [`LogEntriesStaging::read`]: a step's rows by line as a stream, fetched in pages
//!   bounded in rows and bytes, so neither memory nor a database lock grows with the step.
//! - [`LogEntriesStaging::staged_steps`]: which steps have rows (recovery, idle sweeper).
//! - [`LogEntriesStaging::delete_archived`]: deletes the rows of the lines an archive
//!   holds ([`LineRanges`]), in batches; rows of other lines survive.
//!
//! The archiver's reads and deletes run one at a time and let waiting appends go first
//! (`turns.rs`).

mod insert;
mod sql;
mod turns;

use std::collections::VecDeque;
use std::time::Duration;

use engine::table::{EntryStream, TableError, TableStaging};
use futures_util::{Stream, TryStreamExt};
use logservice::{LogEntry, StepId};
use tokio::sync::OnceCell;

use crate::db::{Database, EntryRow, Pool, entries};
use crate::dsn::Driver;
use crate::error::DbError;
use crate::sql::{MYSQL, POSTGRES, SQLITE};
pub use engine::table::{LineRanges, StagedStep};
use sql::StagingStatements;
use turns::Turns;

/// Rows a read fetches per statement at most.
pub const READ_PAGE_ROWS: usize = 1000;
/// A read page ends after the row that brings it to this many bytes of `data`: with
/// lines of up to the host's 1 MiB batch, a page holds at most ~9 MiB.
pub const READ_PAGE_BYTES: usize = 8 << 20;

/// A failed staging operation: which step, what was being done, and why.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The step id is not one Woodpecker gives out.
    #[error(
        "step id {step_id} is not a Woodpecker step id (they start at 1): \
         nothing was written to log_entries"
    )]
    InvalidStepId {
        /// The id.
        step_id: i64,
    },
    /// A value does not fit its `log_entries` column on this driver.
    #[error(
        "step {step_id}: {column} {value} does not fit log_entries.{column} (a 32-bit \
         INTEGER in Woodpecker's {driver} schema): nothing of this batch was written"
    )]
    OutOfRange {
        /// The step.
        step_id: i64,
        /// `line` or `type`.
        column: &'static str,
        /// The value.
        value: i64,
        /// The driver.
        driver: Driver,
    },
    /// The database failed a step's operation.
    #[error("step {step_id}: {source}")]
    Step {
        /// The step.
        step_id: i64,
        /// The database error (database, what was being done, the driver's error).
        #[source]
        source: DbError,
    },
    /// The database failed to list the staged steps.
    #[error("listing the steps staged in log_entries after step {after}: {source}")]
    List {
        /// Where the page started.
        after: i64,
        /// The database error.
        #[source]
        source: DbError,
    },
}

impl StagingError {
    /// Whether the database could not be reached (worth retrying later), as opposed to
    /// input or a statement it refused.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Step { source, .. } | Self::List { source, .. } => source.is_unavailable(),
            Self::InvalidStepId { .. } | Self::OutOfRange { .. } => false,
        }
    }
}

/// How archived rows are deleted: statements of at most `batch_lines` lines, with
/// `pause` between them so that appends of running steps get the table in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletePacing {
    /// Lines (so rows) per `DELETE` statement, at least 1.
    pub batch_lines: u64,
    /// Sleep between statements.
    pub pause: Duration,
}

impl Default for DeletePacing {
    /// 5 000 rows, then 200 ms: ~20 000 rows/s, and the append p99 of running steps on
    /// SQLite and MariaDB stays near its level without deletes; unpaced deletes raised it
    /// 3-10x (SQLite serialises all writers). Measured: STAGING.md.
    fn default() -> Self {
        Self {
            batch_lines: 5_000,
            pause: Duration::from_millis(200),
        }
    }
}

/// Woodpecker's `log_entries` table as the staging area of running steps.
#[derive(Debug)]
pub struct LogEntriesStaging {
    db: Database,
    /// Whether `(step_id, line)` has Woodpecker's unique index (from v3.15 on): found out
    /// on first append, so an unreachable database does not fail the start.
    unique_lines: OnceCell<bool>,
    /// Appends go before the archiver's statements, which run one at a time.
    turns: Turns,
}

impl LogEntriesStaging {
    /// Staging on `db` (nothing is queried yet).
    pub fn new(db: Database) -> Self {
        Self {
            turns: Turns::default(),
            db,
            unique_lines: OnceCell::new(),
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn statements(&self) -> &'static StagingStatements {
        StagingStatements::of(self.db.driver())
    }

    fn step_error(&self, step_id: i64, doing: &'static str, source: sqlx::Error) -> StagingError {
        StagingError::Step {
            step_id,
            source: self.db.error(doing, source),
        }
    }

    /// Whether `log_entries` has a unique index on exactly `(step_id, line)`, as
    /// Woodpecker creates from v3.15 on (`UQE_log_entries_s`). Older schemas have only
    /// the plain `step_id` index; appends then skip existing lines by query instead.
    pub async fn has_unique_lines(&self) -> Result<bool, DbError> {
        self.unique_lines
            .get_or_try_init(|| async {
                let sql = self.statements().unique_index_columns;
                let rows: Vec<(String, String)> = match self.db.pool() {
                    Pool::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
                    Pool::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
                    Pool::MySql(pool) => sqlx::query_as(sql).fetch_all(pool).await,
                }
                .map_err(|e| {
                    self.db
                        .error("looking for the unique index on log_entries", e)
                })?;
                Ok(unique_on_step_and_line(&rows))
            })
            .await
            .copied()
    }

    /// A step's rows ordered by line, one per line (the lowest id where an old schema
    /// holds a line twice), each as the [`LogEntry`] Woodpecker's `LogFind` returns
    /// (`id` is the row's). Fetched in pages of at most [`READ_PAGE_ROWS`] rows and about
    /// [`READ_PAGE_BYTES`] bytes, each page its own short statement: memory stays bounded
    /// for a multi-GiB step, and no lock or snapshot is held while the consumer (an
    /// upload) is slow, which matters most for SQLite without WAL, where a reader blocks
    /// every writer of the server. Rows appended meanwhile with lines past the page read
    /// last are included.
    pub fn read(
        &self,
        step_id: i64,
    ) -> impl Stream<Item = Result<LogEntry, StagingError>> + Send + '_ {
        self.read_pages(step_id, false)
    }

    /// [`LogEntriesStaging::read`] for the archiver: each page waits for its background
    /// turn (see `turns.rs`).
    pub fn read_in_background(
        &self,
        step_id: i64,
    ) -> impl Stream<Item = Result<LogEntry, StagingError>> + Send + '_ {
        self.read_pages(step_id, true)
    }

    fn read_pages(
        &self,
        step_id: i64,
        background: bool,
    ) -> impl Stream<Item = Result<LogEntry, StagingError>> + Send + '_ {
        struct State {
            after: Option<i64>,
            page: VecDeque<LogEntry>,
            done: bool,
        }
        let start = State {
            after: None,
            page: VecDeque::new(),
            done: false,
        };
        futures_util::stream::try_unfold(start, move |mut state| async move {
            if step_id <= 0 {
                return Err(StagingError::InvalidStepId { step_id });
            }
            if state.page.is_empty() && !state.done {
                let page = self.read_page(step_id, state.after, background).await?;
                state.done = page.rows < READ_PAGE_ROWS && !page.bytes_capped;
                state.after = page.entries.last().map(|e| e.line).or(state.after);
                state.page = page.entries.into();
            }
            Ok(state.page.pop_front().map(|entry| (entry, state)))
        })
    }

    /// One page of [`LogEntriesStaging::read`]: rows are taken from the statement's
    /// stream until the page is full, then the statement is dropped.
    async fn read_page(
        &self,
        step_id: i64,
        after: Option<i64>,
        background: bool,
    ) -> Result<Page, StagingError> {
        let _turn = if background {
            Some(self.turns.background().await)
        } else {
            None
        };
        let after = after.unwrap_or(i64::MIN);
        let limit = READ_PAGE_ROWS as i64;
        macro_rules! page {
            ($pool:expr, $sql:expr) => {
                async {
                    let mut rows = sqlx::query_as::<_, EntryRow>($sql.log_page)
                        .bind(step_id)
                        .bind(after)
                        .bind(limit)
                        .fetch($pool);
                    let mut page = Vec::new();
                    let mut bytes = 0;
                    let mut bytes_capped = false;
                    while let Some(row) = rows.try_next().await? {
                        bytes += row.4.as_ref().map_or(0, Vec::len);
                        page.push(row);
                        if bytes >= READ_PAGE_BYTES {
                            bytes_capped = true;
                            break;
                        }
                    }
                    Ok::<_, sqlx::Error>((page, bytes_capped))
                }
                .await
            };
        }
        let (rows, bytes_capped) = match self.db.pool() {
            Pool::Sqlite(pool) => page!(pool, SQLITE),
            Pool::Postgres(pool) => page!(pool, POSTGRES),
            Pool::MySql(pool) => page!(pool, MYSQL),
        }
        .map_err(|e| self.step_error(step_id, "reading log_entries", e))?;
        Ok(Page {
            rows: rows.len(),
            entries: entries(rows),
            bytes_capped,
        })
    }

    /// Up to `limit` steps with rows in `log_entries`, by ascending id above `after`
    /// (start at 0; continue after the last one returned). Rows of step ids below 1
    /// (never Woodpecker's) are not listed.
    pub async fn staged_steps(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StagedStep>, StagingError> {
        let sql = self.statements().staged_steps;
        let bound_after = after.max(0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, i64, i64, i64)> = match self.db.pool() {
            Pool::Sqlite(pool) => {
                sqlx::query_as(sql)
                    .bind(bound_after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(bound_after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
            Pool::MySql(pool) => {
                sqlx::query_as(sql)
                    .bind(bound_after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(|e| StagingError::List {
            after,
            source: self.db.error("listing the steps in log_entries", e),
        })?;
        Ok(rows
            .into_iter()
            .map(|(step_id, rows, max_id, last_created)| StagedStep {
                step_id,
                rows,
                max_id,
                last_created,
            })
            .collect())
    }

    /// Deletes a step's rows whose line is in `archived` (the lines of a verified
    /// archive), one `DELETE … WHERE step_id = ? AND line BETWEEN ? AND ?` per
    /// `pacing.batch_lines` lines, pausing between them; returns the rows deleted.
    ///
    /// By line, not by "id up to the largest id read": PostgreSQL and MySQL hand out ids
    /// when a row is inserted, not when it commits, so a batch committing after the read
    /// can hold ids below ones the read saw. Any row of an archived line is redundant
    /// (the archive holds that line's first write), and rows of other lines stay.
    pub async fn delete_archived(
        &self,
        step_id: i64,
        archived: &LineRanges,
        pacing: DeletePacing,
    ) -> Result<u64, StagingError> {
        if step_id <= 0 {
            return Err(StagingError::InvalidStepId { step_id });
        }
        let sql = self.statements().delete_lines;
        let mut deleted = 0;
        for (i, (first, last)) in archived.chunks(pacing.batch_lines).enumerate() {
            if i > 0 && !pacing.pause.is_zero() {
                tokio::time::sleep(pacing.pause).await;
            }
            let _turn = self.turns.background().await;
            let done = match self.db.pool() {
                Pool::Sqlite(pool) => sqlx::query(sql)
                    .bind(step_id)
                    .bind(first)
                    .bind(last)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected()),
                Pool::Postgres(pool) => sqlx::query(sql)
                    .bind(step_id)
                    .bind(first)
                    .bind(last)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected()),
                Pool::MySql(pool) => sqlx::query(sql)
                    .bind(step_id)
                    .bind(first)
                    .bind(last)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected()),
            }
            .map_err(|e| self.step_error(step_id, "deleting archived rows from log_entries", e))?;
            deleted += done;
        }
        Ok(deleted)
    }

    /// Deletes all of a step's rows (`LogDelete`), in batches; returns the rows.
    pub async fn delete_step(&self, step_id: i64) -> Result<u64, StagingError> {
        if step_id <= 0 {
            return Err(StagingError::InvalidStepId { step_id });
        }
        self.db
            .log_delete(step_id)
            .await
            .map_err(|source| StagingError::Step { step_id, source })
    }
}

/// A page of rows read.
struct Page {
    /// Rows fetched (duplicate rows of a line included).
    rows: usize,
    /// One entry per line.
    entries: Vec<LogEntry>,
    /// Whether it ended on the byte limit rather than the row limit or the last row.
    bytes_capped: bool,
}

/// Whether one of the unique indexes (rows of index name, column name) covers exactly
/// `step_id` and `line`.
fn unique_on_step_and_line(rows: &[(String, String)]) -> bool {
    let mut names: Vec<&str> = rows.iter().map(|(index, _)| index.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.iter().any(|name| {
        let mut columns: Vec<String> = rows
            .iter()
            .filter(|(index, _)| index == name)
            .map(|(_, column)| column.to_ascii_lowercase())
            .collect();
        columns.sort_unstable();
        columns == ["line", "step_id"]
    })
}

/// Whether `value` fits a 32-bit `INTEGER` column, which `line` and `type` are on
/// PostgreSQL and MySQL (SQLite's integers are 64-bit).
fn fits_column(driver: Driver, value: i64) -> bool {
    driver == Driver::Sqlite || i32::try_from(value).is_ok()
}

/// Staging for [`engine::TableEngine`]: the operations above, deletes paced as
/// [`DeletePacing::default`] says.
#[async_trait::async_trait]
impl TableStaging for LogEntriesStaging {
    fn describe(&self) -> String {
        format!(
            "log_entries of Woodpecker's {} database ({})",
            self.db.driver(),
            self.db.source().masked
        )
    }

    async fn append(&self, step: StepId, entries: &[LogEntry]) -> Result<u64, TableError> {
        LogEntriesStaging::append(self, step.get(), entries)
            .await
            .map_err(table_error)
    }

    /// The entries as the host sent them: without the row's `id`, which the host never
    /// sets (0) and the spool does not keep either, so a step reads the same whichever
    /// staging held it, before and after archiving.
    fn read(&self, step: StepId) -> EntryStream<'_> {
        entry_stream(LogEntriesStaging::read(self, step.get()))
    }

    fn read_in_background(&self, step: StepId) -> EntryStream<'_> {
        entry_stream(LogEntriesStaging::read_in_background(self, step.get()))
    }

    async fn staged_steps(&self, after: i64, limit: usize) -> Result<Vec<StagedStep>, TableError> {
        LogEntriesStaging::staged_steps(self, after, limit)
            .await
            .map_err(table_error)
    }

    async fn delete_lines(&self, step: StepId, lines: &LineRanges) -> Result<u64, TableError> {
        self.delete_archived(step.get(), lines, DeletePacing::default())
            .await
            .map_err(table_error)
    }

    async fn delete_step(&self, step: StepId) -> Result<u64, TableError> {
        LogEntriesStaging::delete_step(self, step.get())
            .await
            .map_err(table_error)
    }
}

/// A read's rows as the engine's entries (see [`TableStaging::read`] above for the id).
fn entry_stream<'a>(
    rows: impl Stream<Item = Result<LogEntry, StagingError>> + Send + 'a,
) -> EntryStream<'a> {
    Box::pin(
        rows.map_ok(|entry| LogEntry { id: 0, ..entry })
            .map_err(table_error),
    )
}

fn table_error(error: StagingError) -> TableError {
    let unavailable = error.is_unavailable();
    TableError::new(error, unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_index_on_exactly_step_and_line_counts() {
        let row = |i: &str, c: &str| (i.to_owned(), c.to_owned());
        assert!(unique_on_step_and_line(&[
            row("UQE_log_entries_s", "step_id"),
            row("UQE_log_entries_s", "line"),
        ]));
        assert!(!unique_on_step_and_line(&[row("other", "step_id")]));
        assert!(!unique_on_step_and_line(&[
            row("a", "step_id"),
            row("b", "line"),
        ]));
        assert!(!unique_on_step_and_line(&[
            row("wide", "step_id"),
            row("wide", "line"),
            row("wide", "type"),
        ]));
    }

    #[test]
    fn line_and_type_are_32_bit_outside_sqlite() {
        assert!(fits_column(Driver::Sqlite, i64::MAX));
        assert!(fits_column(Driver::Postgres, i64::from(i32::MAX)));
        assert!(!fits_column(Driver::Postgres, i64::from(i32::MAX) + 1));
        assert!(!fits_column(Driver::MySql, i64::from(i32::MIN) - 1));
    }
}
