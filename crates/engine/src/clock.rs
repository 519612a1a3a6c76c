//! The time the engine's archive schedule reads: the real monotonic clock in production, a
//! clock moved by hand in tests.
//!
//! Every timer of the schedule (the grace period after StepFinished, the idle timeout, the
//! retry backoff, and the scheduler's passes themselves) goes through a [`Clock`], so a test
//! can say "600 seconds later" and then check exactly what the scheduler did, instead of
//! sleeping and polling. The engine's archiving runs on its own runtime thread, out of reach
//! of `tokio::time::pause`, hence a clock of its own rather than Tokio's paused time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// Where the engine's archive schedule reads the time; see [`crate::Engine::start_with_clock`].
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The monotonic system clock; the scheduler looks for due steps several times per grace
    /// period.
    #[default]
    Real,
    /// Time that moves only when a test says so; the scheduler runs when it moves.
    Manual(ManualClock),
}

impl Clock {
    /// The current time: one read of the system clock, or of the manual clock's position.
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }

    /// When the scheduler runs: every `period` of real time, or whenever a manual clock asks.
    /// Called at start, so that a manual clock's request right after the start is seen.
    pub(crate) fn passes(&self, period: Duration) -> Passes {
        match self {
            Clock::Real => Passes::Every {
                period,
                timer: None,
            },
            Clock::Manual(clock) => Passes::OnRequest {
                requests: clock.shared.requested.subscribe(),
                clock: clock.clone(),
            },
        }
    }
}

/// A clock for tests, started at the real time of its creation and moved on only by
/// [`ManualClock::advance`]. Clones share the time. It drives one engine at a time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    /// How far the clock was moved, and the number of the scheduler pass asked for last.
    requested: watch::Sender<Request>,
    /// The number of the last pass the scheduler completed.
    completed: watch::Sender<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Request {
    elapsed: Duration,
    pass: u64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the current real time.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                start: Instant::now(),
                requested: watch::Sender::new(Request::default()),
                completed: watch::Sender::new(0),
            }),
        }
    }

    /// The clock's time.
    pub fn now(&self) -> Instant {
        self.shared.start + self.shared.requested.borrow().elapsed
    }

    /// Moves the clock on by `by` and wakes the scheduler, without waiting for it.
    pub fn advance(&self, by: Duration) {
        self.request(by);
    }

    /// Runs a scheduler pass at the clock's time and waits until it is over: every step due
    /// then was archived (or its run failed), and no archive run is left. Returns at once when
    /// no engine runs on this clock.
    pub async fn settle(&self) {
        let mut completed = self.shared.completed.subscribe();
        let pass = self.request(Duration::ZERO);
        tokio::select! {
            _ = completed.wait_for(|&done| done >= pass) => {}
            () = self.shared.requested.closed() => {}
        }
    }

    /// Moves the clock on and asks for a pass; returns the pass's number.
    fn request(&self, by: Duration) -> u64 {
        let mut pass = 0;
        self.shared.requested.send_modify(|request| {
            request.elapsed += by;
            request.pass += 1;
            pass = request.pass;
        });
        pass
    }
}

/// When the scheduler runs a pass.
pub(crate) enum Passes {
    /// Every `period` of real time (the timer is made on first use, on the runtime that
    /// polls it).
    Every {
        period: Duration,
        timer: Option<Interval>,
    },
    /// When a [`ManualClock`] asks; each pass runs until no archive run is left, then is
    /// reported complete.
    OnRequest {
        requests: watch::Receiver<Request>,
        clock: ManualClock,
    },
}

impl Passes {
    /// Waits for the next pass: `None` for a tick of the real-time timer; `Some(number)` for
    /// a pass a manual clock asked for, which the scheduler runs until no archive run is left
    /// and then reports with [`Passes::completed`].
    pub(crate) async fn next(&mut self) -> Option<u64> {
        match self {
            Passes::Every { period, timer } => {
                let timer = timer.get_or_insert_with(|| {
                    let mut timer = tokio::time::interval(*period);
                    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    timer
                });
                timer.tick().await;
                None
            }
            Passes::OnRequest { requests, .. } => match requests.changed().await {
                Ok(()) => Some(requests.borrow_and_update().pass),
                Err(_) => std::future::pending().await,
            },
        }
    }

    /// Reports a requested pass as complete.
    pub(crate) fn completed(&self, pass: u64) {
        if let Passes::OnRequest { clock, .. } = self {
            clock
                .shared
                .completed
                .send_modify(|done| *done = (*done).max(pass));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_time_moves_only_when_told_and_passes_are_reported() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(600));
        assert_eq!(
            Clock::Manual(clock.clone()).now(),
            t0 + Duration::from_secs(600)
        );
        // Without an engine, settling does not wait.
        clock.settle().await;

        let mut passes = Clock::Manual(clock.clone()).passes(Duration::from_secs(1));
        let settled = tokio::spawn({
            let clock = clock.clone();
            async move { clock.settle().await }
        });
        let pass = passes.next().await.unwrap();
        assert!(!settled.is_finished());
        passes.completed(pass);
        settled.await.unwrap();
    }
}
