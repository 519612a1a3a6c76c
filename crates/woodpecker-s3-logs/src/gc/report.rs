//! What `gc` tells the admin: objects and bytes per verdict, and what failed.

use std::fmt::Write;
use std::time::Duration;

use super::Retention;
use crate::progress::human_bytes;

/// Failures listed one by one; beyond this, only counted.
const LISTED_FAILURES: usize = 20;

/// Objects and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} objects, {}", self.objects, human_bytes(self.bytes))
    }
}

/// The result of a `gc` run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) apply: bool,
    pub(crate) retention: Retention,
    pub(crate) store: String,
    pub(crate) elapsed: Duration,
    pub(crate) listed: Tally,
    pub(crate) orphans: Tally,
    pub(crate) expired: Tally,
    pub(crate) kept: Tally,
    pub(crate) running: Tally,
    pub(crate) staged: Tally,
    pub(crate) foreign: Tally,
    pub(crate) deleted: Tally,
    pub(crate) failed: Tally,
    pub(crate) failures: Vec<String>,
}

impl Report {
    pub(crate) fn fail(&mut self, key: &str, bytes: u64, why: String) {
        self.failed.add(bytes);
        if self.failures.len() < LISTED_FAILURES {
            self.failures.push(format!("{key}: {why}"));
        }
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let mode = if self.apply {
            "gc --apply"
        } else {
            "gc (dry run: nothing was deleted; add --apply to delete)"
        };
        let _ = writeln!(
            out,
            "{mode}: {:.1}s, {} listed in {}",
            self.elapsed.as_secs_f64(),
            self.listed,
            self.store
        );
        let verb = if self.apply {
            "to delete"
        } else {
            "would be deleted"
        };
        let _ = writeln!(
            out,
            "  of steps deleted from Woodpecker ({verb}): {}",
            self.orphans
        );
        if self.retention.any() {
            let mut rules = Vec::new();
            if let Some(days) = self.retention.keep_days {
                rules.push(format!("created in the last {days} days"));
            }
            if let Some(last) = self.retention.keep_last {
                rules.push(format!("among the newest {last} of their repository"));
            }
            let _ = writeln!(
                out,
                "  of pipelines beyond retention, i.e. not {} ({verb}): {}",
                rules.join(" nor "),
                self.expired
            );
        }
        let _ = writeln!(out, "  kept: {}", self.kept);
        if self.running.objects > 0 {
            let _ = writeln!(
                out,
                "  kept because their step or pipeline is still running: {}",
                self.running
            );
        }
        if self.staged.objects > 0 {
            let _ = writeln!(
                out,
                "  kept because the addon's spool still holds lines of them (gc again once they are archived): {}",
                self.staged
            );
        }
        if self.foreign.objects > 0 {
            let _ = writeln!(
                out,
                "  not step logs of this format (left alone): {}",
                self.foreign
            );
        }
        if self.apply {
            let _ = writeln!(out, "  deleted: {}", self.deleted);
        }
        if self.failed.objects > 0 {
            let _ = writeln!(out, "  failed: {}", self.failed);
            for failure in &self.failures {
                let _ = writeln!(out, "    {failure}");
            }
        }
        out
    }
}
