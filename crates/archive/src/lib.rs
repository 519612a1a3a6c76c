//! The archive: where finished step logs rest, one object per step.
//!
//! Everything above this crate talks to an [`ObjectStore`]; what is behind it (a local
//! directory, AWS S3, or any S3-compatible server) is chosen once, at start.

mod key;
mod local;
mod s3;
mod settings;
mod store;

pub use local::LocalDirStore;
pub use s3::{
    CaBundle, ChecksumMode, MAX_PART_SIZE, MIN_PART_SIZE, PREFIX as S3_PREFIX, S3Settings, S3Store,
    Sse,
};
pub use settings::{ProcessEnv, SettingError, Source, parse_bool, parse_duration};
pub use store::{ObjectInfo, ObjectMeta, ObjectStore, StoreError};
