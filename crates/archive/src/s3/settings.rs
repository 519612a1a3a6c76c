//! What the S3 backend is configured with, read from its `WOODPECKER_LOG_STORE_S3_*`
//! variables (declared in `variables.rs`).
//!
//! Everything is read and checked here, at start, so a typo fails with one line naming the
//! variable instead of surfacing later as a failed upload. Credentials are deliberately not
//! settings of ours: they come from the standard AWS chain (env, profiles, web identity,
//! ECS/EKS, IMDS) so they work the way every AWS tool does.

use std::path::PathBuf;
use std::time::Duration;

use settings::{Setting, SettingDoc, SettingError, Source};

use super::variables::{
    BUCKET, BUCKET_FOLDER, CA_BUNDLE, CHECKSUM, CONNECT_TIMEOUT, ENDPOINT, OPERATION_TIMEOUT,
    PART_SIZE, PATH_STYLE, REGION, SSE, SSE_KMS_KEY_ID, STORAGE_CLASS, UPLOAD_CONCURRENCY,
    VARIABLES, parse_endpoint,
};

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
    Kms {
        /// `SSE_KMS_KEY_ID`: a key id, ARN or alias.
        key_id: Option<String>,
    },
}

/// Where the trusted roots for the endpoint are extended from (`CA_BUNDLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    /// The file named by the setting.
    pub path: PathBuf,
    /// The file's PEM text, read and checked at start.
    pub pem: Vec<u8>,
}

/// Everything the S3 backend needs besides credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket archives go to.
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending with `/`.
    pub folder: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    /// Custom endpoint: `ENDPOINT`, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// `REGION`, else `AWS_REGION`/`AWS_DEFAULT_REGION`/profile (resolved at connect).
    pub region: Option<String>,
    /// `None`: when_required on a custom endpoint, the SDK's default on AWS.
    pub checksum: Option<ChecksumMode>,
    /// Server-side encryption asked for on uploads; `None` leaves it to the bucket.
    pub sse: Option<Sse>,
    /// Storage class of uploads; `None` leaves it to the bucket.
    pub storage_class: Option<String>,
    /// Extra trusted roots for the endpoint's TLS certificate.
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
    /// Every variable the S3 backend reads (and the AWS chain's), in the README's order.
    pub const VARIABLES: &[SettingDoc] = VARIABLES;

    /// Settings for a bucket with every other knob at its default; what tests and tools
    /// start from.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            folder: String::new(),
            path_style: PATH_STYLE.default_value(),
            endpoint: None,
            region: None,
            checksum: None,
            sse: None,
            storage_class: None,
            ca_bundle: None,
            upload_concurrency: UPLOAD_CONCURRENCY.default_value(),
            part_size: PART_SIZE.default_value(),
            connect_timeout: CONNECT_TIMEOUT.default_value(),
            operation_timeout: OPERATION_TIMEOUT.default_value(),
        }
    }

    /// Reads the settings; `Ok(None)` when no bucket is set (the binary then archives to a
    /// local directory).
    pub fn from_source(source: &impl Source) -> Result<Option<Self>, SettingError> {
        let Some(bucket) = read_trimmed(source, &BUCKET)? else {
            return Ok(None);
        };
        let mut s = Self::new(bucket);
        if let Some(folder) = read_trimmed(source, &BUCKET_FOLDER)? {
            s.folder = folder;
        }
        if let Some(path_style) = read_trimmed(source, &PATH_STYLE)? {
            s.path_style = path_style;
        }
        s.endpoint = match read_trimmed(source, &ENDPOINT)? {
            Some(endpoint) => Some(endpoint),
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
                Some((name, v)) => Some(parse_endpoint(name, v.trim())?),
                None => None,
            },
        };
        s.region = read_trimmed(source, &REGION)?;
        s.checksum = read_trimmed(source, &CHECKSUM)?;
        s.sse = match (
            read_trimmed(source, &SSE)?,
            trimmed(source, &SSE_KMS_KEY_ID),
        ) {
            (None, None) => None,
            (Some(Sse::Kms { .. }), key_id) => Some(Sse::Kms { key_id }),
            (Some(Sse::Aes256), None) => Some(Sse::Aes256),
            (Some(Sse::Aes256), Some(key_id)) => {
                return Err(SettingError::new(
                    SSE_KMS_KEY_ID.name,
                    &key_id,
                    format!("only used with {}=aws:kms, not AES256", SSE.name),
                ));
            }
            (None, Some(key_id)) => {
                return Err(SettingError::new(
                    SSE_KMS_KEY_ID.name,
                    &key_id,
                    format!("needs {}=aws:kms", SSE.name),
                ));
            }
        };
        s.storage_class = read_trimmed(source, &STORAGE_CLASS)?;
        s.ca_bundle = read_trimmed(source, &CA_BUNDLE)?;
        if let Some(concurrency) = read_trimmed(source, &UPLOAD_CONCURRENCY)? {
            s.upload_concurrency = concurrency;
        }
        if let Some(part_size) = read_trimmed(source, &PART_SIZE)? {
            s.part_size = part_size;
        }
        if let Some(timeout) = read_trimmed(source, &CONNECT_TIMEOUT)? {
            s.connect_timeout = timeout;
        }
        if let Some(timeout) = read_trimmed(source, &OPERATION_TIMEOUT)? {
            s.operation_timeout = timeout;
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

/// The variable's value without surrounding whitespace, or `None` when unset. S3 settings
/// are parsed, and quoted in errors, trimmed.
fn trimmed<T>(source: &impl Source, setting: &Setting<T>) -> Option<String> {
    source.get(setting.name).map(|v| v.trim().to_owned())
}

/// The setting parsed from its trimmed value, or `None` when unset.
fn read_trimmed<T>(source: &impl Source, setting: &Setting<T>) -> Result<Option<T>, SettingError> {
    trimmed(source, setting)
        .map(|value| setting.parse_value(&value))
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PREFIX: &str = "WOODPECKER_LOG_STORE_S3_";
    const MIB: u64 = 1024 * 1024;

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
        assert!(!s.path_style);
        assert_eq!(s.upload_concurrency, 4);
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.operation_timeout, Duration::from_secs(120));
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
