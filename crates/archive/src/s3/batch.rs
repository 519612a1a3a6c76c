//! Listing page by page and deleting in batches: what `gc` and `migrate` use to walk and
//! clean a bucket of millions of objects in bounded memory.

use std::collections::HashMap;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::store::S3Store;
use crate::key::validate_prefix;
use crate::{DeleteFailure, ErrorKind, ListPage, ListedObject, MAX_BATCH, StoreError};

impl S3Store {
    pub(super) async fn list_one_page(
        &self,
        prefix: &str,
        start: Option<&str>,
        page_size: usize,
    ) -> Result<ListPage, StoreError> {
        validate_prefix(prefix)?;
        let full_prefix = format!("{}{prefix}", self.settings.folder);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&full_prefix)
            .max_keys(i32::try_from(page_size.clamp(1, MAX_BATCH)).unwrap_or(1000))
            .set_continuation_token(start.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.error(&full_prefix, "ListObjectsV2", e))?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?.strip_prefix(&self.settings.folder)?;
                Some(ListedObject {
                    key: key.to_owned(),
                    size: o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    last_modified: o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            })
            .collect();
        // A truncated page without a token would loop forever or stop early: say so.
        let next = match (page.is_truncated(), page.next_continuation_token()) {
            (Some(true), Some(token)) => Some(token.to_owned()),
            (Some(true), None) => {
                return Err(StoreError::IncompleteResponse {
                    target: self.target(&full_prefix),
                    request: "ListObjectsV2",
                    missing: "continuation token on a truncated page",
                });
            }
            _ => None,
        };
        Ok(ListPage { objects, next })
    }

    pub(super) async fn delete_in_batches(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let mut failures = Vec::new();
        for batch in keys.chunks(MAX_BATCH) {
            let mut identifiers = Vec::with_capacity(batch.len());
            let mut full_keys = HashMap::with_capacity(batch.len());
            for key in batch {
                let built = self.full_key(key).and_then(|full_key| {
                    let id = ObjectIdentifier::builder()
                        .key(&full_key)
                        .build()
                        .map_err(|e| StoreError::InvalidKey {
                            key: key.clone(),
                            reason: e.to_string(),
                        })?;
                    Ok((full_key, id))
                });
                match built {
                    Ok((full_key, id)) => {
                        full_keys.insert(full_key, key.clone());
                        identifiers.push(id);
                    }
                    Err(error) => failures.push(DeleteFailure {
                        key: key.clone(),
                        error,
                    }),
                }
            }
            if identifiers.is_empty() {
                continue;
            }
            failures.extend(self.delete_batch(identifiers, &full_keys).await);
        }
        failures
    }

    /// One `DeleteObjects` request in quiet mode (only failures are answered). `full_keys`
    /// maps each full key to the key the caller gave.
    async fn delete_batch(
        &self,
        identifiers: Vec<ObjectIdentifier>,
        full_keys: &HashMap<String, String>,
    ) -> Vec<DeleteFailure> {
        let whole_request_failed = |error: &StoreError| {
            full_keys
                .values()
                .map(|key| DeleteFailure {
                    key: key.clone(),
                    error: StoreError::BatchFailed {
                        key: key.clone(),
                        kind: error.kind(),
                        detail: error.to_string(),
                    },
                })
                .collect()
        };
        let delete = match Delete::builder()
            .set_objects(Some(identifiers))
            .quiet(true)
            .build()
        {
            Ok(delete) => delete,
            Err(e) => {
                let error = StoreError::Other {
                    kind: ErrorKind::Denied,
                    source: Box::new(e),
                };
                return whole_request_failed(&error);
            }
        };
        let answer = match self
            .client
            .delete_objects()
            .bucket(&self.settings.bucket)
            .delete(delete)
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                let error = self.error(&self.settings.folder, "DeleteObjects", e);
                return whole_request_failed(&error);
            }
        };
        answer
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| {
                let full_key = e.key().unwrap_or_default();
                let code = e.code().unwrap_or("UnknownError");
                let kind = if matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable") {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Denied
                };
                DeleteFailure {
                    key: full_keys
                        .get(full_key)
                        .cloned()
                        .unwrap_or_else(|| full_key.to_owned()),
                    error: StoreError::KeyNotDeleted {
                        kind,
                        target: self.target(full_key),
                        code: code.to_owned(),
                        message: e.message().unwrap_or("no message").to_owned(),
                    },
                }
            })
            .collect()
    }
}
