//! The engine's small in-memory state per step (never any of its lines), and the only code
//! that changes it.
//!
//! # Lock order
//!
//! Three locks guard a step; whoever needs several takes them in this order:
//!
//! 1. the slot's **archive** lock ([`Slot::archive`], async): held for a whole archive run,
//!    by LogDelete, and while recovery cuts the torn tails of a step found at start, so one
//!    of them at a time works on the step's object and sealed segments;
//! 2. the **steps map** ([`Steps`]);
//! 3. the slot's **state** ([`Slot::state()`]).
//!
//! Read as containment, the order is map → state → archive (the map holds the slots, a slot
//! its state and its archive lock); taken, the async archive lock comes first, because the
//! map and the state are plain mutexes that are never held across an `.await`, so nobody
//! awaits the archive lock while holding either. Appends write the spool while holding the
//! state. LogDelete holds neither while it removes the step's files: a fresh slot whose
//! segments start after the removed ones replaces the step first (see [`Steps::remove`]), so
//! no append can restart the step in a file being removed. The spool's own mutexes (open handles, the
//! dirty set, the finished journal, the file pool, the readers' registry) and the backoff's
//! random source are leaves: taken last, nothing is taken while holding them.
//!
//! # Phases
//!
//! Where a step is in its archive cycle is its [`Phase`]:
//!
//! | from                | event                                              | to                              | where                |
//! |---------------------|----------------------------------------------------|---------------------------------|----------------------|
//! | (new)               | first append or StepFinished; recovery at start    | `Idle`                          | [`Steps::with_state`], `open.rs` |
//! | `Idle`, `Backoff`   | the scheduler finds it due and an upload slot free | `Archiving { failures }`        | `archiver::schedule` |
//! | `Archiving { n }`   | the run stored the object, or had nothing to store | `Idle` (`archived_at` = now)    | `archiver`, run end  |
//! | `Archiving { n }`   | the run failed (or panicked, or was aborted)       | `Backoff { n + 1, retry_at }`   | `archiver`, run end  |
//! | `Idle`, `Backoff`   | no spool data, no activity for the idle timeout    | `Removed` (left the map)        | `archiver::schedule` |
//! | any                 | LogDelete                                          | `Removed` (a fresh `Idle` slot replaces it) | `Shared::delete`     |
//! | `Removed`           | anything                                           | `Removed`                       |                      |
//!
//! Beside the phase, a state holds facts that events update whatever the phase:
//!
//! | field                          | changed by                                                                          |
//! |--------------------------------|-------------------------------------------------------------------------------------|
//! | `segment_len`, `last_append`   | an append (bytes acknowledged in `segment`, its time)                               |
//! | `tail_since`                   | the first append into `segment` (the time of its oldest line)                       |
//! | `finished_at`                  | the first StepFinished                                                              |
//! | `segment`, `segment_len`       | sealing at the start of an archive run: a non-empty `segment` is closed, appends move to the next |
//! | `sealed_bytes`, `sealed_since` | sealing (the closed segment's bytes and oldest line join them); cleared with the sealed segments |
//! | `unmeasured`                   | recovery (the segments found); cleared once `stats.rs` measured them, or with the sealed segments |
//! | `maybe_archived`               | an upload starting (even a failed one may have stored the object)                   |
//! | `archived_here`, `missing_since` | an upload verified; a run that found that object missing (read-after-write lag)   |
//! | `first_segment`                | the sealed segments being removed after their object was verified                   |
//! | all of them                    | recovery at start (a step found in the spool)                                       |

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logservice::StepId;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::settings::EngineSettings;
use crate::stats::{Census, OnDisk};

/// Locks ignoring poison: the state stays consistent field by field, and a panic elsewhere
/// must not take every later call down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The steps the engine tracks (running, waiting for archiving, recently archived).
pub(crate) struct Steps {
    map: Mutex<HashMap<StepId, Arc<Slot>>>,
}

/// One step's entry in [`Steps`].
pub(crate) struct Slot {
    /// What the engine knows about the step; see [`Slot::state`].
    state: Mutex<StepState>,
    /// Held by an archive run, by LogDelete and by recovery: one of them at a time per step.
    pub(crate) archive: tokio::sync::Mutex<()>,
}

impl Slot {
    fn new(state: StepState) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            archive: tokio::sync::Mutex::new(()),
        })
    }

    /// The step's state, locked.
    pub(crate) fn state(&self) -> MutexGuard<'_, StepState> {
        lock(&self.state)
    }
}

/// Where a step is in its archive cycle (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No archive run, and the last one (if any) succeeded.
    Idle,
    /// An archive run owns the step, from the scheduler's pick to the run's end; `failures`
    /// runs in a row failed before it.
    Archiving { failures: u32 },
    /// `failures` runs in a row failed; the next may start at `retry_at`.
    Backoff { failures: u32, retry_at: Instant },
    /// The step left the map (deleted or forgotten): whoever still holds its slot looks the
    /// step up again.
    Removed,
}

/// What the engine knows about a step.
#[derive(Debug)]
pub(crate) struct StepState {
    phase: Phase,
    /// Segments `first_segment..segment` are sealed; `segment` takes appends.
    first_segment: u32,
    segment: u32,
    /// Acknowledged bytes in `segment`.
    segment_len: u64,
    last_append: Instant,
    finished_at: Option<Instant>,
    archived_at: Option<Instant>,
    /// An archive object of this step may exist (we stored one, or the step predates this
    /// start). While false, the spool holds the whole log.
    maybe_archived: bool,
    /// This process stored and verified an object of this step: a read that finds none is
    /// lag (or a deletion by someone else), never "nothing archived yet".
    archived_here: bool,
    /// Since when runs find that object missing; see [`StepState::missing_object`].
    missing_since: Option<Instant>,
    /// Acknowledged bytes in the sealed segments `first_segment..segment`.
    sealed_bytes: u64,
    /// When the oldest line of the sealed segments came (`None`: no sealed data).
    sealed_since: Option<Instant>,
    /// When the oldest line of `segment` came (`None`: it is empty).
    tail_since: Option<Instant>,
    /// The segments found at start whose size is not counted in `sealed_bytes` yet.
    unmeasured: Option<Range<u32>>,
}

/// What the scheduler should do with a step now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing yet.
    Wait,
    /// Start an archive run.
    Archive,
    /// Drop the state: nothing staged, nothing happened for the idle timeout.
    Forget,
}

impl StepState {
    /// A step first seen at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Idle,
            first_segment: 0,
            segment: 0,
            segment_len: 0,
            last_append: now,
            finished_at: None,
            archived_at: None,
            maybe_archived: false,
            archived_here: false,
            missing_since: None,
            sealed_bytes: 0,
            sealed_since: None,
            tail_since: None,
            unmeasured: None,
        }
    }

    /// A step found in the spool at start, with these `segments` on disk and whether its
    /// StepFinished came before the stop.
    pub(crate) fn recovered(
        now: Instant,
        segments: &BTreeSet<u32>,
        finished: bool,
        finalize_delay: Duration,
    ) -> Self {
        let mut state = Self::new(now);
        state.maybe_archived = true;
        if let (Some(first), Some(last)) = (segments.first(), segments.last()) {
            state.first_segment = *first;
            // The spool's record: segments are removed only after their object was verified,
            // so a step whose first segments are gone was archived by an earlier run.
            state.archived_here = *first > 0;
            // Never append behind a repaired tail: new lines start a new segment.
            state.segment = last + 1;
            // Their lines are at least as old as this start; see `measured`.
            state.sealed_since = Some(now);
            state.unmeasured = Some(state.first_segment..state.segment);
        }
        if finished {
            // Due now: the grace period passed while the addon was down.
            let due = now.checked_sub(finalize_delay).unwrap_or(now);
            state.finished_at = Some(due);
            state.last_append = due;
        }
        state
    }

    /// Whether the spool holds lines of the step that are not archived yet.
    pub(crate) fn has_data(&self) -> bool {
        self.first_segment < self.segment || self.segment_len > 0
    }

    /// Whether an archive object of the step may exist.
    pub(crate) fn maybe_archived(&self) -> bool {
        self.maybe_archived
    }

    /// The segment taking appends, and the bytes acknowledged in it.
    pub(crate) fn tail(&self) -> (u32, u64) {
        (self.segment, self.segment_len)
    }

    /// The segments holding the step's staged lines (the last one taking appends), and how
    /// many bytes of the last one are acknowledged.
    pub(crate) fn staged(&self) -> (Range<u32>, u64) {
        (self.first_segment..self.segment + 1, self.segment_len)
    }

    /// `bytes` were appended to the tail segment at `now`.
    pub(crate) fn appended(&mut self, bytes: u64, now: Instant) {
        self.segment_len += bytes;
        self.last_append = now;
        self.tail_since.get_or_insert(now);
    }

    /// StepFinished came at `now`. Returns whether it is the first one.
    pub(crate) fn finished(&mut self, now: Instant) -> bool {
        if self.finished_at.is_some() {
            return false;
        }
        self.finished_at = Some(now);
        true
    }

    /// What the scheduler should do with the step at `now`.
    ///
    /// A step with spool data is due `finalize_delay` after StepFinished or its last line,
    /// whichever is later, or `idle_timeout` after its last line if it never finished. A step
    /// without spool data is kept for `idle_timeout` after its last activity, so late lines
    /// of a finished step are re-archived after the short grace period, then forgotten.
    pub(crate) fn action(&self, now: Instant, settings: &EngineSettings) -> Action {
        let retry_at = match self.phase {
            Phase::Removed | Phase::Archiving { .. } => return Action::Wait,
            Phase::Idle => None,
            Phase::Backoff { retry_at, .. } => Some(retry_at),
        };
        // A time past the clock's range (a timer of centuries) never comes: checked, so no
        // setting can make the scheduler panic.
        if self.has_data() {
            let due = match self.finished_at {
                Some(finished) => finished
                    .max(self.last_append)
                    .checked_add(settings.finalize_delay),
                None => self.last_append.checked_add(settings.idle_timeout),
            };
            let due = due.map(|due| retry_at.map_or(due, |retry| retry.max(due)));
            return if due.is_some_and(|due| now >= due) {
                Action::Archive
            } else {
                Action::Wait
            };
        }
        let last = [Some(self.last_append), self.finished_at, self.archived_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.last_append);
        match last.checked_add(settings.idle_timeout) {
            Some(due) if now >= due => Action::Forget,
            _ => Action::Wait,
        }
    }

    /// An archive run takes the step (the scheduler found it due).
    pub(crate) fn start_archiving(&mut self) {
        let failures = match self.phase {
            Phase::Idle => 0,
            Phase::Backoff { failures, .. } => failures,
            Phase::Archiving { .. } | Phase::Removed => return,
        };
        self.phase = Phase::Archiving { failures };
    }

    /// Whether the step left the map.
    pub(crate) fn is_removed(&self) -> bool {
        self.phase == Phase::Removed
    }

    /// Archive runs in a row that failed before the current one.
    pub(crate) fn failures(&self) -> u32 {
        match self.phase {
            Phase::Archiving { failures } | Phase::Backoff { failures, .. } => failures,
            Phase::Idle | Phase::Removed => 0,
        }
    }

    /// Closes the tail segment if it holds anything, so appends move on to the next one.
    /// Returns the sealed segments, and the closed segment whose cached handle must go.
    pub(crate) fn seal(&mut self) -> (Range<u32>, Option<u32>) {
        let mut closed = None;
        if self.segment_len > 0 {
            closed = Some(self.segment);
            self.segment += 1;
            self.sealed_bytes += self.segment_len;
            self.segment_len = 0;
            self.sealed_since = self.sealed_since.or(self.tail_since.take());
        }
        (self.first_segment..self.segment, closed)
    }

    /// An upload of the step's object starts.
    pub(crate) fn upload_started(&mut self) {
        self.maybe_archived = true;
    }

    /// The step's object was stored and verified.
    pub(crate) fn object_stored(&mut self) {
        self.archived_here = true;
        self.missing_since = None;
    }

    /// A run found no object of the step at `now`. Returns whether that may be taken as
    /// the truth: always when this process never stored one, and otherwise only once the
    /// object has been missing for `patience` (it was deleted, e.g. by a lifecycle rule,
    /// rather than not visible yet).
    pub(crate) fn missing_object(&mut self, now: Instant, patience: Duration) -> bool {
        if !self.archived_here {
            return true;
        }
        let since = *self.missing_since.get_or_insert(now);
        now.saturating_duration_since(since) >= patience
    }

    /// The sealed segments before `end` were removed from the spool.
    pub(crate) fn sealed_removed(&mut self, end: u32) {
        self.first_segment = self.first_segment.max(end);
        // Only an archive run seals, and it removes all it sealed.
        if self.first_segment >= self.segment {
            self.sealed_bytes = 0;
            self.sealed_since = None;
            self.unmeasured = None;
        }
    }

    /// The segments found at start that are still to be measured for the spool figures.
    pub(crate) fn unmeasured(&self) -> Option<Range<u32>> {
        self.unmeasured.clone()
    }

    /// The segments found at start hold `on_disk`, measured at `now`. The caller holds the
    /// step's archive lock, so no run removed them meanwhile.
    pub(crate) fn measured(&mut self, on_disk: OnDisk, now: Instant) {
        if self.unmeasured.take().is_none() {
            return;
        }
        self.sealed_bytes += on_disk.bytes;
        let written = on_disk.age.and_then(|age| now.checked_sub(age));
        self.sealed_since = self.sealed_since.into_iter().chain(written).min();
    }

    /// Whether the step waits in the archive queue at `now`: due, being archived, or
    /// waiting to retry.
    fn queued(&self, now: Instant, settings: &EngineSettings) -> bool {
        match self.phase {
            Phase::Archiving { .. } => true,
            Phase::Backoff { .. } => self.has_data(),
            Phase::Idle => self.action(now, settings) == Action::Archive,
            Phase::Removed => false,
        }
    }

    /// The archive run ended at `now`, having stored the object or found nothing to store.
    pub(crate) fn archive_succeeded(&mut self, now: Instant) {
        if let Phase::Archiving { .. } = self.phase {
            self.phase = Phase::Idle;
            self.archived_at = Some(now);
        }
    }

    /// The archive run ended at `now` in failure: the next waits for the backoff.
    pub(crate) fn archive_failed(&mut self, now: Instant, backoff: &Backoff) {
        if let Phase::Archiving { failures } = self.phase {
            let failures = failures + 1;
            self.phase = Phase::Backoff {
                failures,
                // Bounded by the backoff's maximum; past the clock's range: retry now.
                retry_at: now.checked_add(backoff.delay(failures)).unwrap_or(now),
            };
        }
    }

    /// The step leaves the map. Returns every segment it may have in the spool.
    fn remove(&mut self) -> Range<u32> {
        self.phase = Phase::Removed;
        self.first_segment..self.segment + 1
    }
}

impl Steps {
    /// The steps found in the spool at start.
    pub(crate) fn new(recovered: impl IntoIterator<Item = (StepId, StepState)>) -> Self {
        let map = recovered
            .into_iter()
            .map(|(id, state)| (id, Slot::new(state)))
            .collect();
        Self {
            map: Mutex::new(map),
        }
    }

    /// The step's slot, if it is tracked.
    pub(crate) fn get(&self, id: StepId) -> Option<Arc<Slot>> {
        lock(&self.map).get(&id).cloned()
    }

    /// Every tracked step, for a pass over all of them without holding the map.
    pub(crate) fn all(&self) -> Vec<(StepId, Arc<Slot>)> {
        lock(&self.map)
            .iter()
            .map(|(id, slot)| (*id, slot.clone()))
            .collect()
    }

    /// Runs `f` on the step's live state; when the step is not tracked, creates it at the
    /// time of `create`, or returns `None` without it.
    pub(crate) fn with_state<T>(
        &self,
        id: StepId,
        create: Option<&Clock>,
        mut f: impl FnMut(&mut StepState) -> T,
    ) -> Option<T> {
        loop {
            let slot = {
                let mut map = lock(&self.map);
                match (map.get(&id), create) {
                    (Some(slot), _) => slot.clone(),
                    (None, Some(clock)) => map
                        .entry(id)
                        .or_insert_with(|| Slot::new(StepState::new(clock.now())))
                        .clone(),
                    (None, None) => return None,
                }
            };
            let mut state = slot.state();
            if !state.is_removed() {
                return Some(f(&mut state));
            }
        }
    }

    /// Drops the steps among `candidates` that are still to be forgotten at `now`.
    pub(crate) fn forget(
        &self,
        candidates: Vec<(StepId, Arc<Slot>)>,
        now: Instant,
        settings: &EngineSettings,
    ) {
        if candidates.is_empty() {
            return;
        }
        let mut map = lock(&self.map);
        for (id, slot) in candidates {
            let mut state = slot.state();
            if state.action(now, settings) != Action::Forget {
                continue;
            }
            state.remove();
            map.remove(&id);
        }
    }

    /// Removes the step (LogDelete) at `now`, given the `slot` whose archive lock the caller
    /// holds; returns its segments, for the caller to remove with the map unlocked. A fresh
    /// slot starting after them takes its place: an append meanwhile starts the step afresh
    /// in a file the removal never touches, so it neither waits nor brings a line back.
    pub(crate) fn remove(&self, id: StepId, slot: &Arc<Slot>, now: Instant) -> Range<u32> {
        let mut map = lock(&self.map);
        let segments = slot.state().remove();
        if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            let mut successor = StepState::new(now);
            successor.first_segment = segments.end;
            successor.segment = segments.end;
            map.insert(id, Slot::new(successor));
        }
        segments
    }

    /// What the steps add up to at `now`: one pass, one step locked at a time.
    pub(crate) fn census(&self, now: Instant, settings: &EngineSettings) -> Census {
        let slots: Vec<_> = lock(&self.map).values().cloned().collect();
        let mut census = Census {
            tracked: slots.len(),
            ..Census::default()
        };
        for slot in slots {
            let state = slot.state();
            if state.is_removed() || !state.has_data() {
                continue;
            }
            census.pending += 1;
            census.queued += usize::from(state.queued(now, settings));
            census.bytes += state.sealed_bytes + state.segment_len;
            let since = [state.sealed_since, state.tail_since].into_iter().flatten();
            census.oldest = census.oldest.into_iter().chain(since).min();
        }
        census
    }
}

#[cfg(test)]
mod tests;
