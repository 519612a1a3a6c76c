//! One file to one object, verified: the write (single PUT or multipart, with the caller's
//! condition), then the proof that the store holds exactly the file, sent again at once when
//! the server refused the body for its digest or stored something else.

use std::path::Path;

use super::checksum::{Md5Sum, ReadBack, is_digest_mismatch};
use super::probe::ConditionalWrites;
use super::store::S3Store;
use crate::{ObjectInfo, ObjectMeta, StoreError, WriteCondition};

/// Uploads of one file in one call: a body refused for its digest, or found different when
/// read back, is sent again at once (the file is the truth) this many times in all.
const UPLOAD_ATTEMPTS: u32 = 3;

/// What a write answered.
pub(super) struct Written {
    /// Whether the server's ETags prove it stored the MD5 we computed.
    pub(super) proven: bool,
}

impl S3Store {
    /// Uploads `body` (`size` bytes) to `full_key` under `condition` and verifies it.
    pub(super) async fn upload_verified(
        &self,
        full_key: &str,
        body: &Path,
        size: u64,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<ObjectInfo, StoreError> {
        let mut condition = match condition {
            Some(_)
                if self.probed_conditional_writes().await? == ConditionalWrites::Unsupported =>
            {
                None
            }
            condition => condition.cloned(),
        };
        let mut attempt = 1;
        loop {
            let problem = match self
                .upload_once(full_key, body, size, meta, condition.as_ref())
                .await
            {
                Ok((info, ReadBack::Equal | ReadBack::Skipped)) => return Ok(info),
                Ok((info, ReadBack::Differs(problem))) => {
                    // Our damaged version is stored now: the next attempt replaces it.
                    if condition.is_some() {
                        condition = info.etag.map(WriteCondition::Matches);
                    }
                    StoreError::corrupt_object(self.target(full_key), problem)
                }
                Err(e) if is_digest_mismatch(&e) => e,
                Err(e) => return Err(e),
            };
            if attempt == UPLOAD_ATTEMPTS {
                return Err(problem);
            }
            tracing::warn!(error = %problem, attempt, "the upload arrived damaged; sending it again");
            attempt += 1;
        }
    }

    /// One upload of `body` (single PUT or multipart), then the check that the store holds
    /// it: size from a HEAD, bytes from the ETags or by reading the object back.
    async fn upload_once(
        &self,
        full_key: &str,
        body: &Path,
        size: u64,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<(ObjectInfo, ReadBack), StoreError> {
        let written = if size < self.settings.part_size {
            self.put_single(full_key, body, size, meta, condition)
                .await?
        } else {
            self.put_multipart(full_key, body, size, meta, condition)
                .await?
        };
        // Verify before anyone deletes the source: the object must exist with our size.
        let info = match self.head_full(full_key).await? {
            Some(info) if info.size == size => info,
            Some(info) => {
                return Err(StoreError::corrupt_object(
                    self.target(full_key),
                    format!("{} bytes after upload, {size} sent", info.size),
                ));
            }
            None => {
                return Err(StoreError::corrupt_object(
                    self.target(full_key),
                    "missing right after a successful upload",
                ));
            }
        };
        if written.proven {
            return Ok((info, ReadBack::Equal));
        }
        let md5 = Md5Sum::of_file(body, 0, size).await?;
        let read_back = self.read_back(full_key, size, md5).await?;
        Ok((info, read_back))
    }
}

/// The `If-None-Match` and `If-Match` headers of a write's condition.
pub(super) fn condition_headers(
    condition: Option<&WriteCondition>,
) -> (Option<String>, Option<String>) {
    match condition {
        None => (None, None),
        Some(WriteCondition::Absent) => (Some("*".to_owned()), None),
        Some(WriteCondition::Matches(etag)) => (None, Some(etag.clone())),
    }
}
