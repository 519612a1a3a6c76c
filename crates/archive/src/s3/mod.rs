//! The S3 backend, its settings and the variables they are read from.

mod batch;
mod error;
mod settings;
mod store;
mod variables;

pub use settings::{CaBundle, ChecksumMode, S3Settings, Sse};
pub use store::S3Store;
pub(crate) use variables::{CA_BUNDLE, REGION};
pub use variables::{MAX_PART_SIZE, MIN_PART_SIZE};
