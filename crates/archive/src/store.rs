//! The one trait every archive backend implements.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crate::{ConditionalWrites, StoreError};

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
    /// The store's entity tag of this version (quotes included, as S3 sends it), when the
    /// store has one: what a replacement names in `If-Match`.
    pub etag: Option<String>,
}

/// A condition on a write, checked by the store at the moment it writes (S3 conditional
/// writes), so a writer that read an object cannot replace a version it never saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteCondition {
    /// The key must not exist yet (`If-None-Match: *`).
    Absent,
    /// The key must still hold the version with this entity tag (`If-Match`).
    Matches(String),
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// The key, without the store's own folder.
    pub key: String,
    /// Bytes the object occupies: the object's size on S3; on the local store the file's
    /// size, metadata line included (what deleting it gives back).
    pub size: u64,
    /// When the object was last written, when the store says.
    pub last_modified: Option<SystemTime>,
}

/// One page of a listing: at most the page size of objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The objects of this page.
    pub objects: Vec<ListedObject>,
    /// Where the next page starts, or `None` after the last page. Opaque: pass it back to
    /// [`ObjectStore::list_page`] as it is.
    pub next: Option<String>,
}

/// The largest page [`ObjectStore::list_page`] returns, and the most keys one
/// [`ObjectStore::delete_many`] request removes (S3's limits for both).
pub const MAX_BATCH: usize = 1000;

/// A key that [`ObjectStore::delete_many`] could not remove.
#[derive(Debug)]
pub struct DeleteFailure {
    /// The key, as given.
    pub key: String,
    /// Why; a failure of the whole request is reported once per key of it.
    pub error: StoreError,
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

    /// As [`put_file`](ObjectStore::put_file), written only if `condition` holds when the
    /// store writes. A condition that does not hold fails with an error for which
    /// [`StoreError::is_precondition_failed`] is true, and nothing is written.
    ///
    /// Whether the store checks conditions at all is [`conditional_writes`]; the default
    /// (stores with one writer and no lag, test doubles) ignores the condition.
    ///
    /// [`conditional_writes`]: ObjectStore::conditional_writes
    async fn put_file_if(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<ObjectInfo, StoreError> {
        let _ = condition;
        self.put_file(key, body, meta).await
    }

    /// Whether [`put_file_if`](ObjectStore::put_file_if) conditions are checked by the store.
    /// S3 finds out once, by a probe (a server may ignore them: Garage, older SeaweedFS);
    /// the default is that they are ignored.
    async fn conditional_writes(&self) -> Result<ConditionalWrites, StoreError> {
        Ok(ConditionalWrites::Ignored)
    }

    /// The whole object, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError>;

    /// Size and metadata, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every key that starts with `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// One page of the keys that start with `prefix`, with their sizes: a listing of
    /// millions of keys in bounded memory. Every key comes once; the order is the store's
    /// (lexical on S3 and the local store; SeaweedFS lists directory by directory). `start` is `None` for the first page,
    /// then the previous page's [`ListPage::next`]; `page_size` is capped at [`MAX_BATCH`].
    ///
    /// The default lists everything and asks for each size: fine for test doubles, not for
    /// large stores (both real stores override it).
    async fn list_page(
        &self,
        prefix: &str,
        start: Option<&str>,
        page_size: usize,
    ) -> Result<ListPage, StoreError> {
        let page_size = page_size.clamp(1, MAX_BATCH);
        let mut objects = Vec::new();
        let mut more = false;
        for key in self.list(prefix).await? {
            if start.is_some_and(|start| key.as_str() <= start) {
                continue;
            }
            if objects.len() == page_size {
                more = true;
                break;
            }
            if let Some(info) = self.head(&key).await? {
                objects.push(ListedObject {
                    key,
                    size: info.size,
                    last_modified: None,
                });
            }
        }
        let next = more
            .then(|| objects.last().map(|o: &ListedObject| o.key.clone()))
            .flatten();
        Ok(ListPage { objects, next })
    }

    /// Removes up to [`MAX_BATCH`] keys in one request where the store has one
    /// (`DeleteObjects` on S3); missing keys count as removed. Returns the keys that could
    /// not be removed, each with its reason; an error of the whole request is returned as
    /// the failure of every key.
    ///
    /// The default deletes one key at a time.
    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        let mut failures = Vec::new();
        for key in keys {
            if let Err(error) = self.delete(key).await {
                failures.push(DeleteFailure {
                    key: key.clone(),
                    error,
                });
            }
        }
        failures
    }

    /// A short human description for logs, e.g. `s3://bucket/prefix` or a path.
    fn describe(&self) -> String;
}
