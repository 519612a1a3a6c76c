//! What a probe request (see `probe.rs`) fails with: the SDK's error sorted into an HTTP
//! refusal (with its status and code), missing credentials, no answer, or a timeout.

use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::error::error_chain;
use super::variables::OPERATION_TIMEOUT;
use crate::{BoxError, StoreError};

/// Why a probe request failed, with what an admin needs to tell the causes apart.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The server answered with an error status.
    #[error("{target}: {request}: {code}: {message} (HTTP {status})")]
    Refused {
        /// The S3 request, e.g. `PutObject`.
        request: &'static str,
        /// `s3://bucket/key`.
        target: String,
        /// The HTTP status.
        status: u16,
        /// The S3 error code (`AccessDenied`, `NoSuchBucket`), or the status's name when the
        /// answer had no body (HEAD requests).
        code: String,
        /// The server's message.
        message: String,
        /// The SDK's error.
        source: BoxError,
    },
    /// The AWS credential chain gave no credentials.
    #[error("no usable AWS credentials: {detail}")]
    NoCredentials {
        /// What the chain said.
        detail: String,
        /// The chain's error, when there is one.
        source: Option<BoxError>,
    },
    /// No HTTP answer came: name resolution, connection, TLS, or the SDK's attempt timeout.
    #[error("{target}: {request}: cannot reach the endpoint: {detail}")]
    Unreachable {
        /// The S3 request.
        request: &'static str,
        /// `s3://bucket/key`.
        target: String,
        /// The transport's error chain on one line.
        detail: String,
        /// The SDK's error.
        source: BoxError,
    },
    /// The request (with its retries) did not finish within `OPERATION_TIMEOUT`.
    #[error("{target}: {request}: no answer within {timeout:?} ({})", OPERATION_TIMEOUT.name)]
    TimedOut {
        /// The S3 request.
        request: &'static str,
        /// `s3://bucket/key`.
        target: String,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// The SDK could not build the request or read the answer.
    #[error("{target}: {request}: {detail}")]
    Failed {
        /// The S3 request.
        request: &'static str,
        /// `s3://bucket/key`.
        target: String,
        /// The error chain on one line.
        detail: String,
        /// The SDK's error.
        source: BoxError,
    },
    /// The SDK's endpoint rules give no endpoint for these settings.
    #[error("s3://{bucket}: cannot work out the endpoint: {detail}")]
    Endpoint {
        /// The bucket.
        bucket: String,
        /// The endpoint rules' error.
        detail: String,
    },
    /// An answer without what the protocol promises.
    #[error("{target}: {request} returned no {missing}")]
    Incomplete {
        /// The S3 request.
        request: &'static str,
        /// `s3://bucket/key`.
        target: String,
        /// The missing field.
        missing: &'static str,
    },
    /// The probe key is not a key this store accepts.
    #[error(transparent)]
    Key(#[from] StoreError),
}

impl ProbeError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProbeError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The S3 error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ProbeError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether an HTTP answer came back (so name resolution, connection and TLS worked).
    pub fn server_answered(&self) -> bool {
        matches!(self, ProbeError::Refused { .. })
    }
}

/// Sorts an SDK error into refused (an HTTP answer), no credentials, unreachable or failed.
pub(super) fn from_sdk<E>(
    request: &'static str,
    target: &str,
    err: SdkError<E, HttpResponse>,
) -> ProbeError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let status = service.raw().status().as_u16();
        let code = service
            .err()
            .code()
            .map(str::to_owned)
            .unwrap_or_else(|| status_name(status).to_owned());
        let message = service.err().message().unwrap_or("no message").to_owned();
        return ProbeError::Refused {
            request,
            target: target.to_owned(),
            status,
            code,
            message,
            source: Box::new(err),
        };
    }
    let mut cause = std::error::Error::source(&err);
    while let Some(e) = cause {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return ProbeError::NoCredentials {
                detail: error_chain(creds),
                source: Some(Box::new(err)),
            };
        }
        cause = e.source();
    }
    let detail = error_chain(&err);
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ProbeError::Unreachable {
            request,
            target: target.to_owned(),
            detail,
            source: Box::new(err),
        },
        _ => ProbeError::Failed {
            request,
            target: target.to_owned(),
            detail,
            source: Box::new(err),
        },
    }
}

/// What HEAD answers are called when they carry no error body.
fn status_name(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        412 => "PreconditionFailed",
        501 => "NotImplemented",
        _ => "UnknownError",
    }
}
