//! [`Database`]: a small pool on Woodpecker's database and the queries the addon runs on its
//! tables (`log_entries`, `steps`, `server_configs`), in each driver's SQL.
//!
//! The pool connects lazily: an unreachable database fails queries, never the addon's
//! start, and the next query tries again. It stays small (the server's database serves the
//! server first) and lets idle connections go.

use std::time::Duration;

use logservice::LogEntry;
use sqlx::mysql::MySqlPool;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::dsn::{ConnectOptions, DataSource, Driver};
use crate::error::DbError;
use crate::sql::{MYSQL, POSTGRES, SQLITE};

/// Connections at most: reads and deletes of one step at a time, plus `migrate`'s jobs.
const MAX_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection (and so for an unreachable server: sqlx
/// retries refused connections until then), unless the data source sets its own timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections are closed after this, so the addon holds none between reads.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows removed per statement when deleting a step's log, so that a step with a million
/// lines does not hold the table's locks (or a huge transaction) for long.
pub const DELETE_BATCH: u64 = 10_000;

/// A pool on one of the three databases.
#[derive(Clone, Debug)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    MySql(MySqlPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$sql` to its driver's
/// statements (see `sql.rs`).
macro_rules! with_pool {
    ($db:expr, $pool:ident, $sql:ident => $body:expr) => {
        match &$db.pool {
            Pool::Sqlite($pool) => {
                let $sql = &SQLITE;
                $body
            }
            Pool::Postgres($pool) => {
                let $sql = &POSTGRES;
                $body
            }
            Pool::MySql($pool) => {
                let $sql = &MYSQL;
                $body
            }
        }
    };
}

/// What `steps` says about a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepStatus {
    /// `pending`, `running`, `success`, … as Woodpecker names them.
    pub state: String,
    /// Unix time it started, 0 if not yet.
    pub started: i64,
    /// Unix time it finished, 0 if not yet.
    pub finished: i64,
}

impl StepStatus {
    /// How long after a step finished the server still accepts its lines (the agent's
    /// last batches; the server takes appends until the pipeline ends + 5 minutes).
    pub const LATE_LINES: Duration = Duration::from_secs(5 * 60);

    /// Whether the server may still write lines of this step, at unix time `now`:
    /// Woodpecker's `Step.Running()` (pending or running), or finished less than
    /// [`Self::LATE_LINES`] ago.
    pub fn may_get_lines(&self, now: i64) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
            || (self.finished > 0
                && now.saturating_sub(self.finished) < Self::LATE_LINES.as_secs() as i64)
    }
}

/// Woodpecker's database.
#[derive(Clone, Debug)]
pub struct Database {
    source: DataSource,
    pool: Pool,
}

/// A `log_entries` row as the statements of `sql.rs` select it: id, step id, time, line,
/// data, type.
pub(crate) type EntryRow = (i64, i64, i64, i64, Option<Vec<u8>>, i64);

impl Database {
    /// A pool on `source` that connects on first use: never fails, touches nothing. Needs
    /// a Tokio runtime.
    pub fn connect_lazy(source: DataSource) -> Self {
        let timeout = source.connect_timeout.unwrap_or(ACQUIRE_TIMEOUT);
        fn options<DB: sqlx::Database>(timeout: Duration, max: u32) -> PoolOptions<DB> {
            PoolOptions::new()
                .max_connections(max)
                .min_connections(0)
                .acquire_timeout(timeout)
                .idle_timeout(IDLE_TIMEOUT)
        }
        let pool = match &source.options {
            ConnectOptions::Sqlite(o) => {
                // SQLite writes one transaction at a time, and without WAL (Woodpecker's
                // default) a reader holds off a writer's commit. Connections of one process
                // then wait for each other in SQLite's busy handler, which sleeps up to
                // 100 ms between tries: with database staging's reads and paced deletes
                // beside the appends, the append p50 went from ~35 ms to ~315 ms (BENCHMARKS.md).
                // One connection queues them in the pool instead, appends first
                // (staging/turns.rs).
                //
                // No ping before handing the connection out (sqlx pings on release anyway):
                // SQLite has no server that could have hung up, and on the one connection
                // every ping is a round trip to its worker thread that each append waits for.
                Pool::Sqlite(
                    options(timeout, 1)
                        .test_before_acquire(false)
                        .connect_lazy_with(o.clone()),
                )
            }
            ConnectOptions::Postgres(o) => {
                Pool::Postgres(options(timeout, MAX_CONNECTIONS).connect_lazy_with(o.clone()))
            }
            ConnectOptions::MySql(o) => {
                Pool::MySql(options(timeout, MAX_CONNECTIONS).connect_lazy_with(o.clone()))
            }
        };
        Self { source, pool }
    }

    /// [`Database::connect_lazy`], then [`Database::check`].
    pub async fn connect(source: DataSource) -> Result<Self, DbError> {
        let db = Self::connect_lazy(source);
        db.check().await?;
        Ok(db)
    }

    /// Whether the database answers and has Woodpecker's log table.
    pub async fn check(&self) -> Result<(), DbError> {
        with_pool!(self, pool, sql => sqlx::query(sql.check_log_table).execute(pool).await.map(drop))
            .map_err(|e| self.error("looking for the log_entries table", e))
    }

    /// The data source, password masked.
    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// The driver.
    pub fn driver(&self) -> Driver {
        self.source.driver
    }

    /// The pool, for queries of other modules (`migrate`, `gc`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        with_pool!(self, pool, _sql => pool.close().await)
    }

    /// A step's log as Woodpecker's `LogFind` reads it (`WHERE step_id = ? ORDER BY line`),
    /// one entry per line: rows a database from before Woodpecker's unique index may still
    /// hold twice are skipped after the first (lowest id), as its deduplicating migration
    /// keeps them.
    pub async fn log_find(&self, step_id: i64) -> Result<Vec<LogEntry>, DbError> {
        let rows: Vec<EntryRow> = with_pool!(self, pool, sql => {
            sqlx::query_as(sql.log_find).bind(step_id).fetch_all(pool).await
        })
        .map_err(|e| self.error("reading log_entries", e))?;
        Ok(entries(rows))
    }

    /// Up to `limit` entries of a step with a line above `after_line`, by line, one per
    /// line (see [`Database::log_find`]).
    pub async fn log_page(
        &self,
        step_id: i64,
        after_line: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, DbError> {
        let after = after_line.unwrap_or(i64::MIN);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<EntryRow> = with_pool!(self, pool, sql => {
            sqlx::query_as(sql.log_page)
                .bind(step_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(|e| self.error("reading log_entries", e))?;
        Ok(entries(rows))
    }

    /// Up to `limit` step ids with rows in `log_entries`, ascending, above `after`.
    pub async fn log_step_ids(&self, after: i64, limit: usize) -> Result<Vec<i64>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_pool!(self, pool, sql => {
            sqlx::query_scalar(sql.log_step_ids)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(|e| self.error("listing the steps in log_entries", e))
    }

    /// Deletes up to `limit` rows of a step's log; returns how many went.
    pub async fn log_delete_batch(&self, step_id: i64, limit: u64) -> Result<u64, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_pool!(self, pool, sql => {
            sqlx::query(sql.log_delete_batch)
                .bind(step_id)
                .bind(limit)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(|e| self.error("deleting from log_entries", e))
    }

    /// Deletes a step's whole log, [`DELETE_BATCH`] rows per statement; returns the rows.
    pub async fn log_delete(&self, step_id: i64) -> Result<u64, DbError> {
        let mut total = 0;
        loop {
            let deleted = self.log_delete_batch(step_id, DELETE_BATCH).await?;
            total += deleted;
            if deleted < DELETE_BATCH {
                return Ok(total);
            }
        }
    }

    /// The step's row in `steps`, or `None` when it does not exist (any more).
    pub async fn step_status(&self, step_id: i64) -> Result<Option<StepStatus>, DbError> {
        let row: Option<(String, i64, i64)> = with_pool!(self, pool, sql => {
            sqlx::query_as(sql.step_status).bind(step_id).fetch_optional(pool).await
        })
        .map_err(|e| self.error("reading steps", e))?;
        Ok(row.map(|(state, started, finished)| StepStatus {
            state,
            started,
            finished,
        }))
    }

    /// A value of Woodpecker's `server_configs` table, `None` when the key is not there.
    pub async fn server_config(&self, key: &str) -> Result<Option<String>, DbError> {
        with_pool!(self, pool, sql => {
            sqlx::query_scalar(sql.server_config).bind(key).fetch_optional(pool).await
        })
        .map_err(|e| self.error("reading server_configs", e))
    }

    /// Wraps a driver error with the database's name and what was being done.
    pub(crate) fn error(&self, doing: &'static str, source: sqlx::Error) -> DbError {
        DbError::new(&self.source, doing, source)
    }
}

/// Rows ordered by (line, id) to entries, the first row of each line kept.
pub(crate) fn entries(rows: Vec<EntryRow>) -> Vec<LogEntry> {
    let mut out: Vec<LogEntry> = Vec::with_capacity(rows.len());
    for (id, step_id, time, line, data, entry_type) in rows {
        if out.last().is_some_and(|last| last.line == line) {
            continue;
        }
        out.push(LogEntry {
            id,
            step_id,
            time,
            line,
            data,
            entry_type,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_is_pending_or_running_or_just_finished() {
        let status = |state: &str, finished| StepStatus {
            state: state.into(),
            started: 1,
            finished,
        };
        let now = 1_000_000;
        assert!(status("running", 0).may_get_lines(now));
        assert!(status("pending", 0).may_get_lines(now));
        assert!(status("success", now - 10).may_get_lines(now));
        assert!(!status("success", now - 301).may_get_lines(now));
        assert!(!status("killed", 0).may_get_lines(now));
    }

    #[test]
    fn the_first_row_of_a_line_wins() {
        let rows = vec![
            (1, 5, 0, 0, Some(b"a".to_vec()), 0),
            (2, 5, 0, 1, None, 0),
            (9, 5, 0, 1, Some(b"dup".to_vec()), 0),
            (3, 5, 0, 2, Some(Vec::new()), 1),
        ];
        let got = entries(rows);
        assert_eq!(got.len(), 3);
        assert_eq!((got[1].id, got[1].data.clone()), (2, None));
        assert_eq!(got[2].data, Some(Vec::new()));
    }
}
