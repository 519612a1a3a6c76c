//! How long a step waits before its archive run is tried again after failures.

use std::sync::Mutex;
use std::time::Duration;

/// Retry delays: doubling from `initial`, capped at `max`, with jitter (half to all of it) so
/// that the steps of an outage do not retry in lockstep.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// The jitter's source; seeded in tests, so their delays are known exactly.
    rng: Mutex<fastrand::Rng>,
}

impl Backoff {
    /// Delays from `initial` up to `max`, with fresh randomness.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, fastrand::Rng::new())
    }

    /// Delays drawing their jitter from `rng`.
    fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        Self {
            initial,
            max,
            rng: Mutex::new(rng),
        }
    }

    /// The wait before retry number `failures` (counting from 1).
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        // A panic while drawing leaves the generator usable: ignore the poison.
        let draw = self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64();
        self.ceiling(failures).mul_f64(0.5 + draw / 2.0)
    }

    /// The delay before jitter: `initial` doubled once per failure after the first, at most
    /// `max` (and no overflow however many failures).
    fn ceiling(&self, failures: u32) -> Duration {
        self.initial
            .checked_mul(1u32 << failures.saturating_sub(1).min(20))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let backoff = Backoff::with_rng(initial, max, fastrand::Rng::with_seed(7));
        let mut draws = fastrand::Rng::with_seed(7);
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (5000, 300)] {
            let full = Duration::from_secs(full);
            for _ in 0..100 {
                let delay = backoff.delay(failures);
                assert_eq!(delay, full.mul_f64(0.5 + draws.f64() / 2.0), "{failures}");
                assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
            }
        }
    }

    #[test]
    fn the_ceiling_doubles_and_caps_without_overflow() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff.ceiling(0), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(1), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(4), Duration::from_secs(8));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(300));
    }
}
