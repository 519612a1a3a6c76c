//! The read budget: LogFind answers being built share `READ_MEMORY` bytes, so parallel
//! reads of large logs queue instead of all allocating at once.
//!
//! Each read reserves what it will hold at its peak before it allocates anything, estimated
//! from the spool segments' sizes and the archive object's size and metadata (see
//! [`ReadCost`]). A read larger than the whole budget waits until it has the budget to
//! itself; reads larger than `MAX_LOG_SIZE` are refused before they start.

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::format;

/// Permits count KiB: `acquire_many` takes a `u32`, and a byte-exact count is not needed.
const UNIT: u64 = 1024;

/// The memory that reads may use at once.
pub(crate) struct ReadBudget {
    semaphore: Semaphore,
    units: u32,
}

impl ReadBudget {
    /// A budget of `bytes` (at least one unit).
    pub(crate) fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        Self {
            semaphore: Semaphore::new(units as usize),
            units,
        }
    }

    /// Waits until `bytes` fit beside the reads under way. A read larger than the whole
    /// budget takes all of it, so it runs alone rather than never.
    pub(crate) async fn reserve(&self, bytes: u64) -> SemaphorePermit<'_> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        self.semaphore
            .acquire_many(units)
            .await
            .expect("the read budget's semaphore is never closed")
    }
}

/// What a read of a step will hold at its peak, from what is known before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadCost {
    /// Bytes of spool records (segment sizes).
    pub(crate) staged: u64,
    /// The object's compressed size, if there is one.
    pub(crate) compressed: u64,
    /// The most text the object may decompress to (see [`format::text_limit`]).
    pub(crate) object_text: u64,
}

/// The zstd decoder's memory: its window (at most `2^WINDOW_LOG_MAX`, which the reader
/// enforces) plus its input and output blocks and the reader's buffers.
const DECODER: u64 = (1 << format::WINDOW_LOG_MAX) + (1 << 20);

impl ReadCost {
    /// The size of the answer: every record of the object and the spool, joined by commas
    /// where the NDJSON has newlines, and the brackets.
    pub(crate) fn answer(&self) -> u64 {
        self.object_text
            .saturating_add(self.staged)
            .saturating_add(2)
    }

    /// Everything the read holds at once, in bytes:
    /// - the answer, reserved up front;
    /// - the spool records' text (no more than their segments' bytes) and the index by line
    ///   beside it (a B-tree entry and an undo slot per line: at most 5/4 of the text, as a
    ///   spool record is at least 58 bytes of Go's JSON);
    /// - the compressed object twice (the S3 client hands its body over in a copy);
    /// - the zstd decoder and the longest record's buffer (at most twice the longest
    ///   record while it grows, and no record is longer than the object's text).
    pub(crate) fn total(&self) -> u64 {
        let staged = self.staged.saturating_mul(9) / 4;
        let object = if self.object_text == 0 && self.compressed == 0 {
            0
        } else {
            let record = self.object_text.min(format::MAX_RECORD_BYTES as u64);
            self.compressed
                .saturating_mul(2)
                .saturating_add(DECODER)
                .saturating_add(record.saturating_mul(2))
        };
        self.answer().saturating_add(staged).saturating_add(object)
    }

    /// Whether an object of `compressed` bytes that may decompress to `object_text` fits in
    /// what this cost reserved for the object (the object may have been replaced since).
    pub(crate) fn covers(&self, compressed: u64, object_text: u64) -> bool {
        compressed <= self.compressed && object_text <= self.object_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_larger_than_the_budget_take_all_of_it() {
        let budget = ReadBudget::new(10 * UNIT);
        let whole = budget.reserve(1 << 40).await;
        assert_eq!(budget.semaphore.available_permits(), 0);
        drop(whole);
        let small = budget.reserve(1).await;
        assert_eq!(budget.semaphore.available_permits(), 9);
        let rest = budget.reserve(9 * UNIT).await;
        assert!(budget.semaphore.try_acquire().is_err());
        drop((small, rest));
        assert_eq!(budget.semaphore.available_permits(), 10);
    }

    #[test]
    fn a_spool_only_read_counts_no_decoder() {
        let cost = ReadCost {
            staged: 400,
            compressed: 0,
            object_text: 0,
        };
        assert_eq!(cost.answer(), 402);
        assert_eq!(cost.total(), 402 + 900);
        let archived = ReadCost {
            staged: 0,
            compressed: 100,
            object_text: 1000,
        };
        assert_eq!(archived.total(), 1002 + 200 + DECODER + 2000);
        assert!(archived.covers(100, 1000));
        assert!(!archived.covers(101, 1000));
        assert!(!archived.covers(100, 1001));
    }
}
