//! The checklist: every check in a fixed order with a stable id, its outcome, what was seen
//! and, for a failure or warning, the fix; printed for people or as one JSON document.

use std::fmt::Write as _;

use serde::Serialize;

/// Every check doctor knows, in the order they are printed. The ids are the JSON's stable
/// `id` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CheckId {
    Settings,
    Credentials,
    EndpointDns,
    EndpointTls,
    Bucket,
    BucketRegion,
    ClockSkew,
    ObjectPut,
    ObjectHead,
    ObjectGet,
    ConditionalWrite,
    ObjectDelete,
    Multipart,
    Database,
    LogEntries,
    UniqueLines,
    SpoolDir,
    SocketDir,
    ScratchDir,
    ArchiveDir,
    RoundTrip,
}

impl CheckId {
    /// Every check, in order.
    pub(super) const ALL: [CheckId; 21] = [
        CheckId::Settings,
        CheckId::Credentials,
        CheckId::EndpointDns,
        CheckId::EndpointTls,
        CheckId::Bucket,
        CheckId::BucketRegion,
        CheckId::ClockSkew,
        CheckId::ObjectPut,
        CheckId::ObjectHead,
        CheckId::ObjectGet,
        CheckId::ConditionalWrite,
        CheckId::ObjectDelete,
        CheckId::Multipart,
        CheckId::Database,
        CheckId::LogEntries,
        CheckId::UniqueLines,
        CheckId::SpoolDir,
        CheckId::SocketDir,
        CheckId::ScratchDir,
        CheckId::ArchiveDir,
        CheckId::RoundTrip,
    ];

    /// The machine-readable id.
    pub(super) fn id(self) -> &'static str {
        match self {
            CheckId::Settings => "settings",
            CheckId::Credentials => "credentials",
            CheckId::EndpointDns => "endpoint_dns",
            CheckId::EndpointTls => "endpoint_tls",
            CheckId::Bucket => "bucket",
            CheckId::BucketRegion => "bucket_region",
            CheckId::ClockSkew => "clock_skew",
            CheckId::ObjectPut => "object_put",
            CheckId::ObjectHead => "object_head",
            CheckId::ObjectGet => "object_get",
            CheckId::ConditionalWrite => "conditional_write",
            CheckId::ObjectDelete => "object_delete",
            CheckId::Multipart => "multipart",
            CheckId::Database => "database",
            CheckId::LogEntries => "log_entries",
            CheckId::UniqueLines => "unique_lines",
            CheckId::SpoolDir => "spool_dir",
            CheckId::SocketDir => "socket_dir",
            CheckId::ScratchDir => "scratch_dir",
            CheckId::ArchiveDir => "archive_dir",
            CheckId::RoundTrip => "round_trip",
        }
    }

    /// What it checks, for people.
    pub(super) fn title(self) -> &'static str {
        match self {
            CheckId::Settings => "settings",
            CheckId::Credentials => "AWS credentials",
            CheckId::EndpointDns => "endpoint resolves",
            CheckId::EndpointTls => "TLS certificate",
            CheckId::Bucket => "bucket",
            CheckId::BucketRegion => "bucket region",
            CheckId::ClockSkew => "clock skew",
            CheckId::ObjectPut => "probe PUT",
            CheckId::ObjectHead => "probe HEAD",
            CheckId::ObjectGet => "probe GET",
            CheckId::ConditionalWrite => "conditional writes",
            CheckId::ObjectDelete => "probe DELETE",
            CheckId::Multipart => "multipart upload",
            CheckId::Database => "database",
            CheckId::LogEntries => "log_entries table",
            CheckId::UniqueLines => "unique line index",
            CheckId::SpoolDir => "spool directory",
            CheckId::SocketDir => "socket directory",
            CheckId::ScratchDir => "scratch directory",
            CheckId::ArchiveDir => "archive directory",
            CheckId::RoundTrip => "addon round trip",
        }
    }
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    /// Works.
    Pass,
    /// Works, with something worth knowing.
    Warn,
    /// Broken: the exit code is 1.
    Fail,
    /// Does not apply, or could not run because an earlier check failed.
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✔",
            Status::Warn => "⚠",
            Status::Fail => "✘",
            Status::Skip => "–",
        }
    }
}

/// One line of the checklist.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Check {
    /// [`CheckId::id`].
    pub(super) id: &'static str,
    /// [`CheckId::title`].
    pub(super) title: &'static str,
    pub(super) status: Status,
    /// What was seen (several lines for the settings).
    pub(super) detail: String,
    /// What to do; set for failures and warnings.
    pub(super) fix: Option<String>,
}

/// The checks run so far, in [`CheckId::ALL`]'s order once [`Report::finish`]ed.
#[derive(Debug, Default, Serialize)]
pub(super) struct Report {
    /// True when no check failed (warnings allowed): the exit code is 0 exactly then.
    pub(super) ok: bool,
    pub(super) checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, id: CheckId, status: Status, detail: String, fix: Option<String>) {
        self.checks.push(Check {
            id: id.id(),
            title: id.title(),
            status,
            detail,
            fix,
        });
    }

    pub(super) fn pass(&mut self, id: CheckId, detail: impl Into<String>) {
        self.push(id, Status::Pass, detail.into(), None);
    }

    pub(super) fn warn(&mut self, id: CheckId, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(id, Status::Warn, detail.into(), Some(fix.into()));
    }

    pub(super) fn fail(&mut self, id: CheckId, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(id, Status::Fail, detail.into(), Some(fix.into()));
    }

    pub(super) fn skip(&mut self, id: CheckId, reason: impl Into<String>) {
        self.push(id, Status::Skip, reason.into(), None);
    }

    /// Turns a passed check into a warning: `note` is added to what was seen. A check that
    /// did not pass is left as it is (its own failure or warning says more).
    pub(super) fn warn_if_passed(&mut self, id: CheckId, note: &str, fix: impl Into<String>) {
        if let Some(check) = self
            .checks
            .iter_mut()
            .find(|c| c.id == id.id() && c.status == Status::Pass)
        {
            check.status = Status::Warn;
            check.detail = format!("{}\n{note}", check.detail);
            check.fix = Some(fix.into());
        }
    }

    /// Skips every check in `ids` not reported yet, with the same reason.
    pub(super) fn skip_rest(&mut self, ids: &[CheckId], reason: &str) {
        for &id in ids {
            if !self.has(id) {
                self.skip(id, reason);
            }
        }
    }

    pub(super) fn has(&self, id: CheckId) -> bool {
        self.checks.iter().any(|c| c.id == id.id())
    }

    pub(super) fn status(&self, id: CheckId) -> Option<Status> {
        self.checks
            .iter()
            .find(|c| c.id == id.id())
            .map(|c| c.status)
    }

    /// Orders the checks, reports any never run as skipped (so none is silently dropped)
    /// and sets `ok`.
    pub(super) fn finish(mut self) -> Self {
        self.skip_rest(&CheckId::ALL, "not run");
        self.checks.sort_by_key(|c| {
            CheckId::ALL
                .iter()
                .position(|id| id.id() == c.id)
                .unwrap_or(usize::MAX)
        });
        self.ok = self.checks.iter().all(|c| c.status != Status::Fail);
        self
    }

    /// The checklist for people.
    pub(super) fn render(&self, heading: &str) -> String {
        let mut out = format!("woodpecker-s3-logs doctor: {heading}\n\n");
        for check in &self.checks {
            let mut lines = check.detail.lines();
            let _ = writeln!(
                out,
                "{} {:<20} {}",
                check.status.mark(),
                check.title,
                lines.next().unwrap_or_default()
            );
            for line in lines {
                let _ = writeln!(out, "{:>23}{line}", "");
            }
            if let Some(fix) = &check.fix {
                let _ = writeln!(out, "{:>23}fix: {fix}", "");
            }
        }
        let count = |status| self.checks.iter().filter(|c| c.status == status).count();
        let _ = writeln!(
            out,
            "\n{} passed, {} warnings, {} failed, {} skipped: {}",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip),
            if self.ok {
                "ready for Woodpecker"
            } else {
                "fix the ✘ lines above and run doctor again"
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_reports_are_ordered_complete_and_judged_by_failures_only() {
        let mut report = Report::default();
        report.warn(CheckId::ConditionalWrite, "ignored", "nothing to do");
        report.pass(CheckId::Settings, "a=1\nb=2");
        let report = report.finish();
        assert!(report.ok, "warnings do not fail");
        let ids: Vec<&str> = report.checks.iter().map(|c| c.id).collect();
        let all: Vec<&str> = CheckId::ALL.iter().map(|id| id.id()).collect();
        assert_eq!(ids, all);
        assert_eq!(report.status(CheckId::RoundTrip), Some(Status::Skip));
        let text = report.render("test");
        assert!(text.contains("✔ settings             a=1\n"), "{text}");
        assert!(text.contains("\n                       b=2\n"), "{text}");
        assert!(text.contains("fix: nothing to do"), "{text}");

        let mut failed = Report::default();
        failed.fail(CheckId::Bucket, "missing", "create it");
        assert!(!failed.finish().ok);
    }

    #[test]
    fn json_has_the_stable_field_names() {
        let mut report = Report::default();
        report.fail(CheckId::ObjectPut, "denied", "grant s3:PutObject");
        let json = serde_json::to_value(report.finish()).unwrap();
        assert_eq!(json["ok"], false);
        let put = &json["checks"][7];
        assert_eq!(put["id"], "object_put");
        assert_eq!(put["status"], "fail");
        assert_eq!(put["detail"], "denied");
        assert_eq!(put["fix"], "grant s3:PutObject");
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
    }
}
