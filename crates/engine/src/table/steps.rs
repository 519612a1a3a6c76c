//! What this process knows of each step with staged rows, and which steps are due.
//!
//! | state | becomes | when |
//! |---|---|---|
//! | (unknown) | pending | an append is committed; StepFinished; the sweep finds rows of staging |
//! | pending | running | due: finished and quiet for the finalize delay, or quiet for the idle timeout, and not waiting for a retry |
//! | running | pending | the run failed (retry after a backoff), or lines came in during it |
//! | running | (forgotten) | the run stored and verified the object and deleted the rows it read, and nothing came in during it |
//!
//! Forgetting a step is safe: its rows are in the table, where the sweep finds them.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logservice::StepId;
use lru::LruCache;

/// One step's state.
pub(super) struct StepState {
    /// When the last append was committed (or, for a step found by the sweep, its newest
    /// row's age before now).
    last_append: Instant,
    /// When StepFinished came.
    finished: Option<Instant>,
    /// Lines are staged that no verified object holds yet (as far as this process knows).
    pending: bool,
    /// An archive run is under way.
    running: bool,
    /// Failed runs in a row, and when the next may start.
    failures: u32,
    retry_at: Option<Instant>,
    /// This process acknowledged the step's line 0 and has not archived the step: its rows
    /// are the whole log, so reads may serve them alone while the archive is unreachable.
    whole_log_staged: bool,
    /// This process stored the step's object; and since when the object reads as missing.
    pub(super) archived_here: bool,
    pub(super) missing_since: Option<Instant>,
    /// Held by archive runs and LogDelete of the step.
    run_lock: Arc<tokio::sync::Mutex<()>>,
}

impl StepState {
    fn new(last_append: Instant) -> Self {
        Self {
            last_append,
            finished: None,
            pending: false,
            running: false,
            failures: 0,
            retry_at: None,
            whole_log_staged: false,
            archived_here: false,
            missing_since: None,
            run_lock: Arc::default(),
        }
    }

    fn due(&self, now: Instant, finalize_delay: Duration, idle_timeout: Duration) -> bool {
        if !self.pending || self.running || self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        let quiet = now.saturating_duration_since(self.last_append);
        let finished = self.finished.is_some_and(|at| {
            quiet >= finalize_delay && now.saturating_duration_since(at) >= finalize_delay
        });
        finished || quiet >= idle_timeout
    }
}

/// Steps archived cleanly (nothing staged since) that this process still remembers after
/// forgetting their state: enough for a day of a busy server, ~40 bytes each.
const ARCHIVED_MEMORY: usize = 100_000;

/// Every step this process knows of.
pub(super) struct StepBook {
    steps: Mutex<HashMap<StepId, StepState>>,
    /// Steps this process archived and forgot, most recent last: their late lines are
    /// merged with the patience an archived step gets, and reads need no rows while the
    /// database is down.
    archived: Mutex<LruCache<StepId, ()>>,
}

impl Default for StepBook {
    fn default() -> Self {
        Self {
            steps: Mutex::default(),
            archived: Mutex::new(LruCache::new(
                NonZeroUsize::new(ARCHIVED_MEMORY).expect("not zero"),
            )),
        }
    }
}

impl StepBook {
    fn archived(&self) -> MutexGuard<'_, LruCache<StepId, ()>> {
        self.archived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh state for a step this process does not hold, remembering whether it archived it.
    fn revive(&self, id: StepId, now: Instant) -> StepState {
        let mut state = StepState::new(now);
        state.archived_here = self.archived().pop(&id).is_some();
        state
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StepId, StepState>> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An append of the step was committed.
    pub(super) fn appended(&self, id: StepId, now: Instant, first_line: bool) {
        let mut steps = self.lock();
        let state = steps.entry(id).or_insert_with(|| self.revive(id, now));
        state.last_append = now;
        state.pending = true;
        if first_line && !state.archived_here {
            state.whole_log_staged = true;
        }
    }

    /// StepFinished came for the step.
    pub(super) fn finished(&self, id: StepId, now: Instant) {
        let mut steps = self.lock();
        let state = steps.entry(id).or_insert_with(|| self.revive(id, now));
        state.finished = Some(now);
        state.pending = true;
    }

    /// The sweep found rows of the step, the newest `age` old; a step this process already
    /// knows keeps its state.
    pub(super) fn found(&self, id: StepId, now: Instant, age: Duration) {
        self.lock().entry(id).or_insert_with(|| {
            let mut state = self.revive(id, now.checked_sub(age).unwrap_or(now));
            state.pending = true;
            state
        });
    }

    /// The due steps, marked running.
    pub(super) fn take_due(
        &self,
        now: Instant,
        finalize_delay: Duration,
        idle_timeout: Duration,
    ) -> Vec<StepId> {
        let mut steps = self.lock();
        let mut due = Vec::new();
        for (id, state) in steps.iter_mut() {
            if state.due(now, finalize_delay, idle_timeout) {
                state.running = true;
                state.pending = false;
                due.push(*id);
            }
        }
        due.sort_unstable();
        due
    }

    /// The lock a run of the step and its LogDelete hold.
    pub(super) fn run_lock(&self, id: StepId) -> Arc<tokio::sync::Mutex<()>> {
        // A step made known here is not pending, so never due: only LogDelete does that.
        self.lock()
            .entry(id)
            .or_insert_with(|| StepState::new(Instant::now()))
            .run_lock
            .clone()
    }

    /// Runs `f` on the step's state, if this process knows the step.
    pub(super) fn with<T>(&self, id: StepId, f: impl FnOnce(&mut StepState) -> T) -> Option<T> {
        self.lock().get_mut(&id).map(f)
    }

    /// Whether this process stored an object of the step (its rows may then be late lines
    /// only).
    pub(super) fn archived_here(&self, id: StepId) -> bool {
        self.with(id, |state| state.archived_here)
            .unwrap_or_else(|| self.archived().contains(&id))
    }

    /// Whether reads may serve the step's rows alone while the archive is unreachable.
    pub(super) fn whole_log_staged(&self, id: StepId) -> bool {
        self.with(id, |state| state.whole_log_staged)
            .unwrap_or(false)
    }

    /// Whether this process archived the step and nothing was staged since (nor is a run
    /// under way): its rows, if the database cannot be read, are known to be none.
    pub(super) fn nothing_staged(&self, id: StepId) -> bool {
        match self.with(id, |state| {
            state.archived_here && !state.pending && !state.running
        }) {
            Some(known) => known,
            None => self.archived().contains(&id),
        }
    }

    /// A run ended: forgotten after a success with nothing new, else pending again (after
    /// `retry` when it failed).
    pub(super) fn run_ended(
        &self,
        id: StepId,
        now: Instant,
        retry: Option<&dyn Fn(u32) -> Duration>,
    ) {
        let mut steps = self.lock();
        let Some(state) = steps.get_mut(&id) else {
            return;
        };
        state.running = false;
        match retry {
            Some(delay) => {
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(now + delay(state.failures));
                state.pending = true;
            }
            None => {
                state.failures = 0;
                state.retry_at = None;
                if !state.pending {
                    let archived_here = state.archived_here;
                    steps.remove(&id);
                    if archived_here {
                        self.archived().put(id, ());
                    }
                }
            }
        }
    }

    /// The object of the step was stored by this process.
    pub(super) fn object_stored(&self, id: StepId) {
        self.with(id, |state| {
            state.archived_here = true;
            state.whole_log_staged = false;
            state.missing_since = None;
        });
    }

    /// LogDelete: forget the step.
    pub(super) fn forget(&self, id: StepId) {
        self.lock().remove(&id);
        self.archived().pop(&id);
    }

    /// Steps with lines not yet archived, or a run under way.
    pub(super) fn pending(&self) -> u64 {
        self.lock()
            .values()
            .filter(|state| state.pending || state.running)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINALIZE: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);

    fn id(n: i64) -> StepId {
        StepId::new(n).unwrap()
    }

    #[test]
    fn finished_steps_are_due_after_the_finalize_delay_and_quiet_ones_after_the_idle_timeout() {
        let book = StepBook::default();
        let t0 = Instant::now();
        book.appended(id(1), t0, true);
        book.appended(id(2), t0, true);
        book.finished(id(1), t0);
        assert!(book.take_due(t0 + FINALIZE / 2, FINALIZE, IDLE).is_empty());
        assert_eq!(book.take_due(t0 + FINALIZE, FINALIZE, IDLE), vec![id(1)]);
        assert!(book.take_due(t0 + IDLE / 2, FINALIZE, IDLE).is_empty());
        assert_eq!(book.take_due(t0 + IDLE, FINALIZE, IDLE), vec![id(2)]);
    }

    #[test]
    fn a_late_line_after_stepfinished_moves_the_run_by_the_finalize_delay() {
        let book = StepBook::default();
        let t0 = Instant::now();
        book.appended(id(1), t0, true);
        book.finished(id(1), t0);
        book.appended(id(1), t0 + FINALIZE - Duration::from_secs(1), false);
        assert!(book.take_due(t0 + FINALIZE, FINALIZE, IDLE).is_empty());
        assert_eq!(
            book.take_due(t0 + 2 * FINALIZE, FINALIZE, IDLE),
            vec![id(1)]
        );
    }

    #[test]
    fn a_failed_run_waits_for_its_retry_and_lines_during_a_run_keep_the_step() {
        let book = StepBook::default();
        let t0 = Instant::now();
        book.appended(id(1), t0, true);
        book.finished(id(1), t0);
        assert_eq!(book.take_due(t0 + FINALIZE, FINALIZE, IDLE), vec![id(1)]);
        let wait: &dyn Fn(u32) -> Duration = &|_| Duration::from_secs(10);
        book.run_ended(id(1), t0 + FINALIZE, Some(wait));
        assert!(
            book.take_due(t0 + FINALIZE + Duration::from_secs(9), FINALIZE, IDLE)
                .is_empty()
        );
        let again = t0 + FINALIZE + Duration::from_secs(10);
        assert_eq!(book.take_due(again, FINALIZE, IDLE), vec![id(1)]);
        // Lines arrive during the run: the step stays known and pending.
        book.appended(id(1), again, false);
        book.run_ended(id(1), again, None);
        assert_eq!(book.pending(), 1);
        assert_eq!(book.take_due(again + FINALIZE, FINALIZE, IDLE), vec![id(1)]);
        book.run_ended(id(1), again + FINALIZE, None);
        assert_eq!(book.pending(), 0);
        assert!(
            book.with(id(1), |_| ()).is_none(),
            "forgotten after a clean run"
        );
        assert!(!book.nothing_staged(id(1)), "this run stored no object");
    }

    #[test]
    fn an_archived_step_is_remembered_after_it_is_forgotten() {
        let book = StepBook::default();
        let t0 = Instant::now();
        book.appended(id(1), t0, true);
        book.finished(id(1), t0);
        assert_eq!(book.take_due(t0 + FINALIZE, FINALIZE, IDLE), vec![id(1)]);
        book.object_stored(id(1));
        book.run_ended(id(1), t0 + FINALIZE, None);
        assert!(book.with(id(1), |_| ()).is_none());
        assert!(book.nothing_staged(id(1)));
        // Late lines: known as archived again (patience with a missing object), and rows.
        book.appended(id(1), t0 + IDLE, false);
        assert_eq!(book.with(id(1), |state| state.archived_here), Some(true));
        assert!(!book.nothing_staged(id(1)));
        assert!(!book.whole_log_staged(id(1)));
        book.forget(id(1));
        assert!(!book.nothing_staged(id(1)), "LogDelete forgets it all");
    }

    #[test]
    fn steps_found_by_the_sweep_count_their_age() {
        let book = StepBook::default();
        let t0 = Instant::now() + IDLE;
        book.found(id(7), t0, IDLE);
        assert_eq!(book.take_due(t0, FINALIZE, IDLE), vec![id(7)]);
        assert!(!book.whole_log_staged(id(7)));
    }
}
