//! `WOODPECKER_LOG_STORE_S3_*` settings for the S3 backend.
//!
//! Everything is read and checked here, at start, so a typo fails with one line naming the
//! variable instead of surfacing later as a failed upload. Credentials are deliberately not
//! settings of ours: they come from the standard AWS chain (env, profiles, web identity,
//! ECS/EKS, IMDS) so they work the way every AWS tool does.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{SettingError, Source, parse_bool, parse_duration};

/// Prefix of every setting of this backend.
pub const PREFIX: &str = "WOODPECKER_LOG_STORE_S3_";

const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
const DEFAULT_PART_SIZE: u64 = 8 * MIB;
const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: usize = 64;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// How the SDK computes request checksums (`WOODPECKER_LOG_STORE_S3_CHECKSUM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    /// The SDK's default on AWS: a CRC checksum on every upload, sent as an aws-chunked
    /// trailer, which many S3-compatible servers reject.
    WhenSupported,
    /// Only where an operation requires one: what S3-compatible servers understand.
    WhenRequired,
}

/// Server-side encryption asked for on every upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sse {
    /// `AES256`: S3-managed keys.
    Aes256,
    /// `aws:kms`, with the bucket's default key when `key_id` is `None`.
    Kms { key_id: Option<String> },
}

/// Where the trusted roots for the endpoint are extended from (`CA_BUNDLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    /// The file's PEM text, read and checked at start.
    pub pem: Vec<u8>,
}

/// Everything the S3 backend needs besides credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending with `/`.
    pub folder: String,
    pub path_style: bool,
    /// Custom endpoint: `ENDPOINT`, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// `REGION`, else `AWS_REGION`/`AWS_DEFAULT_REGION`/profile (resolved at connect).
    pub region: Option<String>,
    /// `None`: when_required on a custom endpoint, the SDK's default on AWS.
    pub checksum: Option<ChecksumMode>,
    pub sse: Option<Sse>,
    pub storage_class: Option<String>,
    pub ca_bundle: Option<CaBundle>,
    /// Parts uploaded at once by a multipart upload.
    pub upload_concurrency: usize,
    /// Files at least this big are uploaded in parts of this size.
    pub part_size: u64,
    /// Time allowed to open a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request attempt (one PutObject, one part, one GET).
    pub operation_timeout: Duration,
}

impl S3Settings {
    /// Settings for a bucket with every other knob at its default; what tests and tools
    /// start from.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            folder: String::new(),
            path_style: false,
            endpoint: None,
            region: None,
            checksum: None,
            sse: None,
            storage_class: None,
            ca_bundle: None,
            upload_concurrency: DEFAULT_CONCURRENCY,
            part_size: DEFAULT_PART_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Reads the settings; `Ok(None)` when no bucket is set (the binary then archives to a
    /// local directory).
    pub fn from_source(source: &impl Source) -> Result<Option<Self>, SettingError> {
        let var = |name: &str| format!("{PREFIX}{name}");
        let get = |name: &str| source.get(&var(name)).map(|v| v.trim().to_owned());

        let Some(bucket) = get("BUCKET") else {
            return Ok(None);
        };
        check_bucket(&var("BUCKET"), &bucket)?;
        let mut s = Self::new(bucket);

        if let Some(folder) = get("BUCKET_FOLDER") {
            s.folder = normalize_folder(&var("BUCKET_FOLDER"), &folder)?;
        }
        if let Some(v) = get("PATH_STYLE") {
            s.path_style = parse_bool(&var("PATH_STYLE"), &v)?;
        }
        s.endpoint = match get("ENDPOINT") {
            Some(v) => Some(check_endpoint(&var("ENDPOINT"), &v)?),
            None if source
                .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) =>
            {
                None
            }
            None => match ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .into_iter()
                .find_map(|name| source.get(name).map(|v| (name, v)))
            {
                Some((name, v)) => Some(check_endpoint(name, v.trim())?),
                None => None,
            },
        };
        if let Some(v) = get("REGION") {
            if !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SettingError::new(
                    &var("REGION"),
                    &v,
                    "expected a region name such as us-east-1",
                ));
            }
            s.region = Some(v);
        }
        if let Some(v) = get("CHECKSUM") {
            s.checksum = Some(match v.to_ascii_lowercase().as_str() {
                "when_supported" => ChecksumMode::WhenSupported,
                "when_required" => ChecksumMode::WhenRequired,
                _ => {
                    return Err(SettingError::new(
                        &var("CHECKSUM"),
                        &v,
                        "expected when_supported or when_required",
                    ));
                }
            });
        }
        let kms_key = get("SSE_KMS_KEY_ID");
        s.sse = match (get("SSE"), kms_key) {
            (None, None) => None,
            (Some(v), key) if v == "aws:kms" => Some(Sse::Kms { key_id: key }),
            (Some(v), None) if v == "AES256" => Some(Sse::Aes256),
            (Some(v), Some(_)) if v == "AES256" => {
                return Err(SettingError::new(
                    &var("SSE_KMS_KEY_ID"),
                    &get("SSE_KMS_KEY_ID").unwrap_or_default(),
                    format!("only used with {}=aws:kms, not AES256", var("SSE")),
                ));
            }
            (Some(v), _) => {
                return Err(SettingError::new(
                    &var("SSE"),
                    &v,
                    "expected AES256 or aws:kms",
                ));
            }
            (None, Some(key)) => {
                return Err(SettingError::new(
                    &var("SSE_KMS_KEY_ID"),
                    &key,
                    format!("needs {}=aws:kms", var("SSE")),
                ));
            }
        };
        if let Some(v) = get("STORAGE_CLASS") {
            // Any token: S3-compatible servers define classes of their own; the server
            // refuses unknown ones with a message naming the class.
            if !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(SettingError::new(
                    &var("STORAGE_CLASS"),
                    &v,
                    "expected a storage class such as STANDARD_IA",
                ));
            }
            s.storage_class = Some(v);
        }
        if let Some(v) = get("CA_BUNDLE") {
            s.ca_bundle = Some(read_ca_bundle(&var("CA_BUNDLE"), &v)?);
        }
        if let Some(v) = get("UPLOAD_CONCURRENCY") {
            s.upload_concurrency = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
                .ok_or_else(|| {
                    SettingError::new(
                        &var("UPLOAD_CONCURRENCY"),
                        &v,
                        format!("expected a whole number from 1 to {MAX_CONCURRENCY}"),
                    )
                })?;
        }
        if let Some(v) = get("PART_SIZE") {
            s.part_size = parse_size(&var("PART_SIZE"), &v)?;
            if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s.part_size) {
                return Err(SettingError::new(
                    &var("PART_SIZE"),
                    &v,
                    "S3 parts must be from 5MiB to 5GiB",
                ));
            }
        }
        if let Some(v) = get("CONNECT_TIMEOUT") {
            s.connect_timeout = positive_duration(&var("CONNECT_TIMEOUT"), &v)?;
        }
        if let Some(v) = get("OPERATION_TIMEOUT") {
            s.operation_timeout = positive_duration(&var("OPERATION_TIMEOUT"), &v)?;
        }
        Ok(Some(s))
    }

    /// True when requests go somewhere other than AWS's own endpoints.
    pub fn custom_endpoint(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The checksum mode in effect: explicit, or when_required on a custom endpoint (the
    /// SDK's default trailing checksums break many S3-compatible servers).
    pub fn effective_checksum(&self) -> Option<ChecksumMode> {
        self.checksum
            .or(self.custom_endpoint().then_some(ChecksumMode::WhenRequired))
    }
}

/// S3's bucket naming rules, loosely: enough to catch `s3://bucket`, slashes and spaces.
fn check_bucket(variable: &str, bucket: &str) -> Result<(), SettingError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        });
    if ok {
        Ok(())
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

fn check_endpoint(variable: &str, value: &str) -> Result<String, SettingError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(SettingError::new(
            variable,
            value,
            "expected a URL such as https://s3.example.com or http://127.0.0.1:9000",
        )),
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

/// A byte size: `8388608`, `8MiB`, `8M`, `8MB`, `512KiB`, `1GiB`. All units are binary
/// (S3's part limits are stated in MiB).
fn parse_size(variable: &str, value: &str) -> Result<u64, SettingError> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| multiplier != 0)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| {
            SettingError::new(variable, value, "expected a size such as 8MiB or 16777216")
        })
}

fn positive_duration(variable: &str, value: &str) -> Result<Duration, SettingError> {
    let d = parse_duration(variable, value)?;
    if d.is_zero() {
        return Err(SettingError::new(variable, value, "must be more than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| {
                let k = if k.starts_with("AWS_") {
                    (*k).to_owned()
                } else {
                    format!("{PREFIX}{k}")
                };
                (k, (*v).to_owned())
            })
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<S3Settings>, SettingError> {
        S3Settings::from_source(&env(pairs))
    }

    #[test]
    fn no_bucket_means_local_directory() {
        assert_eq!(parse(&[("PATH_STYLE", "true")]).unwrap(), None);
    }

    #[test]
    fn defaults() {
        let s = parse(&[("BUCKET", "logs")]).unwrap().unwrap();
        assert_eq!(s, S3Settings::new("logs"));
        assert_eq!(s.part_size, 8 * MIB);
        assert_eq!(s.effective_checksum(), None);
    }

    #[test]
    fn everything_set() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        std::fs::write(&pem, cert.cert.pem()).unwrap();
        let s = parse(&[
            ("BUCKET", "ci-logs"),
            ("BUCKET_FOLDER", "/woodpecker/logs/"),
            ("PATH_STYLE", "true"),
            ("ENDPOINT", "http://127.0.0.1:9000/"),
            ("REGION", "eu-central-1"),
            ("SSE", "aws:kms"),
            ("SSE_KMS_KEY_ID", "arn:aws:kms:eu-central-1:1:key/abc"),
            ("STORAGE_CLASS", "STANDARD_IA"),
            ("CA_BUNDLE", pem.to_str().unwrap()),
            ("UPLOAD_CONCURRENCY", "8"),
            ("PART_SIZE", "16MiB"),
            ("CONNECT_TIMEOUT", "2s"),
            ("OPERATION_TIMEOUT", "1m"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.folder, "woodpecker/logs/");
        assert!(s.path_style);
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-central-1"));
        assert_eq!(
            s.sse,
            Some(Sse::Kms {
                key_id: Some("arn:aws:kms:eu-central-1:1:key/abc".into())
            })
        );
        assert_eq!(s.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(s.ca_bundle.as_ref().unwrap().path, pem);
        assert_eq!(s.upload_concurrency, 8);
        assert_eq!(s.part_size, 16 * MIB);
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.operation_timeout, Duration::from_secs(60));
        // A custom endpoint switches checksums to what S3-compatible servers accept.
        assert_eq!(s.effective_checksum(), Some(ChecksumMode::WhenRequired));
    }

    #[test]
    fn sdk_endpoint_variables_count_as_custom_endpoint() {
        let s = parse(&[("BUCKET", "logs"), ("AWS_ENDPOINT_URL", "http://h:1")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://h:1"));
        let s = parse(&[
            ("BUCKET", "logs"),
            ("AWS_ENDPOINT_URL", "http://h:1"),
            ("AWS_ENDPOINT_URL_S3", "http://s3:2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://s3:2"));
        assert_eq!(s.effective_checksum(), Some(ChecksumMode::WhenRequired));
        let s = parse(&[
            ("BUCKET", "logs"),
            ("AWS_ENDPOINT_URL", "http://h:1"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, None);
    }

    #[test]
    fn explicit_checksum_wins() {
        let s = parse(&[
            ("BUCKET", "logs"),
            ("ENDPOINT", "https://s3.example.com"),
            ("CHECKSUM", "when_supported"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.effective_checksum(), Some(ChecksumMode::WhenSupported));
    }

    #[test]
    fn sizes() {
        let p = |v| parse_size("X", v);
        assert_eq!(p("8388608").unwrap(), 8 * MIB);
        assert_eq!(p("8M").unwrap(), 8 * MIB);
        assert_eq!(p("8 MB").unwrap(), 8 * MIB);
        assert_eq!(p("1GiB").unwrap(), 1024 * MIB);
        for bad in [
            "",
            "MiB",
            "8 parsecs",
            "-1",
            "1.5MiB",
            "99999999999999999999G",
        ] {
            p(bad).unwrap_err();
        }
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("BUCKET", "s3://logs")], "BUCKET"),
            (
                &[("BUCKET", "logs"), ("BUCKET_FOLDER", "a/../b")],
                "BUCKET_FOLDER",
            ),
            (&[("BUCKET", "logs"), ("PATH_STYLE", "yes")], "PATH_STYLE"),
            (
                &[("BUCKET", "logs"), ("ENDPOINT", "127.0.0.1:9000")],
                "ENDPOINT",
            ),
            (
                &[("BUCKET", "logs"), ("AWS_ENDPOINT_URL_S3", "nope")],
                "AWS_ENDPOINT_URL_S3",
            ),
            (&[("BUCKET", "logs"), ("REGION", "eu central")], "REGION"),
            (&[("BUCKET", "logs"), ("CHECKSUM", "always")], "CHECKSUM"),
            (&[("BUCKET", "logs"), ("SSE", "kms")], "_SSE"),
            (
                &[("BUCKET", "logs"), ("SSE_KMS_KEY_ID", "k")],
                "SSE_KMS_KEY_ID",
            ),
            (
                &[
                    ("BUCKET", "logs"),
                    ("SSE", "AES256"),
                    ("SSE_KMS_KEY_ID", "k"),
                ],
                "SSE_KMS_KEY_ID",
            ),
            (
                &[("BUCKET", "logs"), ("STORAGE_CLASS", "a b")],
                "STORAGE_CLASS",
            ),
            (
                &[("BUCKET", "logs"), ("CA_BUNDLE", "/nonexistent/ca.pem")],
                "CA_BUNDLE",
            ),
            (
                &[("BUCKET", "logs"), ("UPLOAD_CONCURRENCY", "0")],
                "UPLOAD_CONCURRENCY",
            ),
            (&[("BUCKET", "logs"), ("PART_SIZE", "1MiB")], "PART_SIZE"),
            (&[("BUCKET", "logs"), ("PART_SIZE", "lots")], "PART_SIZE"),
            (
                &[("BUCKET", "logs"), ("CONNECT_TIMEOUT", "0")],
                "CONNECT_TIMEOUT",
            ),
            (
                &[("BUCKET", "logs"), ("OPERATION_TIMEOUT", "5")],
                "OPERATION_TIMEOUT",
            ),
        ];
        for (pairs, variable) in cases {
            let err = parse(pairs).expect_err(variable);
            assert!(err.variable.ends_with(variable), "{variable}: {err}");
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn ca_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("empty.pem");
        std::fs::write(&pem, "not a certificate\n").unwrap();
        let err = parse(&[("BUCKET", "logs"), ("CA_BUNDLE", pem.to_str().unwrap())]).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
