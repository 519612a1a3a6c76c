//! The queries `migrate` needs beyond the legacy-log trait: how many lines a step has in
//! `log_entries`, and what the whole table holds (for the progress bar).

use crate::db::{Database, Pool};
use crate::error::DbError;

/// What `log_entries` holds for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogShape {
    /// Distinct line numbers (a database from before Woodpecker's unique index may hold a
    /// line twice; it is read once).
    pub lines: u64,
    /// The smallest line.
    pub first: i64,
    /// The largest line.
    pub last: i64,
}

/// Rows and steps in `log_entries`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogTotals {
    /// Rows.
    pub rows: u64,
    /// Distinct step ids.
    pub steps: u64,
}

const SHAPE_SQLITE: &str =
    "SELECT COUNT(DISTINCT line), MIN(line), MAX(line) FROM log_entries WHERE step_id = ?";
const SHAPE_POSTGRES: &str = "SELECT CAST(COUNT(DISTINCT line) AS BIGINT), \
     CAST(MIN(line) AS BIGINT), CAST(MAX(line) AS BIGINT) FROM log_entries WHERE step_id = $1";
const SHAPE_MYSQL: &str = "SELECT CAST(COUNT(DISTINCT line) AS SIGNED), \
     CAST(MIN(line) AS SIGNED), CAST(MAX(line) AS SIGNED) FROM log_entries WHERE step_id = ?";

const TOTALS_SQLITE: &str = "SELECT COUNT(*), COUNT(DISTINCT step_id) FROM log_entries";
const TOTALS_POSTGRES: &str = "SELECT CAST(COUNT(*) AS BIGINT), \
     CAST(COUNT(DISTINCT step_id) AS BIGINT) FROM log_entries";
const TOTALS_MYSQL: &str = "SELECT CAST(COUNT(*) AS SIGNED), \
     CAST(COUNT(DISTINCT step_id) AS SIGNED) FROM log_entries";

type ShapeRow = (i64, Option<i64>, Option<i64>);

impl Database {
    /// The step's distinct lines and their range, `None` when it has no row.
    pub async fn log_shape(&self, step_id: i64) -> Result<Option<LogShape>, DbError> {
        let row: ShapeRow = match self.pool() {
            Pool::Sqlite(pool) => {
                sqlx::query_as(SHAPE_SQLITE)
                    .bind(step_id)
                    .fetch_one(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(SHAPE_POSTGRES)
                    .bind(step_id)
                    .fetch_one(pool)
                    .await
            }
            Pool::MySql(pool) => {
                sqlx::query_as(SHAPE_MYSQL)
                    .bind(step_id)
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(|e| self.error("counting a step's rows in log_entries", e))?;
        Ok(match row {
            (lines, Some(first), Some(last)) if lines > 0 => Some(LogShape {
                lines: lines as u64,
                first,
                last,
            }),
            _ => None,
        })
    }

    /// Rows and steps in `log_entries` (one pass over the table's index).
    pub async fn log_totals(&self) -> Result<LogTotals, DbError> {
        let (rows, steps): (i64, i64) = match self.pool() {
            Pool::Sqlite(pool) => sqlx::query_as(TOTALS_SQLITE).fetch_one(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(TOTALS_POSTGRES).fetch_one(pool).await,
            Pool::MySql(pool) => sqlx::query_as(TOTALS_MYSQL).fetch_one(pool).await,
        }
        .map_err(|e| self.error("counting log_entries", e))?;
        Ok(LogTotals {
            rows: rows.max(0) as u64,
            steps: steps.max(0) as u64,
        })
    }
}
