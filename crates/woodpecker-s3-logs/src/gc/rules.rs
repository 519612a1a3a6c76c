//! Which archived step logs `gc` removes: those of steps Woodpecker deleted, and with
//! retention options those of pipelines no rule keeps. Pure decisions, tested on their own.

use woodpecker_db::retention::{PipelineFacts, StepFacts};

/// Seconds in a day, for `--keep-days`.
const DAY: i64 = 86_400;
/// Woodpecker accepts a step's lines until its pipeline ended plus this long.
const LATE_LINES: i64 = 5 * 60;

/// The retention options; with neither, only deleted steps' objects go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    /// Keep logs of pipelines created in the last this many days.
    pub(crate) keep_days: Option<u32>,
    /// Keep logs of the newest this many pipelines of each repo.
    pub(crate) keep_last: Option<u32>,
}

/// What becomes of one archived step log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The step no longer exists in Woodpecker: delete.
    Orphan,
    /// No retention rule keeps its pipeline: delete.
    Expired,
    /// Kept (exists, and a rule keeps it or there is no rule).
    Keep,
    /// Its step or pipeline is still running (or ended moments ago): never touched.
    Running,
}

impl Verdict {
    /// Whether the object goes.
    pub(crate) fn deletes(self) -> bool {
        matches!(self, Verdict::Orphan | Verdict::Expired)
    }
}

/// Pipeline states after which Woodpecker writes no more lines. Anything else (pending,
/// running, blocked, created, or a state a later Woodpecker adds) counts as running.
fn finished(pipeline: &PipelineFacts, now: i64) -> bool {
    matches!(
        pipeline.status.as_str(),
        "success" | "failure" | "killed" | "error" | "declined" | "skipped"
    ) && now.saturating_sub(pipeline.finished) >= LATE_LINES
}

impl Retention {
    /// Whether any retention rule was given.
    pub(crate) fn any(&self) -> bool {
        self.keep_days.is_some() || self.keep_last.is_some()
    }

    /// The verdict on a step's object; `facts` is `None` when `steps` has no such row.
    /// A pipeline is kept when any given rule keeps it.
    pub(crate) fn judge(&self, facts: Option<&StepFacts>, now: i64) -> Verdict {
        let Some(facts) = facts else {
            return Verdict::Orphan;
        };
        if matches!(facts.step_state.as_str(), "pending" | "running") {
            return Verdict::Running;
        }
        // A step whose pipeline row is gone cannot be judged by its pipeline: keep it.
        let Some(pipeline) = &facts.pipeline else {
            return Verdict::Keep;
        };
        if !finished(pipeline, now) {
            return Verdict::Running;
        }
        if !self.any() {
            return Verdict::Keep;
        }
        let by_days = self
            .keep_days
            .is_some_and(|days| pipeline.created >= now - i64::from(days) * DAY);
        let by_last = self
            .keep_last
            .is_some_and(|last| pipeline.newer < i64::from(last));
        if by_days || by_last {
            Verdict::Keep
        } else {
            Verdict::Expired
        }
    }
}
