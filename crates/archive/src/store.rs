//! The one trait every archive backend implements.

use std::collections::BTreeMap;
use std::path::Path;

/// Metadata written with an object and read back from it (S3 user metadata, `x-amz-meta-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: String,
    pub content_encoding: String,
    /// Lower-case keys without the `x-amz-meta-` prefix.
    pub user: BTreeMap<String, String>,
}

/// What a stored object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub meta: ObjectMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store refused us: credentials, permissions, a missing bucket. Retrying will not
    /// help until an admin acts; the text says what to fix.
    #[error("{0}")]
    Denied(String),
    /// Anything that may pass: network, timeouts, 5xx, throttling.
    #[error("{0}")]
    Transient(String),
    /// The object exists but is not what we wrote (truncated, wrong size, unreadable).
    #[error("{0}")]
    Corrupt(String),
}

/// A flat key → bytes store. Keys are built only by this product (from validated step ids),
/// never from host input.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes `key` with the contents of the local file `body`, replacing any previous object
    /// atomically: a reader sees the old object or the new one, never a mix. Large files are
    /// streamed (multipart on S3) with bounded memory.
    ///
    /// Returns what the store holds under `key` afterwards, read back from the store (a HEAD
    /// on S3), so a caller can verify the upload without asking again.
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError>;

    /// The whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError>;

    /// Size and metadata, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every key that starts with `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// A short human description for logs and `doctor`, e.g. `s3://bucket/prefix` or a path.
    fn describe(&self) -> String;
}
