//! The store engine: Woodpecker's [`logservice::LogService`] over a durable local spool and
//! an [`archive::ObjectStore`].
//!
//! Lines are acknowledged once they are in the spool (one append-only file per step), so no
//! network trouble can lose one. Finished (or idle) steps are archived as one zstd-compressed
//! NDJSON object per step (see `FORMAT.md` and [`format`](mod@format)); late lines are merged into the
//! object again; reads merge object and spool, ordered by line, first write winning.
//!
//! Where things are: `engine.rs` (the [`Engine`] handle, start and stop, the write side),
//! `open.rs` (opening and recovering the spool in the background),
//! `shared.rs` (what the calls and the background loops share), `stats.rs` (what operators
//! are told),
//! `step.rs` (per-step state, its phases and the lock order), `archiver.rs` (scheduling and
//! archive runs), `build.rs` (merging into a new object), `read.rs` and `budget.rs` (the read path and its memory budget),
//! `legacy.rs` (logs from before the switch, read through), `table/` (staging in a database
//! table instead of the spool: `STAGING=database`), `spool.rs`, `spool/dir.rs`,
//! `spool/reading.rs` and `pool.rs` (files on disk), `clock.rs`, `backoff.rs` and `threads.rs`
//! (time, retries and where work runs); `interleavings.rs` holds tests.

mod archiver;
mod backoff;
mod budget;
mod build;
mod clock;
mod engine;
pub mod format;
#[cfg(test)]
mod interleavings;
pub mod legacy;
mod open;
mod pool;
pub mod read;
mod settings;
mod shared;
mod spool;
mod stats;
mod step;
pub mod table;
mod threads;

pub use build::ObjectBuilder;
pub use clock::{Clock, ManualClock};
pub use engine::{Engine, StartError};
pub use read::{read_step_log, read_step_log_with_legacy};
pub use settings::{
    ARCHIVE_CONCURRENCY, COMPRESSION_LEVEL, EngineSettings, FINALIZE_DELAY, IDLE_TIMEOUT,
    MAX_LOG_SIZE, READ_MEMORY, SHUTDOWN_GRACE, SPOOL_DIR, SPOOL_SYNC, SyncMode, WOODPECKER_DATA,
};
pub use spool::SpoolDirError;
pub use stats::{EngineStats, Histogram, UPLOAD_LATENCY_BOUNDS};
pub use table::{TableEngine, TableStaging};
