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
    let (kind, detail, code) = classify(&err);
    StoreError::Request {
        kind,
        request: request.to_owned(),
        target: target.to_owned(),
        detail,
        code,
        source: Box::new(err),
    }
}

/// The S3 error codes a metric label may carry as they are: those of S3's error reference
/// that this product can meet, plus the throttling names of AWS's SDKs. Any other code the
/// server sends becomes `http_4xx` or `http_5xx`, so a label never takes arbitrary values.
const KNOWN_S3_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "BadDigest",
    "BadRequest",
    "EntityTooLarge",
    "EntityTooSmall",
    "ExpiredToken",
    "Forbidden",
    "IncompleteBody",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidBucketName",
    "InvalidDigest",
    "InvalidObjectState",
    "InvalidPart",
    "InvalidPartOrder",
    "InvalidRequest",
    "InvalidToken",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "MalformedXML",
    "MethodNotAllowed",
    "MissingContentLength",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "NotFound",
    "NotImplemented",
    "NotSignedUp",
    "OperationAborted",
    "PermanentRedirect",
    "PreconditionFailed",
    "QuotaExceeded",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
    "TemporaryRedirect",
    "Throttling",
    "ThrottlingException",
    "TokenRefreshRequired",
    "XAmzContentSHA256Mismatch",
];

/// The metric label of a service answer: its code if S3 documents it, else the status class.
fn service_code(code: Option<&str>, status: u16) -> &'static str {
    let code = code.or(match status {
        301 => Some("PermanentRedirect"),
        400 => Some("BadRequest"),
        403 => Some("Forbidden"),
        404 => Some("NotFound"),
        _ => None,
    });
    if let Some(known) = code.and_then(|code| KNOWN_S3_CODES.iter().find(|k| **k == code)) {
        return known;
    }
    match status {
        400..=499 => "http_4xx",
        500..=599 => "http_5xx",
        _ => "http_other",
    }
}

/// Denied or transient, the text after `target: request: `, and the metric label.
fn classify<E>(err: &SdkError<E, HttpResponse>) -> (ErrorKind, String, &'static str)
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
        let label = service_code(service.err().code(), status);
        return (kind, format!("{code}: {message} (HTTP {status})"), label);
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
                "credentials",
            );
        }
        source = cause.source();
    }
    let (what, label) = match err {
        SdkError::TimeoutError(_) => ("timed out", "timeout"),
        // The SDK reports a connect timeout as a dispatch failure that says so.
        SdkError::DispatchFailure(failure) if failure.is_timeout() => ("timed out", "timeout"),
        SdkError::DispatchFailure(_) => ("cannot reach the endpoint", "dispatch"),
        SdkError::ResponseError(_) => ("unreadable response", "response"),
        SdkError::ConstructionFailure(_) => ("cannot build the request", "construction"),
        _ => ("failed", "sdk"),
    };
    let kind = match err {
        SdkError::ConstructionFailure(_) => ErrorKind::Denied,
        _ => ErrorKind::Transient,
    };
    (kind, format!("{what}: {}", error_chain(err)), label)
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

/// Server trouble, throttling, a body damaged on the way (the server's digest check
/// refused it: sending it again passes) and a conditional write that lost a race (read again
/// and retry) pass; everything else (403 AccessDenied, 404 NoSuchBucket, 400
/// InvalidArgument, …) needs an admin.
fn is_transient(status: u16, code: &str) -> bool {
    status >= 500
        || status == 408
        || status == 412
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
                | "BadDigest"
                | "InvalidDigest"
                | "XAmzContentSHA256Mismatch"
                | "IncompleteBody"
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
        assert!(is_transient(400, "BadDigest"));
        assert!(is_transient(412, "PreconditionFailed"));
    }

    /// Metric labels stay within a fixed set whatever the server sends.
    #[test]
    fn service_codes_are_bounded() {
        assert_eq!(service_code(Some("AccessDenied"), 403), "AccessDenied");
        assert_eq!(service_code(Some("NoSuchBucket"), 404), "NoSuchBucket");
        assert_eq!(service_code(Some("SlowDown"), 503), "SlowDown");
        assert_eq!(service_code(None, 403), "Forbidden");
        assert_eq!(service_code(None, 301), "PermanentRedirect");
        assert_eq!(service_code(Some("Step 42 of s3://b/key"), 409), "http_4xx");
        assert_eq!(service_code(Some("MadeUpByTheServer"), 502), "http_5xx");
        assert_eq!(service_code(None, 302), "http_other");
    }
}
