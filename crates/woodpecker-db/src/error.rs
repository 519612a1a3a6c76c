//! The crate's errors: which database (password masked), what was being done, and the
//! driver's error.

use crate::dsn::DataSource;

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {doing}: {source}{hint}")]
pub struct DbError {
    /// The database: driver, variable and data source with its password masked.
    pub what: String,
    /// What was being done.
    pub doing: &'static str,
    /// The driver's error.
    #[source]
    pub source: sqlx::Error,
    /// The fix, when the error is a known one (empty otherwise).
    hint: &'static str,
}

impl DbError {
    pub(crate) fn new(source_dsn: &DataSource, doing: &'static str, source: sqlx::Error) -> Self {
        let hint = if is_missing_table(&source) {
            " (is this Woodpecker's database? Its tables are created by the server's first start)"
        } else {
            ""
        };
        Self {
            what: format!(
                "Woodpecker's {} database ({}={})",
                source_dsn.driver, source_dsn.variable, source_dsn.masked
            ),
            doing,
            source,
            hint,
        }
    }

    /// Whether the database could not be reached at all (network, TLS, authentication,
    /// pool timeout), as opposed to a query it refused: worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        match &self.source {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Configuration(_) => true,
            sqlx::Error::Database(e) => {
                // Authentication and "database does not exist" come back as database
                // errors, but mean the server cannot be used at all yet.
                // SQLSTATEs: PostgreSQL's invalid password / authorization and unknown
                // database, MySQL's access denied; MySQL's unknown database only by text.
                let code = e.code().unwrap_or_default();
                matches!(code.as_ref(), "28P01" | "28000" | "3D000")
                    || e.message().starts_with("Unknown database")
                    || e.message().contains("unable to open database file")
            }
            _ => false,
        }
    }

    /// Whether a table the query needs does not exist.
    pub fn is_missing_table(&self) -> bool {
        is_missing_table(&self.source)
    }
}

fn is_missing_table(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            let code = e.code().unwrap_or_default();
            // SQLSTATEs of PostgreSQL's undefined_table and MySQL's ER_NO_SUCH_TABLE;
            // SQLite has only its message.
            code == "42P01" || code == "42S02" || e.message().starts_with("no such table")
        }
        _ => false,
    }
}
