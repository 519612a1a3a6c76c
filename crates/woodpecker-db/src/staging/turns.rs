//! Whose turn it is in the database: appends first, the archiver one statement at a time.
//!
//! Steps of one pipeline tend to finish together, so several archive runs (up to
//! `ARCHIVE_CONCURRENCY`) read their pages and delete their rows at once, while the
//! running steps keep appending. Measured in the paced benchmark (BENCHMARKS.md):
//!
//! - **SQLite** staging runs on one connection (`db.rs` says why), which sqlx's pool hands
//!   out in arrival order: an append spent 1.7 ms on the connection (p50) but waited
//!   12.6 ms for it (p90) and 25.7 ms (p99), queued behind reads of 2.3 ms and deletes of
//!   3.5 ms each; the database store's p99 on the same run was 6.5 ms.
//! - **MariaDB and PostgreSQL** give every statement a connection of its own, but four
//!   archive runs' reads and deletes at once share the server's CPU with the appends: the
//!   append p99 was 13-21 ms on MariaDB (database store 8.5-15 ms) and 14-15 ms on
//!   PostgreSQL. With the archive off it was 6.4-6.8 ms, so the burst was the archiver's, and
//!   not a lock (InnoDB counted 6-8 row lock waits per run).
//!
//! So the archiver's statements (background work: nobody waits for them) take turns:
//!
//! | who | before its statement | while it runs |
//! |---|---|---|
//! | append | counts itself as waiting | — |
//! | background | waits until no append waits (at most [`MAX_YIELD`]), one background statement at a time | holds the background turn |
//!
//! An append then shares the database with at most one background statement (and the
//! appends ahead of it), never with a queue of them: on SQLite its wait for the connection
//! went to 1.5 ms (p90) / 4.7 ms (p99), the append p99 to 7.0-9.1 ms on MariaDB and
//! 7.4-7.9 ms on PostgreSQL, while the
//! archive kept up as before (rows of finished steps never beyond the finalize delay's).
//! Uploads still overlap: only statements take turns. [`MAX_YIELD`] keeps a stream of
//! back-to-back appends from starving the archive: the table must not grow without end
//! while appends saturate the database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, Notify};

/// How long a background statement gives way to appends at most before it queues anyway.
pub(super) const MAX_YIELD: Duration = Duration::from_millis(50);

/// Turns in one database; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// Appends waiting for or running their statements.
    appends: AtomicUsize,
    /// Woken when `appends` drops to zero.
    no_appends: Notify,
    /// Held by the one background statement allowed to run.
    background: Mutex<()>,
}

/// An append's claim; the count drops with it.
#[must_use = "the append counts as waiting only while this is held"]
pub(super) struct AppendTurn<'a>(&'a Turns);

impl Drop for AppendTurn<'_> {
    fn drop(&mut self) {
        if self.0.appends.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.no_appends.notify_waiters();
        }
    }
}

impl Turns {
    /// Counts an append as waiting until the turn is dropped.
    pub(super) fn append(&self) -> AppendTurn<'_> {
        self.appends.fetch_add(1, Ordering::AcqRel);
        AppendTurn(self)
    }

    /// Waits for the background turn, then until no append waits or [`MAX_YIELD`] has
    /// passed; the statement runs while the guard is held.
    pub(super) async fn background(&self) -> MutexGuard<'_, ()> {
        let turn = self.background.lock().await;
        let gave_way = tokio::time::timeout(MAX_YIELD, async {
            loop {
                // Created before the check: notify_waiters wakes a Notified future from
                // its creation on, so a drop to zero in between is not missed.
                let notified = self.no_appends.notified();
                if self.appends.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        });
        let _ = gave_way.await;
        turn
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn background_waits_for_appends_then_goes() {
        let turns = Arc::new(Turns::default());
        let append = turns.append();
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let _turn = turns.background().await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "went while an append waited");
        drop(append);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert!(waited < MAX_YIELD + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn appends_back_to_back_delay_background_by_max_yield_only() {
        let turns = Turns::default();
        let _append = turns.append();
        let start = tokio::time::Instant::now();
        let _turn = turns.background().await;
        assert_eq!(start.elapsed(), MAX_YIELD);
    }

    #[tokio::test(start_paused = true)]
    async fn one_background_statement_at_a_time() {
        let turns = Arc::new(Turns::default());
        let first = turns.background().await;
        let second = {
            let turns = turns.clone();
            tokio::spawn(async move { drop(turns.background().await) })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !second.is_finished(),
            "two background statements queued at once"
        );
        drop(first);
        second.await.unwrap();
    }
}
