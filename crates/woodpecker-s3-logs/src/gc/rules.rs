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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn step(state: &str, pipeline: Option<(&str, i64, i64, i64)>) -> StepFacts {
        StepFacts {
            step_id: 1,
            step_state: state.to_owned(),
            pipeline: pipeline.map(|(status, created_days_ago, newer, finished_ago)| {
                PipelineFacts {
                    id: 1,
                    repo_id: 1,
                    number: 1,
                    status: status.to_owned(),
                    created: NOW - created_days_ago * DAY,
                    finished: NOW - finished_ago,
                    newer,
                }
            }),
        }
    }

    #[test]
    fn deleted_steps_go_whatever_the_rules() {
        assert_eq!(Retention::default().judge(None, NOW), Verdict::Orphan);
        assert!(Verdict::Orphan.deletes() && Verdict::Expired.deletes());
        assert!(!Verdict::Keep.deletes() && !Verdict::Running.deletes());
    }

    #[test]
    fn running_work_is_never_touched() {
        let rules = Retention {
            keep_days: Some(1),
            keep_last: Some(1),
        };
        let old = |status, finished_ago| Some((status, 400, 9, finished_ago));
        assert_eq!(
            rules.judge(Some(&step("running", old("success", 9_999))), NOW),
            Verdict::Running
        );
        assert_eq!(
            rules.judge(Some(&step("success", old("running", 9_999))), NOW),
            Verdict::Running
        );
        assert_eq!(
            rules.judge(Some(&step("success", old("blocked", 9_999))), NOW),
            Verdict::Running
        );
        // Finished a minute ago: late lines may still come.
        assert_eq!(
            rules.judge(Some(&step("success", old("success", 60))), NOW),
            Verdict::Running
        );
        assert_eq!(
            rules.judge(Some(&step("success", old("success", 301))), NOW),
            Verdict::Expired
        );
    }

    #[test]
    fn either_rule_keeps() {
        let both = Retention {
            keep_days: Some(30),
            keep_last: Some(3),
        };
        let facts = |days, newer| step("failure", Some(("failure", days, newer, 9_999)));
        assert_eq!(both.judge(Some(&facts(10, 50)), NOW), Verdict::Keep);
        assert_eq!(both.judge(Some(&facts(100, 2)), NOW), Verdict::Keep);
        assert_eq!(both.judge(Some(&facts(100, 3)), NOW), Verdict::Expired);
        assert_eq!(both.judge(Some(&facts(31, 3)), NOW), Verdict::Expired);
        // No rule: only deleted steps go.
        assert_eq!(
            Retention::default().judge(Some(&facts(1000, 1000)), NOW),
            Verdict::Keep
        );
        // A step whose pipeline row is gone cannot be judged by age: kept.
        assert_eq!(both.judge(Some(&step("success", None)), NOW), Verdict::Keep);
    }
}
