//! Multipart uploads that must not be left behind: S3 keeps (and bills) the parts of an
//! upload that is neither completed nor aborted, invisibly to listings of objects. An upload
//! that fails is aborted right away; one whose archive run was abandoned (its future dropped
//! at shutdown) is aborted by [`S3Store::abort_unfinished_uploads`] on the way out. Both are
//! bounded by [`MULTIPART_ABORT_TIMEOUT`], so a dead endpoint never holds up the exit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::store::S3Store;

/// How long aborting multipart uploads may take, all of them together.
pub const MULTIPART_ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The multipart uploads of a store that were begun and not yet completed or aborted:
/// upload id → full key. Shared by the store's clones.
#[derive(Debug, Default)]
pub(super) struct Unfinished(Mutex<HashMap<String, String>>);

impl Unfinished {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An upload began. It stays listed until [`Unfinished::ended`]: if its future is dropped
    /// before that, the entry is what lets the store abort it later.
    pub(super) fn began(&self, full_key: &str, upload_id: &str) {
        self.lock()
            .insert(upload_id.to_owned(), full_key.to_owned());
    }

    /// The upload was completed or aborted.
    pub(super) fn ended(&self, upload_id: &str) {
        self.lock().remove(upload_id);
    }
}

impl S3Store {
    /// Aborts the multipart upload `upload_id` of `full_key`, within [`MULTIPART_ABORT_TIMEOUT`].
    pub(super) async fn abort_upload(&self, full_key: &str, upload_id: &str) -> Result<(), String> {
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .send();
        match tokio::time::timeout(MULTIPART_ABORT_TIMEOUT, request).await {
            Ok(Ok(_)) => {
                self.unfinished.ended(upload_id);
                Ok(())
            }
            Ok(Err(e)) => Err(self.error(full_key, "AbortMultipartUpload", e).to_string()),
            Err(_) => Err(format!(
                "{}: AbortMultipartUpload did not answer within {MULTIPART_ABORT_TIMEOUT:?}",
                self.target(full_key)
            )),
        }
    }

    /// Aborts every multipart upload this store began and did not finish (archive runs
    /// abandoned at shutdown), all within `timeout`; returns how many were aborted. What
    /// cannot be aborted in time is logged; a bucket lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) cleans it up later.
    pub async fn abort_unfinished_uploads(&self, timeout: Duration) -> usize {
        let uploads: Vec<(String, String)> = self.unfinished.lock().clone().into_iter().collect();
        if uploads.is_empty() {
            return 0;
        }
        let aborts = futures::future::join_all(
            uploads
                .iter()
                .map(|(upload_id, full_key)| self.abort_upload(full_key, upload_id)),
        );
        let Ok(results) = tokio::time::timeout(timeout, aborts).await else {
            tracing::warn!(
                uploads = uploads.len(),
                "unfinished multipart uploads not aborted within {timeout:?}; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes their parts"
            );
            return 0;
        };
        let mut aborted = 0;
        for result in results {
            match result {
                Ok(()) => aborted += 1,
                Err(error) => tracing::warn!(%error, "cannot abort an unfinished multipart upload"),
            }
        }
        tracing::info!(aborted, "aborted the multipart uploads abandoned at exit");
        aborted
    }
}
