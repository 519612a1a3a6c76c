//! The S3 backend and its settings.

mod settings;
mod store;

pub use settings::{CaBundle, ChecksumMode, MAX_PART_SIZE, MIN_PART_SIZE, PREFIX, S3Settings, Sse};
pub use store::S3Store;
