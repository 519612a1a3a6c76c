//! What the engine's calls and its background loops share: settings, store, spool, the
//! steps' state, upload slots, counters, the schedule's clock and the retry backoff.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use archive::ObjectStore;
use logservice::LogError;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::budget::ReadBudget;
use crate::clock::Clock;
use crate::legacy::LegacySources;
use crate::settings::EngineSettings;
use crate::spool::Spool;
use crate::stats::{FailureCounts, LatencyRecorder};
use crate::step::Steps;
use crate::table::TableStaging;

/// The engine's state, behind an `Arc` that its calls and background loops hold.
pub(crate) struct Shared {
    pub(crate) settings: EngineSettings,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) spool: Spool,
    pub(crate) steps: Steps,
    /// Upload slots: `archive_concurrency` runs at once.
    pub(crate) permits: Arc<Semaphore>,
    /// The memory LogFind reads share (`READ_MEMORY`).
    pub(crate) read_budget: ReadBudget,
    pub(crate) counters: Counters,
    /// The time of the archive schedule.
    pub(crate) clock: Clock,
    /// Retry delays of failed archive runs.
    pub(crate) backoff: Backoff,
    /// Logs written before the switch, read through and deleted with the rest (set once,
    /// by [`crate::Engine::set_legacy`]).
    pub(crate) legacy: Arc<OnceLock<LegacySources>>,
    /// Rows left by database staging that are being moved into the spool: read with the
    /// spool until the move is done (see [`crate::Engine::read_table_too`]).
    pub(crate) draining: Draining,
}

/// Rows of database staging being moved into the spool, shared by the engine's handle and
/// its state.
pub(crate) type Draining = Arc<DrainingRows>;

/// The table whose rows reads merge while they are moved into the spool, and the lock a
/// step's move and a LogDelete take, so that a deleted step's rows are not moved back in.
#[derive(Default)]
pub(crate) struct DrainingRows {
    table: Mutex<Option<Arc<dyn TableStaging>>>,
    pub(crate) moving: tokio::sync::Mutex<()>,
}

impl DrainingRows {
    /// The table, while rows are being moved.
    pub(crate) fn table(&self) -> Option<Arc<dyn TableStaging>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, table: Option<Arc<dyn TableStaging>>) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = table;
    }
}

/// The counters behind [`crate::EngineStats`] (see there for each).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) entries_appended: AtomicU64,
    pub(crate) spool_bytes_written: AtomicU64,
    pub(crate) spool_syncs: AtomicU64,
    pub(crate) archive_uploads: AtomicU64,
    pub(crate) archive_bytes_uploaded: AtomicU64,
    pub(crate) archive_failures: AtomicU64,
    pub(crate) failures_by_code: FailureCounts,
    pub(crate) upload_latency: LatencyRecorder,
    pub(crate) finds: AtomicU64,
    pub(crate) deletes: AtomicU64,
}

/// A failure of the spool or the archive, as the host receives it.
pub(crate) fn storage(text: String) -> LogError {
    LogError::Storage(text)
}
