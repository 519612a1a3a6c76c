//! A copy in memory of the lines this process staged for running steps, so that an archive
//! run builds the object without reading the rows back from the database.
//!
//! Why: on MariaDB the appends' p99 during archive runs was 1.24–1.42× the database store's,
//! and with the archive's reads and deletes taking turns with the appends the rest was the
//! archive's own work on the database (see `STAGING.md`). Every row the archive reads back is
//! one the addon had in hand when it was appended.
//!
//! A copy is only used when it holds exactly the step's rows, as far as this process can
//! tell; otherwise the run reads the table as before:
//!
//! | state | becomes | when |
//! |---|---|---|
//! | (none) | held | an append with the step's line 0 added every line it carried (a step this process did not archive) |
//! | held | held | an append added exactly the lines the copy did not have (the same first-write-wins the table applied) |
//! | held | not held | an append failed (it may have committed), added a different number of rows than the copy took, overlapped another append of the step, or the copies would pass the byte budget |
//! | held | (none) | a run archived every line of the copy; LogDelete |
//! | not held | (none) | a run archived from the table; LogDelete |
//!
//! A copy that misses rows of the table (written by an earlier process for lines the copy
//! never saw) is still safe: a run deletes only the rows of the lines its object holds, so
//! the others stay in the table, reads merge them, and the sweep archives them later.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use logservice::{LogEntry, StepId};

use super::LineRanges;

/// Bytes a held entry costs beyond its data (the entry and its place in the map).
const ENTRY_OVERHEAD: u64 = 96;

/// The copies, within a byte budget.
pub(super) struct HeldLines {
    budget: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: HashMap<StepId, Step>,
    bytes: u64,
}

struct Step {
    /// The copy; `None` when the step is not held.
    lines: Option<Copy>,
    /// Appends of the step under way.
    in_flight: u32,
}

#[derive(Default)]
struct Copy {
    /// By line, the first write of each.
    entries: BTreeMap<i64, LogEntry>,
    bytes: u64,
}

/// A held copy of a step's lines as an archive run takes it.
pub(super) type Snapshot = Vec<LogEntry>;

impl HeldLines {
    /// Copies of at most `budget` bytes in all.
    pub(super) fn new(budget: u64) -> Self {
        Self {
            budget,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An append of `entries` is about to be sent to the table; `may_start` when the step
    /// may get a copy (this process did not archive it).
    pub(super) fn begin(&self, id: StepId, entries: &[LogEntry], may_start: bool) {
        let mut state = self.lock();
        let state = &mut *state;
        let starts = may_start && self.budget > 0 && entries.iter().any(|e| e.line == 0);
        let step = match state.steps.get_mut(&id) {
            Some(step) => step,
            None if starts => state.steps.entry(id).or_insert(Step {
                lines: Some(Copy::default()),
                in_flight: 0,
            }),
            None => return,
        };
        step.in_flight += 1;
        if step.in_flight > 1 {
            // Which of two overlapping appends the table applied first is unknown.
            drop_copy(step, &mut state.bytes);
        }
    }

    /// The append begun with [`HeldLines::begin`] ended: `added` rows when it was committed,
    /// `None` when it failed.
    pub(super) fn end(&self, id: StepId, entries: &[LogEntry], added: Option<u64>) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(step) = state.steps.get_mut(&id) else {
            return;
        };
        step.in_flight = step.in_flight.saturating_sub(1);
        let Some(copy) = &mut step.lines else {
            return;
        };
        let Some(added) = added else {
            drop_copy(step, &mut state.bytes);
            return;
        };
        let mut took = 0;
        let mut bytes = 0;
        for entry in entries {
            if let std::collections::btree_map::Entry::Vacant(slot) = copy.entries.entry(entry.line)
            {
                bytes += entry_bytes(entry);
                took += 1;
                slot.insert(LogEntry {
                    id: 0,
                    step_id: id.get(),
                    ..entry.clone()
                });
            }
        }
        copy.bytes += bytes;
        state.bytes += bytes;
        if took != added || state.bytes > self.budget {
            drop_copy(step, &mut state.bytes);
        }
    }

    /// The step's copy as a run builds from it (by line); `None` when the step is not held
    /// and the run must read the table.
    pub(super) fn snapshot(&self, id: StepId) -> Option<Snapshot> {
        let state = self.lock();
        let copy = state.steps.get(&id)?.lines.as_ref()?;
        Some(copy.entries.values().cloned().collect())
    }

    /// A run stored and verified an object holding `lines` of the step, and deleted their
    /// rows: they leave the copy (lines that came in meanwhile stay). A step with nothing
    /// left in its copy, or not held, is forgotten unless an append is under way.
    pub(super) fn archived(&self, id: StepId, lines: &LineRanges) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(step) = state.steps.get_mut(&id) else {
            return;
        };
        if let Some(copy) = &mut step.lines {
            for &(first, last) in lines.ranges() {
                let gone: Vec<i64> = copy.entries.range(first..=last).map(|(&l, _)| l).collect();
                for line in gone {
                    if let Some(entry) = copy.entries.remove(&line) {
                        copy.bytes -= entry_bytes(&entry);
                        state.bytes -= entry_bytes(&entry);
                    }
                }
            }
        }
        let empty = step
            .lines
            .as_ref()
            .is_none_or(|copy| copy.entries.is_empty());
        if empty && step.in_flight == 0 {
            state.steps.remove(&id);
        }
    }

    /// LogDelete: the step's copy is gone; appends under way keep it not held.
    pub(super) fn forget(&self, id: StepId) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(step) = state.steps.get_mut(&id) else {
            return;
        };
        drop_copy(step, &mut state.bytes);
        if step.in_flight == 0 {
            state.steps.remove(&id);
        }
    }

    /// Bytes the copies hold.
    pub(super) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

fn entry_bytes(entry: &LogEntry) -> u64 {
    entry.data.as_ref().map_or(0, |data| data.len() as u64) + ENTRY_OVERHEAD
}

fn drop_copy(step: &mut Step, total: &mut u64) {
    if let Some(copy) = step.lines.take() {
        *total -= copy.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> StepId {
        StepId::new(n).unwrap()
    }

    fn lines(step: i64, range: std::ops::Range<i64>, text: &str) -> Vec<LogEntry> {
        range
            .map(|line| LogEntry {
                id: 99,
                step_id: step + 1000,
                line,
                data: Some(text.as_bytes().to_vec()),
                ..LogEntry::default()
            })
            .collect()
    }

    fn append(held: &HeldLines, step: i64, entries: &[LogEntry], added: Option<u64>) {
        held.begin(id(step), entries, true);
        held.end(id(step), entries, added);
    }

    fn texts(snapshot: &Snapshot) -> Vec<(i64, i64, String)> {
        snapshot
            .iter()
            .map(|e| {
                (
                    e.step_id,
                    e.line,
                    String::from_utf8_lossy(e.data.as_deref().unwrap()).into(),
                )
            })
            .collect()
    }

    #[test]
    fn a_copy_keeps_the_first_write_of_each_line_as_the_table_reads_it() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 0..3, "first"), Some(3));
        append(&held, 1, &lines(1, 2..4, "second"), Some(1));
        let snapshot = held.snapshot(id(1)).unwrap();
        assert_eq!(
            texts(&snapshot),
            [
                (1, 0, "first".into()),
                (1, 1, "first".into()),
                (1, 2, "first".into()),
                (1, 3, "second".into())
            ]
        );
        assert!(snapshot.iter().all(|e| e.id == 0), "no row id, as read");
    }

    #[test]
    fn only_a_step_whose_line_0_this_process_added_is_held() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 5..9, "late"), Some(4));
        assert!(
            held.snapshot(id(1)).is_none(),
            "no line 0: maybe rows before"
        );
        held.begin(id(2), &lines(2, 0..2, "x"), false);
        held.end(id(2), &lines(2, 0..2, "x"), Some(2));
        assert!(held.snapshot(id(2)).is_none(), "archived here before");
        append(&held, 3, &lines(3, 0..2, "x"), Some(1));
        assert!(
            held.snapshot(id(3)).is_none(),
            "line 0 or 1 was in the table"
        );
    }

    #[test]
    fn a_copy_the_table_disagrees_with_is_no_longer_used() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 0..3, "a"), Some(3));
        append(&held, 1, &lines(1, 3..5, "b"), Some(1));
        assert!(
            held.snapshot(id(1)).is_none(),
            "a row the copy lacks was there"
        );
        append(&held, 1, &lines(1, 5..6, "c"), Some(1));
        assert!(held.snapshot(id(1)).is_none(), "not held again");
        assert_eq!(held.bytes(), 0);

        append(&held, 2, &lines(2, 0..3, "a"), Some(3));
        append(&held, 2, &lines(2, 3..5, "b"), None);
        assert!(
            held.snapshot(id(2)).is_none(),
            "a failed append may have committed"
        );
    }

    #[test]
    fn overlapping_appends_of_a_step_end_its_copy() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 0..3, "a"), Some(3));
        let (b, c) = (lines(1, 3..5, "b"), lines(1, 4..6, "c"));
        held.begin(id(1), &b, true);
        held.begin(id(1), &c, true);
        held.end(id(1), &c, Some(2));
        held.end(id(1), &b, Some(1));
        assert!(held.snapshot(id(1)).is_none());
    }

    #[test]
    fn the_budget_ends_the_copy_that_passes_it_and_frees_its_bytes() {
        let held = HeldLines::new(10 * (ENTRY_OVERHEAD + 1));
        append(&held, 1, &lines(1, 0..6, "a"), Some(6));
        append(&held, 2, &lines(2, 0..3, "b"), Some(3));
        assert_eq!(held.bytes(), 9 * (ENTRY_OVERHEAD + 1));
        append(&held, 2, &lines(2, 3..5, "b"), Some(2));
        assert!(held.snapshot(id(2)).is_none(), "over the budget");
        assert_eq!(held.snapshot(id(1)).unwrap().len(), 6, "the others stay");
        assert_eq!(held.bytes(), 6 * (ENTRY_OVERHEAD + 1));
    }

    #[test]
    fn archived_lines_leave_the_copy_and_late_lines_stay() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 0..4, "a"), Some(4));
        let snapshot = held.snapshot(id(1)).unwrap();
        append(&held, 1, &lines(1, 4..6, "late"), Some(2));
        held.archived(id(1), &snapshot.iter().map(|e| e.line).collect());
        assert_eq!(
            texts(&held.snapshot(id(1)).unwrap()),
            [(1, 4, "late".into()), (1, 5, "late".into())]
        );
        held.archived(id(1), &(4..6).collect());
        assert!(held.snapshot(id(1)).is_none());
        assert_eq!(held.bytes(), 0);
        append(&held, 1, &lines(1, 6..7, "later"), Some(1));
        assert!(
            held.snapshot(id(1)).is_none(),
            "forgotten: late lines go by the table"
        );
    }

    #[test]
    fn log_delete_forgets_the_copy() {
        let held = HeldLines::new(1 << 20);
        append(&held, 1, &lines(1, 0..4, "a"), Some(4));
        held.forget(id(1));
        assert!(held.snapshot(id(1)).is_none());
        assert_eq!(held.bytes(), 0);
    }
}
