//! Whether this bucket's server honours conditional writes, found out once per process with
//! the probe `doctor` uses ([`S3Store::probe_conditional_put`]): a PUT with
//! `If-None-Match: *` over an object just written. Servers that ignore the header (Garage,
//! older SeaweedFS) or refuse it (501) get an explicit fallback, logged once: replacements are
//! then guarded only by the engine's own knowledge of what it archived.

use std::time::{SystemTime, UNIX_EPOCH};

use super::probe::{ConditionalWrites, ProbeError};
use super::store::S3Store;
use crate::StoreError;

/// Where the probe object goes (under the folder): beside `doctor`'s probes, never a step key.
const PROBE_PREFIX: &str = "doctor";

impl S3Store {
    /// The server's answer to conditional writes, probed at the first call; a failed probe
    /// is not remembered (the next upload asks again).
    pub(super) async fn probed_conditional_writes(&self) -> Result<ConditionalWrites, StoreError> {
        self.conditional
            .get_or_try_init(|| self.probe_conditional_writes())
            .await
            .copied()
    }

    async fn probe_conditional_writes(&self) -> Result<ConditionalWrites, StoreError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!(
            "{PROBE_PREFIX}/conditional-write-probe-{nanos}-{}",
            std::process::id()
        );
        let body = b"woodpecker-s3-logs: does this server honour If-None-Match?\n";
        let store = self.describe_bucket();
        let outcome = match self.probe_put(&key, body).await {
            Ok(()) => {
                let outcome = self.probe_conditional_put(&key, body).await;
                if let Err(e) = self.probe_delete(&key).await {
                    tracing::warn!(error = %e, "could not remove the conditional-write probe object");
                }
                outcome
            }
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Refused for good (e.g. credentials that may write only under the archive's
            // keys): uploads must not wait for a probe that cannot succeed.
            Err(e @ ProbeError::Refused { status, .. })
                if (400..500).contains(&status) && !matches!(status, 408 | 429) =>
            {
                tracing::warn!(
                    %store,
                    error = %e,
                    "cannot probe whether the S3 server honours conditional writes; archive replacements fall back to the addon's own record of what it archived"
                );
                return Ok(ConditionalWrites::Ignored);
            }
            Err(e) => return Err(StoreError::transient(e)),
        };
        match outcome {
            ConditionalWrites::Honoured => tracing::info!(
                %store,
                "the S3 server honours conditional writes: archive replacements use If-None-Match / If-Match"
            ),
            ConditionalWrites::Ignored => tracing::warn!(
                %store,
                "the S3 server ignores conditional writes (If-None-Match / If-Match): replacements fall back to the addon's own record of what it archived; a log archived by this process whose object reads as missing is retried, never replaced by its late lines alone; keep one Woodpecker server per bucket folder"
            ),
            ConditionalWrites::Unsupported => tracing::warn!(
                %store,
                "the S3 server refuses conditional writes (501 NotImplemented): they are not sent; replacements fall back to the addon's own record of what it archived; keep one Woodpecker server per bucket folder"
            ),
        }
        Ok(outcome)
    }

    /// `s3://bucket/folder`, for the one log line above.
    fn describe_bucket(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.settings.folder)
    }
}
