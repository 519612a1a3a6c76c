//! Database staging (`WOODPECKER_LOG_STORE_S3_STAGING=database`): Woodpecker's database
//! answers, has `log_entries`, and whether that table has Woodpecker's unique index on
//! `(step_id, line)`.

use woodpecker_db::staging::LogEntriesStaging;
use woodpecker_db::{DataSource, Database};

use super::report::{CheckId, Report};
use crate::variables::STAGING;

/// The database variables, for fixes.
const DATABASE_VARS: &str = "WOODPECKER_DATABASE_DRIVER and WOODPECKER_DATABASE_DATASOURCE (or WOODPECKER_DATABASE_DATASOURCE_FILE)";

/// Runs the three checks; returns the database when staging can use it (it answers and has
/// `log_entries`), for the round trip.
pub(super) async fn check(report: &mut Report, source: &DataSource) -> Option<Database> {
    let db = Database::connect_lazy(source.clone());
    match db.check().await {
        Ok(()) => {
            report.pass(CheckId::Database, format!("{source} answers"));
            report.pass(
                CheckId::LogEntries,
                format!("log_entries found in {source}: running steps' lines are staged there"),
            );
        }
        Err(e) if e.is_missing_table() => {
            report.pass(CheckId::Database, format!("{source} answers"));
            report.fail(
                CheckId::LogEntries,
                format!("no log_entries table: {e}"),
                format!(
                    "point {DATABASE_VARS} at the Woodpecker server's own database, exactly as the server has them (its first start creates log_entries), or set {}=spool",
                    STAGING.name
                ),
            );
            report.skip(CheckId::UniqueLines, "no log_entries table");
            db.close().await;
            return None;
        }
        Err(e) => {
            report.fail(
                CheckId::Database,
                e.to_string(),
                format!(
                    "make the database reachable from here with the Woodpecker server's own {DATABASE_VARS} (the addon inherits the server's environment: run doctor where the server runs); with {}=database every LogAppend needs it",
                    STAGING.name
                ),
            );
            report.skip(CheckId::LogEntries, "the database does not answer");
            report.skip(CheckId::UniqueLines, "the database does not answer");
            db.close().await;
            return None;
        }
    }
    match LogEntriesStaging::new(db.clone()).has_unique_lines().await {
        Ok(true) => report.pass(
            CheckId::UniqueLines,
            "log_entries is unique on (step_id, line) (UQE_log_entries_s): appends skip lines already staged with one statement",
        ),
        Ok(false) => report.warn(
            CheckId::UniqueLines,
            "log_entries has no unique index on (step_id, line) (Woodpecker before v3.15): appends work, but look for the lines already staged first, a slower path that costs the database more per batch",
            "upgrade Woodpecker to v3.15 or later: its migration adds the unique index UQE_log_entries_s on log_entries (step_id, line)",
        ),
        Err(e) => {
            report.fail(
                CheckId::UniqueLines,
                format!("cannot tell whether log_entries is unique on (step_id, line), so appends cannot choose their statement and fail: {e}"),
                "let this database user read the catalog (information_schema on PostgreSQL and MySQL/MariaDB, sqlite_master on SQLite), as the Woodpecker server's own user can",
            );
            db.close().await;
            return None;
        }
    }
    Some(db)
}
