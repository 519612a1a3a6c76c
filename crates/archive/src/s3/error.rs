//! How the SDK's errors become [`StoreError`]s: denied or transient, with one line of text
//! an admin can act on.

use std::error::Error as _;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::{ErrorKind, StoreError};

/// Turns an SDK error into a [`StoreError`] whose text tells an admin what happened:
/// `s3://bucket/key: PutObject: AccessDenied: Access Denied (HTTP 403)`.
pub(super) fn map_sdk_error<E>(
    target: &str,
    request: &str,
    err: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, detail) = classify(&err);
    StoreError::Request {
        kind,
        request: request.to_owned(),
        target: target.to_owned(),
        detail,
        source: Box::new(err),
    }
}

/// Denied or transient, and the text after `target: request: `.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> (ErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = err {
        let status = service.raw().status().as_u16();
        let code = service.err().code().unwrap_or(match status {
            301 => "PermanentRedirect (wrong region or endpoint)",
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            _ => "UnknownError",
        });
        let message = service.err().message().unwrap_or("no message");
        let kind = if is_transient(status, code) {
            ErrorKind::Transient
        } else {
            ErrorKind::Denied
        };
        return (kind, format!("{code}: {message} (HTTP {status})"));
    }
    // Credentials come before the request is sent: a missing or refused identity is for
    // an admin to fix, a timed-out provider may pass.
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(creds) = cause.downcast_ref::<CredentialsError>() {
            let kind = match creds {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::Unhandled(_) => {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Denied,
            };
            return (
                kind,
                format!("no usable AWS credentials: {}", error_chain(creds)),
            );
        }
        source = cause.source();
    }
    let what = match err {
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(_) => "cannot reach the endpoint",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ConstructionFailure(_) => "cannot build the request",
        _ => "failed",
    };
    let kind = match err {
        SdkError::ConstructionFailure(_) => ErrorKind::Denied,
        _ => ErrorKind::Transient,
    };
    (kind, format!("{what}: {}", error_chain(err)))
}

/// An error and its causes on one line (`a: b: c`), each said once: the SDK's wrappers often
/// repeat their source's text, and the multi-line chain reports are folded with `; ` so the
/// admin reads one log line.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e
            .to_string()
            .replace(":\n  ", ": ")
            .replace("\n  ", "; ")
            .replace('\n', "; ");
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Server trouble and throttling pass; everything else (403 AccessDenied, 404
/// NoSuchBucket, 400 InvalidArgument, …) needs an admin.
fn is_transient(status: u16, code: &str) -> bool {
    status >= 500
        || status == 408
        || status == 429
        || matches!(
            code,
            "SlowDown"
                | "RequestTimeout"
                | "RequestTimeTooSkewed"
                | "Throttling"
                | "ThrottlingException"
                | "InternalError"
                | "ServiceUnavailable"
                | "OperationAborted"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_denied() {
        assert!(is_transient(503, "SlowDown"));
        assert!(is_transient(500, "InternalError"));
        assert!(is_transient(400, "RequestTimeout"));
        assert!(!is_transient(403, "AccessDenied"));
        assert!(!is_transient(404, "NoSuchBucket"));
        assert!(!is_transient(400, "InvalidArgument"));
    }
}
