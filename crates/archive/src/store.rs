//! The one trait every archive backend implements.

use std::collections::BTreeMap;
use std::path::Path;

use crate::StoreError;

/// Metadata written with an object and read back from it (S3 user metadata, `x-amz-meta-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type` of the object.
    pub content_type: String,
    /// `Content-Encoding` of the object (`zstd` for archives).
    pub content_encoding: String,
    /// Lower-case keys without the `x-amz-meta-` prefix.
    pub user: BTreeMap<String, String>,
}

/// What a stored object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes, as the store reports it.
    pub size: u64,
    /// What was written with it.
    pub meta: ObjectMeta,
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

    /// A short human description for logs, e.g. `s3://bucket/prefix` or a path.
    fn describe(&self) -> String;
}
