//! The archive: where finished step logs rest, one object per step.
//!
//! Everything above this crate talks to an [`ObjectStore`]; what is behind it (a local
//! directory, AWS S3, or any S3-compatible server) is chosen once, at start.

#![forbid(unsafe_code)]

mod error;
mod key;
mod local;
mod s3;
mod store;

pub use error::{BoxError, ErrorKind, StoreError};
pub use local::LocalDirStore;
pub use s3::{
    BucketProbe, CaBundle, ChecksumMode, ConditionalWrites, CredentialSource, MAX_PART_SIZE,
    MIN_PART_SIZE, MULTIPART_ABORT_TIMEOUT, ProbeError, READ_BACK_LIMIT, ResolvedEndpoint,
    S3Settings, S3Store, Sse, access_key_hint, redact_endpoint,
};
/// The S3 backend's variables that tools name in their advice (e.g. `doctor`'s fixes).
pub mod variables {
    pub use crate::s3::{
        BUCKET, BUCKET_FOLDER, CA_BUNDLE, CONNECT_TIMEOUT, ENDPOINT, OPERATION_TIMEOUT, PART_SIZE,
        PATH_STYLE, REGION, SSE, SSE_KMS_KEY_ID, STORAGE_CLASS,
    };
}
pub use store::{
    DeleteFailure, ListPage, ListedObject, MAX_BATCH, ObjectInfo, ObjectMeta, ObjectStore,
    WriteCondition,
};
