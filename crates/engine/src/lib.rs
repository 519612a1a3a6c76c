//! The store engine: Woodpecker's [`logservice::LogService`] over a durable local spool and
//! an [`archive::ObjectStore`].
//!
//! Lines are acknowledged once they are in the spool (one append-only file per step), so no
//! network trouble can lose one. Finished (or idle) steps are archived as one zstd-compressed
//! NDJSON object per step (see `FORMAT.md` and [`format`]); late lines are merged into the
//! object again; reads merge object and spool, ordered by line, first write winning.

mod build;
mod engine;
pub mod format;
mod pool;
pub mod read;
mod settings;
mod spool;

pub use engine::{Engine, EngineStats, StartError, read_step_log};
pub use settings::{
    ARCHIVE_CONCURRENCY, COMPRESSION_LEVEL, EngineSettings, FINALIZE_DELAY, IDLE_TIMEOUT,
    SPOOL_DIR, SPOOL_SYNC, SyncMode,
};
