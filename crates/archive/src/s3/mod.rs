//! The S3 backend, its settings and the variables they are read from.

mod batch;
mod checksum;
mod conditional;
mod error;
mod multipart;
mod probe;
mod probe_error;
mod redact;
mod settings;
mod store;
mod upload;
mod variables;

pub use checksum::READ_BACK_LIMIT;
pub use multipart::MULTIPART_ABORT_TIMEOUT;
pub use probe::{
    BucketProbe, ConditionalWrites, CredentialSource, ProbeError, ResolvedEndpoint, access_key_hint,
};
pub use redact::redact_endpoint;
pub use settings::{CaBundle, ChecksumMode, S3Settings, Sse};
pub use store::S3Store;
pub use variables::{
    BUCKET, BUCKET_FOLDER, CA_BUNDLE, CONNECT_TIMEOUT, ENDPOINT, OPERATION_TIMEOUT, PART_SIZE,
    PATH_STYLE, REGION, SSE, SSE_KMS_KEY_ID, STORAGE_CLASS,
};
pub use variables::{MAX_PART_SIZE, MIN_PART_SIZE};
