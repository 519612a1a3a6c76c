//! The S3 backend: AWS S3 or any S3-compatible server, through the AWS SDK for Rust.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    RequestChecksumCalculation, SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use futures::{StreamExt, TryStreamExt};

use super::checksum::Md5Sum;
use super::error::{error_chain, map_sdk_error};
use super::multipart::Unfinished;
use super::probe::ConditionalWrites;
use super::settings::{ChecksumMode, S3Settings, Sse};
use super::upload::{Written, condition_headers};
use crate::key::{validate_key, validate_prefix};
use crate::{
    DeleteFailure, ErrorKind, ListPage, ObjectInfo, ObjectMeta, ObjectStore, StoreError,
    WriteCondition,
};

/// S3 allows at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// An [`ObjectStore`] on an S3 bucket, keys under the configured folder.
#[derive(Clone, Debug)]
pub struct S3Store {
    pub(super) client: Client,
    pub(super) settings: S3Settings,
    /// The AWS chain as loaded; the client keeps it only inside its identity resolver.
    pub(super) credentials: Option<SharedCredentialsProvider>,
    /// Multipart uploads begun and not finished (see `multipart.rs`).
    pub(super) unfinished: Arc<Unfinished>,
    /// Whether the server honours conditional writes, probed at the first upload.
    pub(super) conditional: Arc<tokio::sync::OnceCell<ConditionalWrites>>,
}

impl S3Store {
    /// A client with the whole standard AWS chain for region and credentials. Nothing is
    /// sent: an unreachable bucket must not stop the addon from starting (see [`check`]).
    ///
    /// [`check`]: S3Store::check
    pub async fn connect(settings: S3Settings) -> Result<Self, StoreError> {
        Self::connect_with(settings, aws_config::defaults(BehaviorVersion::latest())).await
    }

    /// As [`connect`](S3Store::connect), starting from a caller's loader, e.g. one with an
    /// explicit credentials provider (tools, tests against local servers). The settings
    /// still decide endpoint, region, TLS roots, timeouts and checksums.
    pub async fn connect_with(
        settings: S3Settings,
        loader: ConfigLoader,
    ) -> Result<Self, StoreError> {
        let mut loader = loader
            .http_client(http_client(&settings)?)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.operation_timeout)
                    .build(),
            )
            // A download that stops sending bytes fails instead of hanging: the attempt
            // timeout covers only the time to the response headers.
            .stalled_stream_protection(StalledStreamProtectionConfig::enabled().build());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        } else if settings.custom_endpoint() {
            // Without a region the SDK cannot sign; S3-compatible servers accept any, and
            // asking EC2 instance metadata for one makes no sense off AWS.
            loader = loader.region(
                RegionProviderChain::first_try(
                    aws_config::environment::EnvironmentVariableRegionProvider::new(),
                )
                .or_else(aws_config::profile::ProfileFileRegionProvider::new())
                .or_else(Region::from_static("us-east-1")),
            );
        }
        if let Some(mode) = settings.effective_checksum() {
            loader = loader.request_checksum_calculation(match mode {
                ChecksumMode::WhenSupported => RequestChecksumCalculation::WhenSupported,
                ChecksumMode::WhenRequired => RequestChecksumCalculation::WhenRequired,
            });
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(StoreError::NoRegion {
                bucket: settings.bucket,
            });
        }
        let mut config =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            settings,
            credentials: sdk.credentials_provider(),
            unfinished: Arc::default(),
            conditional: Default::default(),
        })
    }

    /// One cheap request (a one-key listing of the folder) proving that the endpoint answers,
    /// the credentials work and the bucket exists; the error says which of them to fix.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&self.settings.folder)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error(&self.settings.folder, "ListObjectsV2", e))?;
        Ok(())
    }

    /// The settings this store was made with.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    pub(super) fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.settings.folder))
    }

    /// `s3://bucket/key`: how errors name an object.
    pub(super) fn target(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.settings.bucket)
    }

    pub(super) fn error<E>(
        &self,
        full_key: &str,
        request: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_error(&self.target(full_key), request, err)
    }

    pub(super) async fn put_single(
        &self,
        full_key: &str,
        body: &Path,
        size: u64,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<Written, StoreError> {
        let md5 = Md5Sum::of_file(body, 0, size).await?;
        let stream = ByteStream::from_path(body)
            .await
            .map_err(|e| upload_source_error(body, "open", e))?;
        let (sse, kms_key) = self.sse();
        let (if_none_match, if_match) = condition_headers(condition);
        let written = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(full_key)
            .body(stream)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .set_content_type(non_empty(&meta.content_type))
            .set_content_encoding(non_empty(&meta.content_encoding))
            .set_metadata(user_metadata(meta))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_storage_class(self.storage_class())
            .content_md5(md5.header())
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| self.error(full_key, "PutObject", e))?;
        Ok(Written {
            proven: self.etag_is_md5() && md5.is_etag(written.e_tag()),
        })
    }

    /// Whether this bucket's ETags of single PUTs and parts are the MD5 of the body: on AWS
    /// not with SSE-KMS; S3-compatible servers do it.
    fn etag_is_md5(&self) -> bool {
        !matches!(self.settings.sse, Some(Sse::Kms { .. }))
    }

    pub(super) async fn put_multipart(
        &self,
        full_key: &str,
        body: &Path,
        size: u64,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<Written, StoreError> {
        let (sse, kms_key) = self.sse();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(full_key)
            .set_content_type(non_empty(&meta.content_type))
            .set_content_encoding(non_empty(&meta.content_encoding))
            .set_metadata(user_metadata(meta))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_storage_class(self.storage_class())
            .send()
            .await
            .map_err(|e| self.error(full_key, "CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::IncompleteResponse {
                target: self.target(full_key),
                request: "CreateMultipartUpload",
                missing: "upload id",
            })?;
        self.unfinished.began(full_key, upload_id);

        let result = self.upload_parts(full_key, upload_id, body, size).await;
        let (if_none_match, if_match) = condition_headers(condition);
        let result = match result {
            Ok((parts, proven)) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .set_if_none_match(if_none_match)
                .set_if_match(if_match)
                .send()
                .await
                .map(|_| Written { proven })
                .map_err(|e| self.error(full_key, "CompleteMultipartUpload", e)),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            self.unfinished.ended(upload_id);
        } else if let Err(abort) = self.abort_upload(full_key, upload_id).await {
            // Parts of an abandoned upload are billed until aborted; a failed abort is only
            // worth a warning (a bucket lifecycle rule can clean up later, and the abort is
            // tried again at exit).
            tracing::warn!("{abort}");
        }
        result
    }

    /// Uploads the parts with at most `upload_concurrency` in flight. Each part streams
    /// from its slice of the file, so memory stays small whatever the part size, and carries
    /// its `Content-MD5`. Returns the parts and whether every part's ETag proves its MD5.
    async fn upload_parts(
        &self,
        full_key: &str,
        upload_id: &str,
        body: &Path,
        size: u64,
    ) -> Result<(Vec<CompletedPart>, bool), StoreError> {
        let part_size = part_size_for(size, self.settings.part_size);
        let count = size.div_ceil(part_size);
        futures::stream::iter(0..count)
            .map(|index| async move {
                let offset = index * part_size;
                let length = part_size.min(size - offset);
                let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                let md5 = Md5Sum::of_file(body, offset, length).await?;
                let stream = ByteStream::read_from()
                    .path(body)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| upload_source_error(body, "open", e))?;
                let uploaded = self
                    .client
                    .upload_part()
                    .bucket(&self.settings.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(i64::try_from(length).unwrap_or(i64::MAX))
                    .content_md5(md5.header())
                    .body(stream)
                    .send()
                    .await
                    .map_err(|e| self.error(full_key, &format!("UploadPart {number}"), e))?;
                let proven = md5.is_etag(uploaded.e_tag());
                let part = CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                    .set_checksum_crc32_c(uploaded.checksum_crc32_c().map(str::to_owned))
                    .set_checksum_crc64_nvme(uploaded.checksum_crc64_nvme().map(str::to_owned))
                    .set_checksum_sha1(uploaded.checksum_sha1().map(str::to_owned))
                    .set_checksum_sha256(uploaded.checksum_sha256().map(str::to_owned))
                    .build();
                Ok::<_, StoreError>((part, proven))
            })
            .buffered(self.settings.upload_concurrency)
            .try_fold(
                (Vec::new(), self.etag_is_md5()),
                |(mut parts, all), (part, proven)| {
                    parts.push(part);
                    futures::future::ready(Ok((parts, all && proven)))
                },
            )
            .await
    }

    /// HeadObject of a key with the folder already applied.
    pub(super) async fn head_full(&self, full_key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(full_key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectInfo {
                size: output
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                meta: ObjectMeta {
                    content_type: output.content_type().unwrap_or_default().to_owned(),
                    content_encoding: output.content_encoding().unwrap_or_default().to_owned(),
                    user: lower_case(output.metadata()),
                },
                etag: output.e_tag().map(str::to_owned),
            })),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => {
                // HEAD answers a bare 404 for a missing bucket too: tell the two apart, or a
                // deleted bucket would look like "no archive yet".
                self.check().await?;
                Ok(None)
            }
            Err(e) => Err(self.error(full_key, "HeadObject", e)),
        }
    }

    pub(super) fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.settings.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    pub(super) fn storage_class(&self) -> Option<StorageClass> {
        self.settings
            .storage_class
            .as_deref()
            .map(StorageClass::from)
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put_file(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_file_if(key, body, meta, None).await
    }

    async fn put_file_if(
        &self,
        key: &str,
        body: &Path,
        meta: &ObjectMeta,
        condition: Option<&WriteCondition>,
    ) -> Result<ObjectInfo, StoreError> {
        let full_key = self.full_key(key)?;
        let size = tokio::fs::metadata(body)
            .await
            .map_err(|e| upload_source_error(body, "stat", e))?
            .len();
        self.upload_verified(&full_key, body, size, meta, condition)
            .await
    }

    async fn conditional_writes(&self) -> Result<ConditionalWrites, StoreError> {
        self.probed_conditional_writes().await
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ObjectInfo)>, StoreError> {
        let full_key = self.full_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(self.error(&full_key, "GetObject", e)),
        };
        let info = ObjectInfo {
            size: output
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            meta: ObjectMeta {
                content_type: output.content_type().unwrap_or_default().to_owned(),
                content_encoding: output.content_encoding().unwrap_or_default().to_owned(),
                user: lower_case(output.metadata()),
            },
            etag: output.e_tag().map(str::to_owned),
        };
        let data = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Request {
                kind: ErrorKind::Transient,
                request: "GetObject".to_owned(),
                target: self.target(&full_key),
                detail: format!("reading the body: {}", error_chain(&e)),
                code: "response",
                source: Box::new(e),
            })?;
        let data = data.into_bytes().to_vec();
        if data.len() as u64 != info.size {
            return Err(StoreError::corrupt_object(
                self.target(&full_key),
                format!("{} bytes received, {} announced", data.len(), info.size),
            ));
        }
        Ok(Some((data, info)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let full_key = self.full_key(key)?;
        self.head_full(&full_key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| self.error(&full_key, "DeleteObject", e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let full_prefix = format!("{}{prefix}", self.settings.folder);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(&full_prefix, "ListObjectsV2", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter_map(|k| k.strip_prefix(&self.settings.folder))
                    .map(str::to_owned),
            );
        }
        // S3 lists in UTF-8 byte order already; some compatible servers do not.
        keys.sort();
        Ok(keys)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start: Option<&str>,
        page_size: usize,
    ) -> Result<ListPage, StoreError> {
        self.list_one_page(prefix, start, page_size).await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<DeleteFailure> {
        self.delete_in_batches(keys).await
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let mut text = format!("s3://{}/{}", s.bucket, s.folder);
        if let Some(endpoint) = &s.endpoint {
            text.push_str(&format!(" at {}", super::redact::redact_endpoint(endpoint)));
        }
        text
    }
}

/// The HTTPS client: the SDK's hyper/rustls client with our roots added when `CA_BUNDLE`
/// is set (native roots stay trusted, so AWS endpoints keep working).
fn http_client(
    settings: &S3Settings,
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, StoreError> {
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
    let Some(ca) = &settings.ca_bundle else {
        return Ok(builder.build_https());
    };
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(ca.pem.clone()))
        .build()
        .map_err(|e| StoreError::CaBundle {
            path: ca.path.clone(),
            source: Box::new(e),
        })?;
    Ok(builder.tls_context(context).build_https())
}

/// The file to upload could not be opened or measured.
fn upload_source_error(
    path: &Path,
    operation: &'static str,
    source: impl Into<crate::BoxError>,
) -> StoreError {
    StoreError::UploadSource {
        operation,
        path: path.to_owned(),
        source: source.into(),
    }
}

/// S3 parts are limited to 10,000: larger files get larger parts (whole MiB).
fn part_size_for(size: u64, configured: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    configured.max(needed)
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn user_metadata(meta: &ObjectMeta) -> Option<HashMap<String, String>> {
    (!meta.user.is_empty()).then(|| meta.user.clone().into_iter().collect())
}

fn lower_case(
    metadata: Option<&HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_s3_limits() {
        let mib = 1024 * 1024;
        assert_eq!(part_size_for(12 * mib, 5 * mib), 5 * mib);
        // 100 GiB at 8 MiB would be 12,800 parts: parts grow to 11 MiB (9,310 parts).
        let size = 100 * 1024 * mib;
        let part = part_size_for(size, 8 * mib);
        assert!(size.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % mib, 0);
    }
}
