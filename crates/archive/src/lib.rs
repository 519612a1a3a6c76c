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
pub use s3::{CaBundle, ChecksumMode, MAX_PART_SIZE, MIN_PART_SIZE, S3Settings, S3Store, Sse};
pub use store::{
    DeleteFailure, ListPage, ListedObject, MAX_BATCH, ObjectInfo, ObjectMeta, ObjectStore,
};
