//! Opening the spool in the background, so that a start answers the host at once however
//! large the spool is.
//!
//! go-plugin's host kills a plugin that has not printed its handshake within a minute, and
//! the spool is largest right after an archive outage: nothing proportional to its size may
//! run before the handshake. So [`crate::Engine::start`] only checks the directory, and this
//! task does the rest while the host already talks to the addon:
//!
//! 1. take the spool's lock (another addon may still be on its way out), clear `tmp/`;
//! 2. list `steps/` (names only, no file is read) and install every step found: from then
//!    on the engine's calls are served ([`Phase::Open`]); calls that came earlier waited
//!    for this point, so none sees a partial list of steps;
//! 3. cut torn tails, one step at a time under the step's archive lock, looking only at
//!    each segment's end ([`Phase::Recovered`] once done).
//!
//! Serving before step 3 is correct: appends of a recovered step start a new segment, never
//! behind a tail still to be cut; readers and archive builds stop at a partial last record
//! anyway; and a step's archive run or LogDelete, which remove (and recycle) its files,
//! wait for its archive lock, so no file is cut after it went back to the pool.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use archive::ObjectStore;
use logservice::StepId;
use tokio::sync::{Semaphore, watch};

use crate::archiver::scheduler_loop;
use crate::backoff::Backoff;
use crate::budget::ReadBudget;
use crate::clock::{Clock, Passes};
use crate::engine::{StartError, sync_loop};
use crate::legacy::LegacySources;
use crate::settings::EngineSettings;
use crate::shared::{Counters, Shared};
use crate::spool::{OpenError, Recovered, Spool};
use crate::step::{StepState, Steps, lock};
use crate::threads::blocking;

/// Where the engine is in opening its spool.
#[derive(Clone)]
pub(crate) enum Phase {
    /// Waiting for the lock, or listing the spool: calls wait.
    Opening,
    /// Calls are served; torn tails are still being cut.
    Open(Arc<Shared>),
    /// Every step found at start is checked too.
    Recovered(Arc<Shared>),
    /// The spool cannot be used: every call fails with this.
    Failed(Arc<StartError>),
}

/// What the opening task needs.
pub(crate) struct Opener {
    pub(crate) settings: EngineSettings,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) clock: Clock,
    /// When the scheduler runs, made at start so that a manual clock's request right after
    /// the start is seen.
    pub(crate) passes: Passes,
    /// The directory chosen and checked by `Spool::prepare`.
    pub(crate) root: PathBuf,
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) stop: watch::Receiver<Option<Duration>>,
    /// Where the spool's lock goes, so that the engine releases it when it goes.
    pub(crate) lock: Arc<Mutex<Option<File>>>,
    /// Logs from before the switch (set by the engine's owner, possibly after the start).
    pub(crate) legacy: Arc<OnceLock<LegacySources>>,
    pub(crate) draining: crate::shared::Draining,
}

impl Opener {
    /// Opens the spool, serves, recovers, then runs the background sync and the archive
    /// scheduler until the engine stops.
    pub(crate) async fn run(self) {
        let started = Instant::now();
        let mut stop = self.stop.clone();
        let (configured, root) = (self.settings.spool_dir.clone(), self.root.clone());
        let max_open = self.settings.max_open_files;
        let opened = tokio::select! {
            opened = blocking(move || open_and_list(&configured, &root, max_open)) => opened,
            // Stopped while waiting for the lock: waiting calls learn it from the phase
            // sender going away.
            _ = stop.changed() => return,
        };
        let (spool, spool_lock, recovered) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the spool");
                self.phase.send_replace(Phase::Failed(Arc::new(e)));
                return;
            }
        };
        *lock(&self.lock) = Some(spool_lock);

        let inner = self.serve(spool, &recovered, started);
        // The spool figures include what the previous run left (see `stats.rs`).
        tokio::spawn(crate::stats::measure_recovered(inner.clone()));
        let loops = [
            tokio::spawn(sync_loop(inner.clone(), self.stop.clone())),
            tokio::spawn(scheduler_loop(
                inner.clone(),
                self.passes,
                self.stop.clone(),
            )),
        ];
        if repair(&inner, recovered, &stop).await {
            self.phase.send_replace(Phase::Recovered(inner));
        }
        for task in loops {
            let _ = task.await;
        }
    }

    /// Installs the steps found in the spool and starts serving calls.
    fn serve(
        &self,
        spool: Spool,
        recovered: &[(StepId, Recovered)],
        started: Instant,
    ) -> Arc<Shared> {
        let now = self.clock.now();
        let mut steps = HashMap::new();
        let (mut finished, mut pending) = (0, 0);
        for (id, found) in recovered {
            pending += usize::from(!found.segments.is_empty());
            finished += usize::from(found.finished);
            let state = StepState::recovered(
                now,
                &found.segments,
                found.finished,
                self.settings.finalize_delay,
            );
            steps.insert(*id, state);
        }
        tracing::info!(
            spool = %spool.root().display(),
            archive = %self.store.describe(),
            steps_pending = pending,
            steps_finished = finished,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log store engine started"
        );
        let settings = self.settings.clone();
        let inner = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(settings.archive_concurrency.max(1))),
            read_budget: ReadBudget::new(settings.read_memory),
            backoff: Backoff::new(settings.retry_initial, settings.retry_max),
            settings,
            store: self.store.clone(),
            spool,
            steps: Steps::new(steps),
            counters: Counters::default(),
            clock: self.clock.clone(),
            legacy: self.legacy.clone(),
            draining: self.draining.clone(),
        });
        self.phase.send_replace(Phase::Open(inner.clone()));
        inner
    }
}

/// The open spool, its lock, and the steps found in it.
type Listed = (Spool, File, Vec<(StepId, Recovered)>);

/// Takes the lock and lists the spool: the part of opening that calls wait for.
fn open_and_list(
    configured: &std::path::Path,
    root: &std::path::Path,
    max_open: usize,
) -> Result<Listed, StartError> {
    let (spool, lock) = Spool::open(configured, root, max_open).map_err(|e| match e {
        OpenError::Dir(e) => StartError::SpoolDir(e),
        OpenError::Io(e) => StartError::Spool(e),
    })?;
    let recovered = spool.recover()?.into_iter().collect();
    Ok((spool, lock, recovered))
}

/// Cuts the torn tails of the steps found at start, each under its archive lock. Returns
/// whether every step was checked (false when the engine stopped first).
async fn repair(
    inner: &Arc<Shared>,
    recovered: Vec<(StepId, Recovered)>,
    stop: &watch::Receiver<Option<Duration>>,
) -> bool {
    let started = Instant::now();
    let (mut checked, mut torn) = (0usize, 0usize);
    for (id, found) in recovered {
        if stop.borrow().is_some() {
            return false;
        }
        let Some(slot) = inner.steps.get(id) else {
            continue; // deleted meanwhile
        };
        let _exclusive = slot.archive.lock().await;
        if slot.state().is_removed() {
            continue;
        }
        let worker = inner.clone();
        let segments: BTreeSet<u32> = found.segments;
        match blocking(move || {
            #[cfg(test)]
            crate::interleavings::reached(&format!(
                "repair {id} in {}",
                worker.spool.root().display()
            ));
            worker.spool.repair_tails(id, &segments)
        })
        .await
        {
            Ok(cut) => torn += cut,
            Err(error) => tracing::warn!(step = %id, %error,
                "cannot check the step's spool files for a partial last record; \
                 reads and archiving skip such a record anyway"),
        }
        checked += 1;
    }
    tracing::info!(
        steps = checked,
        torn_tails = torn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "spool recovered"
    );
    true
}
