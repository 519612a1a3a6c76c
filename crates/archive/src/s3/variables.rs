//! The S3 backend's `WOODPECKER_LOG_STORE_S3_*` variables, each declared once: name, default,
//! parser and the README's one-line doc. How they combine is [`S3Settings::from_source`].
//!
//! [`S3Settings::from_source`]: super::S3Settings::from_source

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use settings::DefaultValue::{Described, Literal};
use settings::{
    Setting, SettingDoc, SettingError, parse_bool, parse_duration, parse_number, parse_size,
};

use super::settings::{CaBundle, ChecksumMode, Sse};

const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
const MAX_CONCURRENCY: usize = 64;

/// The bucket; unset means the local directory.
pub const BUCKET: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_BUCKET",
    default: Described("unset"),
    doc: "bucket; unset = archive to a local directory",
    parse: parse_bucket,
};

/// Key prefix inside the bucket.
pub const BUCKET_FOLDER: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER",
    default: Described("empty"),
    doc: "key prefix inside the bucket",
    parse: normalize_folder,
};

/// A custom endpoint.
pub const ENDPOINT: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ENDPOINT",
    default: Described("AWS"),
    doc: "custom endpoint (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` work too)",
    parse: parse_endpoint,
};

/// Path-style addressing.
pub const PATH_STYLE: Setting<bool> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_PATH_STYLE",
    default: Literal("false"),
    doc: "path-style addressing (MinIO, SeaweedFS, Ceph, Garage; needed for an IP-address endpoint)",
    parse: parse_bool,
};

/// The region.
pub const REGION: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_REGION",
    default: Described("AWS chain"),
    doc: "region; `us-east-1` when none is found and a custom endpoint is set",
    parse: parse_region,
};

pub(crate) const CHECKSUM: Setting<ChecksumMode> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_CHECKSUM",
    default: Described("`when_required` on custom endpoints"),
    doc: "request checksums: `when_supported` or `when_required` (the SDK's default trailers break many S3-compatible servers)",
    parse: parse_checksum,
};

/// Parsed alone it gives `Kms { key_id: None }`; `from_source` adds `SSE_KMS_KEY_ID`.
pub const SSE: Setting<Sse> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_SSE",
    default: Described("none"),
    doc: "server-side encryption: `AES256` or `aws:kms`",
    parse: parse_sse,
};

/// The KMS key for `aws:kms`.
pub const SSE_KMS_KEY_ID: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_SSE_KMS_KEY_ID",
    default: Described("bucket default"),
    doc: "KMS key for `aws:kms`",
    // Any text: KMS accepts key ids, ARNs and aliases, and says which one it does not know.
    parse: |_, value| Ok(value.to_owned()),
};

/// The storage class of uploads.
pub const STORAGE_CLASS: Setting<String> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_STORAGE_CLASS",
    default: Described("bucket default"),
    doc: "e.g. `STANDARD_IA`",
    parse: parse_storage_class,
};

/// Extra trusted CAs for the endpoint.
pub const CA_BUNDLE: Setting<CaBundle> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_CA_BUNDLE",
    default: Described("system roots"),
    doc: "PEM file of extra trusted CAs for the endpoint",
    parse: read_ca_bundle,
};

pub(crate) const UPLOAD_CONCURRENCY: Setting<usize> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_UPLOAD_CONCURRENCY",
    default: Literal("4"),
    doc: "parts in flight per multipart upload",
    parse: |variable, value| parse_number(variable, value, 1..=MAX_CONCURRENCY),
};

/// Size from which logs go up in parts.
pub const PART_SIZE: Setting<u64> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_PART_SIZE",
    default: Literal("8MiB"),
    doc: "logs at least this big upload in parts of this size (≥ 5 MiB)",
    parse: parse_part_size,
};

/// Time allowed to connect.
pub const CONNECT_TIMEOUT: Setting<Duration> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_CONNECT_TIMEOUT",
    default: Literal("5s"),
    doc: "time allowed to open a connection to the endpoint",
    parse: positive_duration,
};

/// Time allowed for one request attempt.
pub const OPERATION_TIMEOUT: Setting<Duration> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_OPERATION_TIMEOUT",
    default: Literal("2m"),
    doc: "time allowed for one request attempt (one upload part, one GET)",
    parse: positive_duration,
};

/// Not a variable of ours: the AWS SDK reads these. Listed so the README's table says where
/// credentials come from.
const AWS_CHAIN: SettingDoc = SettingDoc {
    name: "AWS_*",
    default: Described(""),
    doc: "credentials and region through the standard AWS chain: env keys, `AWS_PROFILE` + shared files, web identity (IRSA), ECS/EKS, IMDSv2",
};

/// Every variable the S3 backend reads, in the README's order.
pub(crate) const VARIABLES: &[SettingDoc] = &[
    BUCKET.documented(),
    BUCKET_FOLDER.documented(),
    ENDPOINT.documented(),
    PATH_STYLE.documented(),
    REGION.documented(),
    CHECKSUM.documented(),
    SSE.documented(),
    SSE_KMS_KEY_ID.documented(),
    STORAGE_CLASS.documented(),
    CA_BUNDLE.documented(),
    UPLOAD_CONCURRENCY.documented(),
    PART_SIZE.documented(),
    CONNECT_TIMEOUT.documented(),
    OPERATION_TIMEOUT.documented(),
    AWS_CHAIN,
];

/// S3's bucket naming rules, loosely: enough to catch `s3://bucket`, slashes and spaces.
fn parse_bucket(variable: &str, bucket: &str) -> Result<String, SettingError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        });
    if ok {
        Ok(bucket.to_owned())
    } else {
        Err(SettingError::new(
            variable,
            bucket,
            "expected a bucket name (3-63 characters: a-z 0-9 . - _), not a URL or path",
        ))
    }
}

/// `logs`, `/logs/`, `logs/ci` → `logs/`, `logs/ci/`.
fn normalize_folder(variable: &str, folder: &str) -> Result<String, SettingError> {
    let trimmed = folder.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let probe = format!("{trimmed}/x");
    crate::key::validate_key(&probe).map_err(|_| {
        SettingError::new(
            variable,
            folder,
            "expected a key prefix such as woodpecker/logs (segments of A-Z a-z 0-9 . _ -, none starting with '.')",
        )
    })?;
    Ok(format!("{trimmed}/"))
}

/// Also checks the SDK's `AWS_ENDPOINT_URL*` fallbacks, under their own names.
pub(crate) fn parse_endpoint(variable: &str, value: &str) -> Result<String, SettingError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(SettingError::new(
            variable,
            &super::redact::redact_endpoint(value),
            "expected a URL such as https://s3.example.com or http://127.0.0.1:9000",
        )),
    }
}

fn parse_region(variable: &str, value: &str) -> Result<String, SettingError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(value.to_owned())
    } else {
        Err(SettingError::new(
            variable,
            value,
            "expected a region name such as us-east-1",
        ))
    }
}

fn parse_checksum(variable: &str, value: &str) -> Result<ChecksumMode, SettingError> {
    match value.to_ascii_lowercase().as_str() {
        "when_supported" => Ok(ChecksumMode::WhenSupported),
        "when_required" => Ok(ChecksumMode::WhenRequired),
        _ => Err(SettingError::new(
            variable,
            value,
            "expected when_supported or when_required",
        )),
    }
}

fn parse_sse(variable: &str, value: &str) -> Result<Sse, SettingError> {
    match value {
        "AES256" => Ok(Sse::Aes256),
        "aws:kms" => Ok(Sse::Kms { key_id: None }),
        _ => Err(SettingError::new(
            variable,
            value,
            "expected AES256 or aws:kms",
        )),
    }
}

/// Any token: S3-compatible servers define classes of their own; the server refuses unknown
/// ones with a message naming the class.
fn parse_storage_class(variable: &str, value: &str) -> Result<String, SettingError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(value.to_owned())
    } else {
        Err(SettingError::new(
            variable,
            value,
            "expected a storage class such as STANDARD_IA",
        ))
    }
}

fn read_ca_bundle(variable: &str, path: &str) -> Result<CaBundle, SettingError> {
    let pem = std::fs::read(path)
        .map_err(|e| SettingError::new(variable, path, format!("cannot read the file: {e}")))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| {
            SettingError::new(variable, path, format!("not a PEM certificate file: {e:?}"))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(SettingError::new(
            variable,
            path,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
        ));
    }
    Ok(CaBundle {
        path: PathBuf::from(path),
        pem,
    })
}

fn parse_part_size(variable: &str, value: &str) -> Result<u64, SettingError> {
    let size = parse_size(variable, value)?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size) {
        return Err(SettingError::new(
            variable,
            value,
            "S3 parts must be from 5MiB to 5GiB",
        ));
    }
    Ok(size)
}

fn positive_duration(variable: &str, value: &str) -> Result<Duration, SettingError> {
    let d = parse_duration(variable, value)?;
    if d.is_zero() {
        return Err(SettingError::new(variable, value, "must be more than 0"));
    }
    Ok(d)
}
