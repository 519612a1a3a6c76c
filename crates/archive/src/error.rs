//! What a store operation can fail with: one variant per cause, each carrying what was being
//! done, on which key or path, and the underlying error; [`StoreError::kind`] sorts them into
//! the three classes callers act on.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Any error a dependency hands us, kept as the [`Error::source`] of a [`StoreError`].
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What a failure means for whoever retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store refused us: credentials, permissions, a missing bucket, a bad key. Retrying
    /// will not help until an admin acts; the text says what to fix.
    Denied,
    /// Anything that may pass: network, timeouts, 5xx, throttling.
    Transient,
    /// The object exists but is not what we wrote (truncated, wrong size, unreadable).
    Corrupt,
}

/// A failed store operation. The texts are what operators read in the log, so each names the
/// object (`s3://bucket/key` or a path) and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An S3 request failed: the service's answer, missing credentials, or the network.
    #[error("{target}: {request}: {detail}")]
    Request {
        /// Denied or transient, from the status, error code or credentials failure.
        kind: ErrorKind,
        /// The S3 request, e.g. `PutObject` or `UploadPart 3`.
        request: String,
        /// `s3://bucket/key`.
        target: String,
        /// What went wrong, e.g. `AccessDenied: Access Denied (HTTP 403)`.
        detail: String,
        /// The failure's name for metrics, e.g. `AccessDenied` or `timeout`; see
        /// [`StoreError::code`].
        code: &'static str,
        /// The SDK's error.
        source: BoxError,
    },
    /// A file operation of the local store failed.
    #[error("{}: {operation}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `open` or `fsync directory`.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error; permission errors make this `Denied`, others `Transient`.
        source: io::Error,
    },
    /// The local file to upload could not be opened or read.
    #[error("{}: {operation}: {source}", path.display())]
    UploadSource {
        /// `open` or `stat`.
        operation: &'static str,
        /// The file being uploaded.
        path: PathBuf,
        /// The error opening or reading it.
        source: BoxError,
    },
    /// The local file to upload changed size while it was copied.
    #[error(
        "{}: upload source changed while copying ({expected} bytes expected, {copied} copied)",
        path.display()
    )]
    UploadSourceChanged {
        /// The file being uploaded.
        path: PathBuf,
        /// Its size when the copy started.
        expected: u64,
        /// The bytes actually copied.
        copied: u64,
    },
    /// A key this product should never build (see `validate_key`).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A listing prefix that no valid key starts with.
    #[error("invalid key prefix {prefix:?}: must be the start of a valid key")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
    },
    /// No region for the S3 client: neither our setting nor the AWS chain names one.
    #[error(
        "s3://{bucket}: no AWS region: set {}, AWS_REGION or a region in the AWS profile",
        crate::s3::REGION.name
    )]
    NoRegion {
        /// The bucket the client was for.
        bucket: String,
    },
    /// The CA bundle's certificates cannot be made into a TLS trust store.
    #[error("{}={}: {source}", crate::s3::CA_BUNDLE.name, path.display())]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// The TLS library's error.
        source: BoxError,
    },
    /// S3 answered a request successfully but without what the protocol promises.
    #[error("{target}: {request} returned no {missing}")]
    IncompleteResponse {
        /// `s3://bucket/key`.
        target: String,
        /// The S3 request.
        request: &'static str,
        /// The field that was missing, e.g. `upload id`.
        missing: &'static str,
    },
    /// A blocking task of the local store did not finish (it panicked or was cancelled).
    #[error("local archive task failed: {source}")]
    Task {
        /// The join error.
        source: tokio::task::JoinError,
    },
    /// The object is not what was written: wrong size, missing after an upload, or a file this
    /// store cannot read.
    #[error("{target}: {problem}{}", cause_suffix(.source))]
    Corrupt {
        /// `s3://bucket/key`, a path, or a key.
        target: String,
        /// What does not match.
        problem: String,
        /// The decoding error, when there is one.
        source: Option<BoxError>,
    },
    /// `DeleteObjects` answered that it could not delete this key.
    #[error("{target}: DeleteObjects: {code}: {message}")]
    KeyNotDeleted {
        /// Denied or transient, from the error code.
        kind: ErrorKind,
        /// `s3://bucket/key`.
        target: String,
        /// The service's error code, e.g. `AccessDenied`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// A batch request failed as a whole: each of its keys reports the request's failure.
    #[error("{key}: {detail}")]
    BatchFailed {
        /// The key given.
        key: String,
        /// The request's class.
        kind: ErrorKind,
        /// The request's error text.
        detail: String,
    },
    /// A failure reported by a store implemented elsewhere (wrappers, test doubles), built
    /// with [`StoreError::denied`], [`StoreError::transient`] or [`StoreError::corrupt`].
    #[error("{source}")]
    Other {
        /// Its class.
        kind: ErrorKind,
        /// What happened.
        source: BoxError,
    },
}

/// `": cause"` after a corrupt object's problem, or nothing.
fn cause_suffix(source: &Option<BoxError>) -> String {
    source
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

impl StoreError {
    /// Which class of failure this is: what a caller decides retries and alerts by.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Request { kind, .. }
            | StoreError::Other { kind, .. }
            | StoreError::KeyNotDeleted { kind, .. }
            | StoreError::BatchFailed { kind, .. } => *kind,
            StoreError::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                    ErrorKind::Denied
                }
                _ => ErrorKind::Transient,
            },
            StoreError::InvalidKey { .. }
            | StoreError::InvalidPrefix { .. }
            | StoreError::NoRegion { .. }
            | StoreError::CaBundle { .. } => ErrorKind::Denied,
            StoreError::UploadSource { .. }
            | StoreError::UploadSourceChanged { .. }
            | StoreError::IncompleteResponse { .. }
            | StoreError::Task { .. } => ErrorKind::Transient,
            StoreError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }

    /// A short name of the failure, from a fixed set, for metric labels and alerts: never a
    /// key, a path or a message, so a label keeps few distinct values.
    ///
    /// An S3 answer gives its error code when it is one S3 documents (`AccessDenied`,
    /// `NoSuchBucket`, `SlowDown`, `InvalidAccessKeyId`, …; without a code the status:
    /// `Forbidden`, `NotFound`, …; other codes `http_4xx` / `http_5xx`); a request without an
    /// answer gives `timeout`, `dispatch` (the endpoint cannot be reached), `response` (the
    /// answer could not be read), `credentials` or `construction`. Local failures give `io`,
    /// `corrupt`, `invalid_key`, `no_region`, `ca_bundle`, `incomplete_response` or
    /// `internal`; keys a batch deletion could not delete, and stores outside this crate, `denied`,
    /// `transient` or `corrupt`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Request { code, .. } => code,
            StoreError::Io { .. }
            | StoreError::UploadSource { .. }
            | StoreError::UploadSourceChanged { .. } => "io",
            StoreError::InvalidKey { .. } | StoreError::InvalidPrefix { .. } => "invalid_key",
            StoreError::NoRegion { .. } => "no_region",
            StoreError::CaBundle { .. } => "ca_bundle",
            StoreError::IncompleteResponse { .. } => "incomplete_response",
            StoreError::Task { .. } => "internal",
            StoreError::Corrupt { .. } => "corrupt",
            // Batch deletions (`gc`) and stores elsewhere: the class only.
            StoreError::KeyNotDeleted { kind, .. }
            | StoreError::BatchFailed { kind, .. }
            | StoreError::Other { kind, .. } => match kind {
                ErrorKind::Denied => "denied",
                ErrorKind::Transient => "transient",
                ErrorKind::Corrupt => "corrupt",
            },
        }
    }

    /// Whether a conditional write was refused because its condition no longer held (412
    /// PreconditionFailed): someone else wrote the object since it was read.
    pub fn is_precondition_failed(&self) -> bool {
        self.code() == "PreconditionFailed"
    }

    /// A refusal reported by a store outside this crate; `source`'s text is the message.
    pub fn denied(source: impl Into<BoxError>) -> Self {
        Self::other(ErrorKind::Denied, source)
    }

    /// A passing failure reported by a store outside this crate.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::other(ErrorKind::Transient, source)
    }

    /// A corrupt object found by code outside this crate (e.g. a check after an upload).
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        Self::other(ErrorKind::Corrupt, source)
    }

    fn other(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        StoreError::Other {
            kind,
            source: source.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, operation: &'static str, source: io::Error) -> Self {
        StoreError::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt_object(target: impl fmt::Display, problem: impl Into<String>) -> Self {
        StoreError::Corrupt {
            target: target.to_string(),
            problem: problem.into(),
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_object_and_the_cause() {
        let denied = StoreError::io(
            "/archive/logs/1",
            "open",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind(), ErrorKind::Denied);
        assert_eq!(
            denied.to_string(),
            format!(
                "/archive/logs/1: open: {}",
                io::Error::from(io::ErrorKind::PermissionDenied)
            )
        );
        let full = StoreError::io("/archive", "fsync directory", io::Error::other("disk gone"));
        assert_eq!(full.kind(), ErrorKind::Transient);

        let unreadable = StoreError::Corrupt {
            target: "/archive/logs/2".into(),
            problem: "unreadable metadata line".into(),
            source: Some("expected value".into()),
        };
        assert_eq!(unreadable.kind(), ErrorKind::Corrupt);
        assert_eq!(
            unreadable.to_string(),
            "/archive/logs/2: unreadable metadata line: expected value"
        );
        assert_eq!(
            StoreError::corrupt_object("s3://b/k", "7 bytes after upload, 8 sent").to_string(),
            "s3://b/k: 7 bytes after upload, 8 sent"
        );
        assert_eq!(
            StoreError::NoRegion { bucket: "b".into() }.to_string(),
            "s3://b: no AWS region: set WOODPECKER_LOG_STORE_S3_REGION, AWS_REGION or a region in the AWS profile"
        );
        assert_eq!(
            StoreError::IncompleteResponse {
                target: "s3://b/k".into(),
                request: "CreateMultipartUpload",
                missing: "upload id",
            }
            .to_string(),
            "s3://b/k: CreateMultipartUpload returned no upload id"
        );
    }

    #[test]
    fn other_stores_keep_their_text_and_class() {
        let err = StoreError::transient("503 SlowDown (test fault)");
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert_eq!(err.to_string(), "503 SlowDown (test fault)");
        assert_eq!(StoreError::denied("no").kind(), ErrorKind::Denied);
        assert_eq!(StoreError::corrupt("bad").kind(), ErrorKind::Corrupt);
    }

    /// Metric labels: the class of a local failure, never its path or text.
    #[test]
    fn codes_name_the_class_without_the_details() {
        let io_error = StoreError::io("/archive/secret-step", "open", io::Error::other("x"));
        assert_eq!(io_error.code(), "io");
        assert_eq!(
            StoreError::corrupt_object("s3://b/k", "7 bytes").code(),
            "corrupt"
        );
        assert_eq!(
            StoreError::NoRegion { bucket: "b".into() }.code(),
            "no_region"
        );
        assert_eq!(StoreError::transient("SlowDown").code(), "transient");
        assert_eq!(StoreError::denied("AccessDenied").code(), "denied");
    }
}
