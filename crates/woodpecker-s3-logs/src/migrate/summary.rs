//! What `migrate` tells the admin at the end: counts per outcome, failures, and how to give
//! the space of deleted rows back to the file system.

use std::fmt::Write;
use std::time::Duration;

use woodpecker_db::{Database, Driver};

use super::step::{Kind, Report};
use crate::progress::human_bytes;

/// Failures listed one by one; beyond this, only counted.
const LISTED_FAILURES: usize = 20;

/// The counts of a run.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    dry_run: bool,
    delete_source: bool,
    pub(crate) elapsed: Duration,
    migrated: u64,
    migrated_lines: u64,
    bytes: u64,
    merged: u64,
    already: u64,
    already_lines: u64,
    running: Vec<i64>,
    deleted_steps: u64,
    deleted_steps_lines: u64,
    empty: u64,
    pub(crate) failed: u64,
    failures: Vec<String>,
    rows_deleted: u64,
    files_deleted: u64,
    longest_delete: Duration,
}

impl Summary {
    pub(crate) fn new(dry_run: bool, delete_source: bool) -> Self {
        Self {
            dry_run,
            delete_source,
            ..Self::default()
        }
    }

    /// Counts one step.
    pub(crate) fn add(&mut self, report: Report) {
        self.rows_deleted += report.rows_deleted;
        self.files_deleted += report.files_deleted;
        self.longest_delete = self.longest_delete.max(report.longest_delete);
        match report.kind {
            Kind::Migrated {
                lines,
                bytes,
                merged,
            } => {
                self.migrated += 1;
                self.migrated_lines += lines;
                self.bytes += bytes;
                self.merged += u64::from(merged);
            }
            Kind::AlreadyArchived { lines } => {
                self.already += 1;
                self.already_lines += lines;
            }
            Kind::Running => self.running.push(report.id),
            Kind::Deleted { lines } => {
                self.deleted_steps += 1;
                self.deleted_steps_lines += lines;
            }
            Kind::Empty => self.empty += 1,
            Kind::Failed(text) => {
                self.failed += 1;
                if self.failures.len() < LISTED_FAILURES {
                    self.failures.push(format!("step {}: {text}", report.id));
                }
            }
        }
    }

    /// The text printed at the end.
    pub(crate) fn report(&self, database: Option<&Database>) -> String {
        let mut out = String::new();
        let seconds = self.elapsed.as_secs_f64().max(0.001);
        let verb = if self.dry_run {
            "would be migrated"
        } else {
            "migrated"
        };
        let _ = writeln!(
            out,
            "migrate{}: {:.1}s",
            if self.dry_run {
                " --dry-run (nothing was written or deleted)"
            } else {
                ""
            },
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  steps {verb}: {} ({} lines{}, {:.0} lines/s)",
            self.migrated,
            self.migrated_lines,
            if self.dry_run {
                String::new()
            } else {
                format!(
                    ", {} written, {} merged with an existing object",
                    human_bytes(self.bytes),
                    self.merged
                )
            },
            (self.migrated_lines + self.already_lines) as f64 / seconds
        );
        let _ = writeln!(
            out,
            "  steps already archived: {} ({} lines)",
            self.already, self.already_lines
        );
        if !self.running.is_empty() {
            let shown: Vec<String> = self.running.iter().take(20).map(i64::to_string).collect();
            let _ = writeln!(
                out,
                "  steps left alone because Woodpecker may still write to them: {} (ids {}{}); run migrate again when they have finished",
                self.running.len(),
                shown.join(", "),
                if self.running.len() > 20 { ", …" } else { "" }
            );
        }
        if self.deleted_steps > 0 {
            let _ = writeln!(
                out,
                "  steps no longer in Woodpecker (their pipelines were deleted), left alone: {} ({} lines nobody can read)",
                self.deleted_steps, self.deleted_steps_lines
            );
        }
        if self.empty > 0 {
            let _ = writeln!(out, "  steps without lines: {}", self.empty);
        }
        if self.failed > 0 {
            let _ = writeln!(out, "  steps failed: {}", self.failed);
            for failure in &self.failures {
                let _ = writeln!(out, "    {failure}");
            }
        }
        if self.delete_source && !self.dry_run {
            let _ = writeln!(
                out,
                "  legacy copies deleted: {} rows, {} files (longest delete statement {:?})",
                self.rows_deleted, self.files_deleted, self.longest_delete
            );
            if self.rows_deleted > 0
                && let Some(db) = database
            {
                out.push_str(&reclaim_advice(db.driver()));
            }
        }
        out
    }
}

/// How to give the space of deleted rows back: databases keep it for reuse.
pub(crate) fn reclaim_advice(driver: Driver) -> String {
    let how = match driver {
        Driver::Sqlite => {
            "SQLite keeps the pages of deleted rows inside the file. To shrink it, stop the Woodpecker server (VACUUM needs the database to itself and free disk space about the size of the file), then:\n    sqlite3 /var/lib/woodpecker/woodpecker.sqlite 'VACUUM;'"
        }
        Driver::Postgres => {
            "PostgreSQL reuses the space of deleted rows but does not return it. To return it: `VACUUM FULL log_entries;` (locks the table while it rewrites it: stop the server or pick a quiet hour), or without a long lock, `pg_repack --table=log_entries <database>` (the pg_repack extension)."
        }
        Driver::MySql => {
            "MySQL/MariaDB (InnoDB) reuses the space of deleted rows but does not return it. To return it: `OPTIMIZE TABLE log_entries;` (rebuilds the table online with InnoDB; needs free disk space about the size of the table)."
        }
    };
    format!("  The database file does not shrink by itself. {how}\n")
}
