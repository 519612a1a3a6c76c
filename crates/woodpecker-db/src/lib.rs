//! Woodpecker's own stores, read as Woodpecker writes them: its database (SQLite,
//! PostgreSQL, MySQL/MariaDB, through sqlx) and its file log store directory.
//!
//! - [`dsn`]: `WOODPECKER_DATABASE_DRIVER` and the data source string in the Go drivers'
//!   formats, parsed into sqlx options; errors name the variable and mask the password.
//! - [`settings`](mod@settings): the variables, declared for the README, and reading them.
//! - [`Database`]: a small lazily connecting pool and the queries on Woodpecker's tables;
//!   it is a [`engine::legacy::LegacyLogs`] source (read-through, `LogDelete`, `migrate`).
//! - [`FileStoreLogs`]: the file store directory, the same trait.
//! - [`instance`]: which Woodpecker a database belongs to, and the marker object that ties a
//!   bucket prefix to it.
//! - `migration.rs` and [`retention`]: the queries of `migrate` (a step's line count) and
//!   `gc` (which steps exist, their pipelines' age and rank).
//! - [`staging`]: Woodpecker's `log_entries` as the staging area of running steps
//!   (`WOODPECKER_LOG_STORE_S3_STAGING=database`).
//! - `testing` (feature `test-support`): fresh Woodpecker databases for tests.

mod db;
pub mod dsn;
mod error;
mod file_store;
pub mod instance;
mod legacy;
mod migration;
pub mod retention;
pub mod settings;
mod sql;
pub mod staging;
#[cfg(feature = "test-support")]
pub mod testing;

pub use db::{DELETE_BATCH, Database, Pool, StepStatus};
pub use dsn::{DataSource, Driver};
pub use error::DbError;
pub use file_store::FileStoreLogs;
pub use migration::{LogShape, LogTotals};
