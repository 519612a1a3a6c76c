//! [`LogEntriesStaging::append`]: a batch into `log_entries` as Woodpecker's database
//! store writes it, skipping lines the step already has.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use logservice::LogEntry;

use super::sql::BINDS_PER_ROW;
use super::{LogEntriesStaging, StagingError, fits_column};
use crate::db::Pool;

/// Bytes of `data` one insert statement carries at most (a single longer line gets a
/// statement of its own): under MySQL's `max_allowed_packet` (16 MiB by default on
/// MariaDB, 4 MiB on MySQL 5.7 and 64 MiB on 8.0, for the whole statement).
const STATEMENT_BYTES: usize = 3 << 20;

impl LogEntriesStaging {
    /// Stores a step's batch: every row or none, committed before this returns, in as few
    /// multi-row `INSERT`s as the driver's bind limit and [`STATEMENT_BYTES`] allow (one
    /// statement runs alone, several in one transaction). A line the step already has is skipped row by row
    /// (`INSERT OR IGNORE`, `ON CONFLICT DO NOTHING`, `INSERT IGNORE` against Woodpecker's
    /// unique `(step_id, line)` index), so a retried batch that overlaps stored lines
    /// keeps its new ones and the first write of a line wins. Returns the rows added.
    ///
    /// Rows are Woodpecker's: `step_id` is `step_id` (whatever the entries say), `id`
    /// comes from the database, `created` is now (what xorm's `created` tag writes), the
    /// rest is the entry's. Nothing is written when the step id or a value is out of
    /// range for the schema.
    pub async fn append(&self, step_id: i64, batch: &[LogEntry]) -> Result<u64, StagingError> {
        if step_id <= 0 {
            return Err(StagingError::InvalidStepId { step_id });
        }
        let driver = self.db.driver();
        for entry in batch {
            for (column, value) in [("line", entry.line), ("type", entry.entry_type)] {
                if !fits_column(driver, value) {
                    return Err(StagingError::OutOfRange {
                        step_id,
                        column,
                        value,
                        driver,
                    });
                }
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let unique = self
            .has_unique_lines()
            .await
            .map_err(|source| StagingError::Step { step_id, source })?;
        let _turn = self.turns.append();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let statements = self.statements();
        let max_rows = statements.max_binds / BINDS_PER_ROW;

        // One statement's rows, bound, run on `$executor`; gives the rows it added.
        macro_rules! insert {
            ($executor:expr, $chunk:expr) => {{
                let chunk: &[&LogEntry] = $chunk;
                let sql = statements.insert(chunk.len(), unique);
                let mut query = sqlx::query(&sql);
                for entry in chunk {
                    query = query
                        .bind(step_id)
                        .bind(entry.time)
                        .bind(entry.line)
                        .bind(entry.data.as_deref())
                        .bind(created)
                        .bind(entry.entry_type);
                }
                query.execute($executor).await?.rows_affected()
            }};
        }
        macro_rules! append {
            ($pool:expr, $begin:expr) => {
                async {
                    let all: Vec<&LogEntry> = batch.iter().collect();
                    if unique && statement_chunks(&all, max_rows).nth(1).is_none() {
                        // One statement is atomic by itself: no BEGIN and COMMIT round
                        // trips (measured: they cost the p50 more than the insert).
                        return Ok(insert!($pool, &all));
                    }
                    let mut tx = $pool.begin_with($begin).await?;
                    let rows: Vec<&LogEntry> = if unique {
                        all
                    } else {
                        // No unique index (Woodpecker before v3.15): skip what the step has
                        // by query, and repeats within the batch. Two appends of one step at
                        // the same moment could still both write a line; reads keep its
                        // first row.
                        let first = batch.iter().map(|e| e.line).min().unwrap_or_default();
                        let last = batch.iter().map(|e| e.line).max().unwrap_or_default();
                        let existing: Vec<i64> = sqlx::query_scalar(statements.existing_lines)
                            .bind(step_id)
                            .bind(first)
                            .bind(last)
                            .fetch_all(&mut *tx)
                            .await?;
                        let mut seen: HashSet<i64> = existing.into_iter().collect();
                        batch.iter().filter(|e| seen.insert(e.line)).collect()
                    };
                    let mut added = 0;
                    for chunk in statement_chunks(&rows, max_rows) {
                        added += insert!(&mut *tx, chunk);
                    }
                    tx.commit().await?;
                    Ok::<u64, sqlx::Error>(added)
                }
                .await
            };
        }
        match self.db.pool() {
            // IMMEDIATE: take the write lock at once (waiting up to the busy timeout)
            // rather than failing to upgrade a read in the middle.
            Pool::Sqlite(pool) => append!(pool, "BEGIN IMMEDIATE"),
            Pool::Postgres(pool) => append!(pool, "BEGIN"),
            Pool::MySql(pool) => append!(pool, "BEGIN"),
        }
        .map_err(|e| self.step_error(step_id, "appending to log_entries", e))
    }
}

/// `rows` cut into statements of at most `max_rows` rows and [`STATEMENT_BYTES`] bytes of
/// data (a longer line alone).
fn statement_chunks<'a>(
    rows: &'a [&'a LogEntry],
    max_rows: usize,
) -> impl Iterator<Item = &'a [&'a LogEntry]> + 'a {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len() && end < max_rows {
            let size = rest[end].data.as_ref().map_or(0, Vec::len);
            if end > 0 && bytes + size > STATEMENT_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> LogEntry {
        LogEntry {
            data: Some(vec![b'x'; size]),
            ..LogEntry::default()
        }
    }

    #[test]
    fn statements_respect_rows_and_bytes() {
        let small: Vec<LogEntry> = (0..12_000).map(|_| entry(10)).collect();
        let refs: Vec<&LogEntry> = small.iter().collect();
        let sizes: Vec<usize> = statement_chunks(&refs, 5461).map(<[_]>::len).collect();
        assert_eq!(sizes, [5461, 5461, 1078]);

        let big = [
            entry(STATEMENT_BYTES + 1),
            entry(1),
            entry(STATEMENT_BYTES - 1),
            entry(2),
        ];
        let refs: Vec<&LogEntry> = big.iter().collect();
        let sizes: Vec<usize> = statement_chunks(&refs, 100).map(<[_]>::len).collect();
        assert_eq!(sizes, [1, 2, 1]);
    }
}
