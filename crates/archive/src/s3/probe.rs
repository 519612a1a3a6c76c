//! One request at a time against the configured bucket, each answer kept apart: what
//! `woodpecker-s3-logs doctor` checks with. Unlike the [`ObjectStore`](crate::ObjectStore)
//! methods these keep the HTTP status and error code, the server's `Date` and
//! `x-amz-bucket-region` headers, and which link of the AWS credential chain answered, so a
//! failure can be told apart (missing bucket, permission, clock, network) and explained.
//!
//! Every request is bounded by `OPERATION_TIMEOUT` as a whole (retries included), so a probe
//! never hangs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};

use super::error::error_chain;
pub use super::probe_error::ProbeError;
use super::probe_error::from_sdk;
use super::store::S3Store;
use crate::BoxError;

/// Which link of the AWS credential chain answered. Never holds the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSource {
    /// The provider's own name, e.g. `EnvironmentVariable`, `ProfileFile`, `IMDSv2`,
    /// `WebIdentityToken`, `ECSContainer`.
    pub provider_name: String,
    /// What the SDK records about where the credentials came from (`CredentialsEnvVars`,
    /// `CredentialsImds`, …), as the SDK names them.
    pub features: Vec<String>,
    /// The access key id with its middle hidden (`AKIA…MPLE`): enough to tell identities
    /// apart, not enough to use.
    pub access_key_hint: String,
    /// When temporary credentials expire.
    pub expires: Option<SystemTime>,
}

/// The endpoint the SDK sends this bucket's requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// The URL from the SDK's endpoint rules (the bucket's virtual host, or the path-style or
    /// custom endpoint).
    pub url: String,
    /// Its host name or address.
    pub host: String,
    /// Its port (the scheme's default when none is given).
    pub port: u16,
    /// Whether it is `https`.
    pub https: bool,
}

/// What a HeadBucket answered.
#[derive(Debug)]
pub struct BucketProbe {
    /// Success, or why not.
    pub result: Result<(), ProbeError>,
    /// The region the client signs for.
    pub client_region: Option<String>,
    /// `x-amz-bucket-region`, when the server sent one (AWS does, even on a 301 or 403).
    pub bucket_region: Option<String>,
    /// The server's `Date` header, when an answer came.
    pub server_date: Option<SystemTime>,
    /// Our clock when the answer was read, to compare with `server_date`.
    pub local_date: SystemTime,
}

/// Whether the server honours `If-None-Match: *` on PutObject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// A PUT on an existing key was refused with 412 PreconditionFailed, as on AWS.
    Honoured,
    /// The PUT was accepted: the server ignores the header (Garage, older SeaweedFS).
    Ignored,
    /// The server refused the header itself with 501 NotImplemented.
    Unsupported,
}

impl S3Store {
    /// Asks the AWS credential chain for credentials, as every request does.
    pub async fn probe_credentials(&self) -> Result<CredentialSource, ProbeError> {
        let provider = self
            .credentials
            .clone()
            .ok_or_else(|| ProbeError::NoCredentials {
                detail: "no credentials provider is configured".to_owned(),
                source: None,
            })?;
        let timeout = self.settings.operation_timeout;
        let credentials = tokio::time::timeout(timeout, provider.provide_credentials())
            .await
            .map_err(|_| ProbeError::NoCredentials {
                detail: format!("the credential chain did not answer within {timeout:?}"),
                source: None,
            })?
            .map_err(|e: CredentialsError| ProbeError::NoCredentials {
                detail: error_chain(&e),
                source: Some(Box::new(e)),
            })?;
        Ok(CredentialSource {
            provider_name: provider_name(&credentials),
            features: credentials
                .get_property::<Vec<AwsCredentialFeature>>()
                .into_iter()
                .flatten()
                .map(|feature| format!("{feature:?}"))
                .collect(),
            access_key_hint: access_key_hint(credentials.access_key_id()),
            expires: credentials.expiry(),
        })
    }

    /// The endpoint the SDK's own rules give for this bucket, region, addressing style and
    /// custom endpoint.
    pub async fn probe_endpoint(&self) -> Result<ResolvedEndpoint, ProbeError> {
        let s = &self.settings;
        let bad = |detail: String| ProbeError::Endpoint {
            bucket: s.bucket.clone(),
            // The SDK's rules may quote the endpoint setting.
            detail: match &s.endpoint {
                Some(endpoint) => {
                    detail.replace(endpoint.as_str(), &super::redact::redact_endpoint(endpoint))
                }
                None => detail,
            },
        };
        let params = Params::builder()
            .bucket(&s.bucket)
            .set_region(self.client.config().region().map(|r| r.to_string()))
            .force_path_style(s.path_style)
            .set_endpoint(s.endpoint.clone())
            .use_fips(false)
            .use_dual_stack(false)
            .accelerate(false)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| bad(error_chain(&*e)))?;
        // Shown by `doctor`: never with a password the endpoint setting may carry.
        let url = super::redact::redact_endpoint(endpoint.url()).into_owned();
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err(bad(format!("{url} is not an http(s) URL"))),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = split_authority(authority, if https { 443 } else { 80 })
            .ok_or_else(|| bad(format!("no host in {url}")))?;
        Ok(ResolvedEndpoint {
            url,
            host,
            port,
            https,
        })
    }

    /// HeadBucket: does the bucket exist for these credentials, in which region, and what time
    /// the server thinks it is.
    pub async fn probe_bucket(&self) -> BucketProbe {
        let headers = HeaderCapture::default();
        let target = format!("s3://{}", self.settings.bucket);
        let result = self
            .timed(
                "HeadBucket",
                &target,
                self.client
                    .head_bucket()
                    .bucket(&self.settings.bucket)
                    .customize()
                    .interceptor(headers.clone())
                    .send(),
            )
            .await
            .map(drop);
        let seen = headers.taken();
        BucketProbe {
            result,
            client_region: self.client.config().region().map(|r| r.to_string()),
            bucket_region: seen.bucket_region,
            server_date: seen.date,
            local_date: SystemTime::now(),
        }
    }

    /// ListObjectsV2 of one key under the folder: what the addon's start-up check sends, and
    /// an error code where HeadBucket's bodiless 403 has none.
    pub async fn probe_list(&self) -> Result<(), ProbeError> {
        self.timed(
            "ListObjectsV2",
            &self.target(&self.settings.folder),
            self.client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(&self.settings.folder)
                .max_keys(1)
                .send(),
        )
        .await
        .map(drop)
    }

    /// PutObject of `body` at `key` (under the folder), with the uploads' encryption and
    /// storage class.
    pub async fn probe_put(&self, key: &str, body: &[u8]) -> Result<(), ProbeError> {
        let full_key = self.full_key(key)?;
        let (sse, kms_key) = self.sse();
        self.timed(
            "PutObject",
            &self.target(&full_key),
            self.client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(&full_key)
                .body(ByteStream::from(body.to_vec()))
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .set_storage_class(self.storage_class())
                .send(),
        )
        .await
        .map(drop)
    }

    /// HeadObject: the object's size.
    pub async fn probe_head(&self, key: &str) -> Result<u64, ProbeError> {
        let full_key = self.full_key(key)?;
        let target = self.target(&full_key);
        let output = self
            .timed(
                "HeadObject",
                &target,
                self.client
                    .head_object()
                    .bucket(&self.settings.bucket)
                    .key(&full_key)
                    .send(),
            )
            .await?;
        output
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(ProbeError::Incomplete {
                request: "HeadObject",
                target,
                missing: "Content-Length",
            })
    }

    /// GetObject: the object's bytes.
    pub async fn probe_get(&self, key: &str) -> Result<Vec<u8>, ProbeError> {
        let full_key = self.full_key(key)?;
        let target = self.target(&full_key);
        let timeout = self.settings.operation_timeout;
        let read = async {
            let output = self
                .client
                .get_object()
                .bucket(&self.settings.bucket)
                .key(&full_key)
                .send()
                .await
                .map_err(|e| from_sdk("GetObject", &target, e))?;
            let body = output
                .body
                .collect()
                .await
                .map_err(|e| ProbeError::Failed {
                    request: "GetObject",
                    target: target.clone(),
                    detail: format!("reading the body: {}", error_chain(&e)),
                    source: Box::new(e),
                })?;
            Ok(body.into_bytes().to_vec())
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(ProbeError::TimedOut {
                    request: "GetObject",
                    target: target.clone(),
                    timeout,
                })
            })
    }

    /// PutObject with `If-None-Match: *` on `key`, which must already exist: a server that
    /// honours conditional writes refuses it with 412.
    pub async fn probe_conditional_put(
        &self,
        key: &str,
        body: &[u8],
    ) -> Result<ConditionalWrites, ProbeError> {
        let full_key = self.full_key(key)?;
        let (sse, kms_key) = self.sse();
        let result = self
            .timed(
                "PutObject (If-None-Match: *)",
                &self.target(&full_key),
                self.client
                    .put_object()
                    .bucket(&self.settings.bucket)
                    .key(&full_key)
                    .body(ByteStream::from(body.to_vec()))
                    .if_none_match("*")
                    .set_server_side_encryption(sse)
                    .set_ssekms_key_id(kms_key)
                    .set_storage_class(self.storage_class())
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(ConditionalWrites::Ignored),
            Err(e) if e.status() == Some(412) => Ok(ConditionalWrites::Honoured),
            Err(e) if e.status() == Some(501) => Ok(ConditionalWrites::Unsupported),
            Err(e) => Err(e),
        }
    }

    /// DeleteObject.
    pub async fn probe_delete(&self, key: &str) -> Result<(), ProbeError> {
        let full_key = self.full_key(key)?;
        self.timed(
            "DeleteObject",
            &self.target(&full_key),
            self.client
                .delete_object()
                .bucket(&self.settings.bucket)
                .key(&full_key)
                .send(),
        )
        .await
        .map(drop)
    }

    /// CreateMultipartUpload, then AbortMultipartUpload of it (large logs go up in parts;
    /// the abort is what cleans up after a failed upload). Nothing is left behind when both
    /// succeed.
    pub async fn probe_multipart(&self, key: &str) -> Result<(), ProbeError> {
        let full_key = self.full_key(key)?;
        let target = self.target(&full_key);
        let (sse, kms_key) = self.sse();
        let created = self
            .timed(
                "CreateMultipartUpload",
                &target,
                self.client
                    .create_multipart_upload()
                    .bucket(&self.settings.bucket)
                    .key(&full_key)
                    .set_server_side_encryption(sse)
                    .set_ssekms_key_id(kms_key)
                    .set_storage_class(self.storage_class())
                    .send(),
            )
            .await?;
        let upload_id = created.upload_id().ok_or_else(|| ProbeError::Incomplete {
            request: "CreateMultipartUpload",
            target: target.clone(),
            missing: "upload id",
        })?;
        self.timed(
            "AbortMultipartUpload",
            &target,
            self.client
                .abort_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(&full_key)
                .upload_id(upload_id)
                .send(),
        )
        .await
        .map(drop)
    }

    /// Runs one request within `OPERATION_TIMEOUT`, its error made a [`ProbeError`].
    async fn timed<T, E>(
        &self,
        request: &'static str,
        target: &str,
        send: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, ProbeError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let timeout = self.settings.operation_timeout;
        match tokio::time::timeout(timeout, send).await {
            Ok(result) => result.map_err(|e| from_sdk(request, target, e)),
            Err(_) => Err(ProbeError::TimedOut {
                request,
                target: target.to_owned(),
                timeout,
            }),
        }
    }
}

/// `host[:port]` or `[v6]:port`, with `default` when no port is given.
fn split_authority(authority: &str, default: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The first and last four characters of an access key id (`AKIA…MPLE`), or a mask when it
/// is too short to show any of it safely: enough to tell identities apart in a report.
pub fn access_key_hint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "****".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The provider name the credentials carry. aws-credential-types 1.3 has no getter for it;
/// its `Debug` output (which redacts the secret) starts with `provider_name: "…"`.
fn provider_name(credentials: &aws_credential_types::Credentials) -> String {
    let text = format!("{credentials:?}");
    text.split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The headers a probe looks at, whatever the status.
#[derive(Clone, Debug, Default)]
struct HeaderCapture(Arc<Mutex<SeenHeaders>>);

#[derive(Debug, Default)]
struct SeenHeaders {
    date: Option<SystemTime>,
    bucket_region: Option<String>,
}

impl HeaderCapture {
    fn taken(&self) -> SeenHeaders {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Intercept for HeaderCapture {
    fn name(&self) -> &'static str {
        "ProbeHeaderCapture"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.response().headers();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(date) = headers
            .get("date")
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok())
            .and_then(|d| SystemTime::try_from(d).ok())
        {
            seen.date = Some(date);
        }
        if let Some(region) = headers.get("x-amz-bucket-region") {
            seen.bucket_region = Some(region.to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("127.0.0.1:9000", 80),
            Some(("127.0.0.1".into(), 9000))
        );
        assert_eq!(
            split_authority("logs.s3.eu-west-1.amazonaws.com", 443),
            Some(("logs.s3.eu-west-1.amazonaws.com".into(), 443))
        );
        assert_eq!(
            split_authority("[::1]:8333", 80),
            Some(("::1".into(), 8333))
        );
        assert_eq!(split_authority("[::1]", 443), Some(("::1".into(), 443)));
        assert_eq!(split_authority(":9000", 80), None);
        assert_eq!(split_authority("h:port", 80), None);
    }

    #[test]
    fn key_hints_hide_the_middle() {
        assert_eq!(access_key_hint("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(access_key_hint("short"), "****");
    }

    #[test]
    fn provider_name_from_the_credentials() {
        let credentials = aws_credential_types::Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "EnvironmentVariable",
        );
        assert_eq!(provider_name(&credentials), "EnvironmentVariable");
    }
}
