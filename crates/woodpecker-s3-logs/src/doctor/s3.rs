//! The bucket's checks: credentials, endpoint, bucket and region, clock, and a probe object
//! put, read, conditionally overwritten and deleted, plus a multipart upload created and
//! aborted. Each failure says what to change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archive::variables::{
    BUCKET, BUCKET_FOLDER, CA_BUNDLE, CONNECT_TIMEOUT, ENDPOINT, PART_SIZE, PATH_STYLE, REGION,
    SSE_KMS_KEY_ID, STORAGE_CLASS,
};
use archive::{BucketProbe, ConditionalWrites, ProbeError, S3Store};

use super::report::{CheckId, Report, Status};

/// Where the probe object goes, under the configured folder: outside the archive's `v1/`
/// keys, so no reader or `gc` ever mistakes it for a log.
const PROBE_PREFIX: &str = "doctor";

/// Skew the checks tolerate: the `Date` header has whole seconds, and a few more do no harm.
const SKEW_OK: Duration = Duration::from_secs(5);

/// S3 refuses signatures more than 15 minutes off (RequestTimeTooSkewed).
const SKEW_MAX: Duration = Duration::from_secs(15 * 60);

/// The IAM policy that grants what the addon needs.
const POLICY: &str = "contrib/aws/iam-policy.json";

/// The checks that need a request to the bucket.
const BUCKET_CHECKS: [CheckId; 10] = [
    CheckId::Bucket,
    CheckId::BucketRegion,
    CheckId::ClockSkew,
    CheckId::ObjectPut,
    CheckId::ObjectHead,
    CheckId::ObjectGet,
    CheckId::ConditionalWrite,
    CheckId::ObjectDelete,
    CheckId::Multipart,
    CheckId::EndpointTls,
];

/// Runs every S3 check; the later ones are skipped, with the reason, when an earlier one
/// makes them meaningless. `Err` says why the bucket cannot be used at all.
pub(super) async fn check(report: &mut Report, store: &S3Store) -> Result<(), String> {
    let settings = store.settings();
    match store.probe_credentials().await {
        Ok(source) => {
            let mut detail = format!(
                "{} answered (access key {})",
                source.provider_name, source.access_key_hint
            );
            if !source.features.is_empty() {
                detail.push_str(&format!(" [{}]", source.features.join(", ")));
            }
            if let Some(expires) = source.expires {
                let left = expires
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                detail.push_str(&format!(
                    ", temporary: expires in {} min (refreshed automatically)",
                    left.as_secs() / 60
                ));
            }
            report.pass(CheckId::Credentials, detail);
        }
        Err(e) => report.fail(
            CheckId::Credentials,
            e.to_string(),
            "give the server's environment credentials through the AWS chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws files, web identity (IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), or an instance/task role",
        ),
    }

    let endpoint = match store.probe_endpoint().await {
        Ok(endpoint) => endpoint,
        Err(e) => {
            report.fail(
                CheckId::EndpointDns,
                e.to_string(),
                format!(
                    "check {}, {} and {}",
                    ENDPOINT.name, REGION.name, PATH_STYLE.name
                ),
            );
            return Err(skip_all(report, "no endpoint to send requests to"));
        }
    };
    let lookup = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await;
    match lookup {
        Ok(Ok(addrs)) => {
            let mut addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            addrs.dedup();
            report.pass(
                CheckId::EndpointDns,
                format!(
                    "{} → {} ({})",
                    endpoint.host,
                    addrs.join(", "),
                    endpoint.url
                ),
            );
        }
        Ok(Err(e)) => {
            report.fail(
                CheckId::EndpointDns,
                format!("{}: {e} ({})", endpoint.host, endpoint.url),
                dns_fix(settings.endpoint.is_some(), settings.path_style),
            );
            return Err(skip_all(report, "the endpoint's name does not resolve"));
        }
        Err(_) => {
            report.fail(
                CheckId::EndpointDns,
                format!(
                    "{}: no answer from the resolver within {:?} ({})",
                    endpoint.host, settings.connect_timeout, CONNECT_TIMEOUT.name
                ),
                "check the container's DNS (/etc/resolv.conf) or use an address in the endpoint",
            );
            return Err(skip_all(report, "the endpoint's name does not resolve"));
        }
    }

    if report.status(CheckId::Credentials) == Some(Status::Fail) {
        return Err(skip_all(
            report,
            "no credentials to sign requests with (see AWS credentials)",
        ));
    }

    let bucket = store.probe_bucket().await;
    tls(report, &endpoint.host, endpoint.https, &bucket.result);
    clock(report, &bucket);
    if let Err(reason) = bucket_checks(report, store, &bucket).await {
        return Err(skip_all(report, &reason));
    }
    objects(report, store).await;
    Ok(())
}

/// Skips the checks that need the bucket, and returns the reason.
fn skip_all(report: &mut Report, reason: &str) -> String {
    report.skip_rest(&BUCKET_CHECKS, reason);
    reason.to_owned()
}

fn dns_fix(custom: bool, path_style: bool) -> String {
    if custom && !path_style {
        format!(
            "the SDK puts the bucket in the host name (virtual-hosted style); for MinIO, SeaweedFS, Ceph, Garage or an address endpoint set {}=true, else check {}",
            PATH_STYLE.name, ENDPOINT.name
        )
    } else if custom {
        format!(
            "check the host in {} and the container's DNS (/etc/resolv.conf, /etc/hosts)",
            ENDPOINT.name
        )
    } else {
        format!(
            "check {} / AWS_REGION and the container's DNS (/etc/resolv.conf)",
            REGION.name
        )
    }
}

/// TLS is verified by the SDK's own client (system roots plus `CA_BUNDLE`): any HTTP answer
/// over https means the certificate was accepted.
fn tls(report: &mut Report, host: &str, https: bool, result: &Result<(), ProbeError>) {
    if !https {
        report.skip(
            CheckId::EndpointTls,
            "http endpoint: no TLS (traffic to the bucket is not encrypted)",
        );
        return;
    }
    match result {
        Ok(()) => report.pass(CheckId::EndpointTls, format!("certificate of {host} verified")),
        Err(e) if e.server_answered() => {
            report.pass(CheckId::EndpointTls, format!("certificate of {host} verified"))
        }
        Err(e @ ProbeError::Unreachable { detail, .. }) if looks_like_tls(detail) => report.fail(
            CheckId::EndpointTls,
            e.to_string(),
            format!(
                "if the endpoint uses a private CA, set {} to its PEM file; else check the certificate's host name matches {host}",
                CA_BUNDLE.name
            ),
        ),
        Err(_) => report.skip(
            CheckId::EndpointTls,
            "no connection to the endpoint (see bucket)",
        ),
    }
}

fn looks_like_tls(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

fn clock(report: &mut Report, bucket: &BucketProbe) {
    let Some(server) = bucket.server_date else {
        report.skip(CheckId::ClockSkew, "no Date header from the server");
        return;
    };
    let (skew, ahead) = match bucket.local_date.duration_since(server) {
        Ok(ahead) => (ahead, true),
        Err(behind) => (behind.duration(), false),
    };
    let detail = format!(
        "this clock is {:.0} s {} the server's Date ({})",
        skew.as_secs_f64(),
        if ahead { "ahead of" } else { "behind" },
        http_date(server)
    );
    if skew <= SKEW_OK {
        report.pass(CheckId::ClockSkew, detail);
    } else if skew <= SKEW_MAX {
        report.warn(
            CheckId::ClockSkew,
            detail,
            "synchronise the host's clock (NTP); past 15 minutes S3 refuses every signed request",
        );
    } else {
        report.fail(
            CheckId::ClockSkew,
            detail,
            "synchronise the host's clock (NTP): S3 refuses signatures more than 15 minutes off (RequestTimeTooSkewed)",
        );
    }
}

fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(secs as i64)
        .fmt(aws_smithy_types::date_time::Format::HttpDate)
        .unwrap_or_else(|_| format!("{secs} s after the epoch"))
}

/// The bucket and region checks. `Err` carries why the object probes cannot run.
async fn bucket_checks(
    report: &mut Report,
    store: &S3Store,
    bucket: &BucketProbe,
) -> Result<(), String> {
    let settings = store.settings();
    let name = &settings.bucket;
    let client_region = bucket.client_region.clone().unwrap_or_default();
    match &bucket.bucket_region {
        Some(region) if *region == client_region => report.pass(
            CheckId::BucketRegion,
            format!("{region} (x-amz-bucket-region) = the client's region"),
        ),
        Some(region) => report.fail(
            CheckId::BucketRegion,
            format!("the bucket is in {region}, the client signs for {client_region}"),
            format!("set {}={region}", REGION.name),
        ),
        None => report.skip(
            CheckId::BucketRegion,
            format!(
                "the server does not report a bucket region (x-amz-bucket-region); the client signs for {client_region}"
            ),
        ),
    }

    let error = match &bucket.result {
        Ok(()) => {
            report.pass(
                CheckId::Bucket,
                format!("{name} exists and these credentials may use it (HeadBucket)"),
            );
            return Ok(());
        }
        Err(e) => e,
    };
    // A HEAD answer has no body, so no error code: a listing names the refusal.
    let listed = match error.status() {
        Some(400 | 403) => store.probe_list().await.err(),
        _ => None,
    };
    let code = listed
        .as_ref()
        .and_then(ProbeError::code)
        .or(error.code())
        .unwrap_or_default()
        .to_owned();
    let detail = match &listed {
        Some(list) => format!("{error}; {list}"),
        None => error.to_string(),
    };
    let (fix, fatal) = match (error.status(), code.as_str()) {
        (Some(404), _) | (_, "NoSuchBucket") => (
            format!(
                "create the bucket {name}, or correct {} (currently {name})",
                BUCKET.name
            ),
            Some("the bucket does not exist"),
        ),
        (Some(301), _) | (_, "PermanentRedirect") | (_, "AuthorizationHeaderMalformed") => (
            match &bucket.bucket_region {
                Some(region) => format!("set {}={region}", REGION.name),
                None => format!("set {} to the bucket's region", REGION.name),
            },
            Some("requests go to the wrong region"),
        ),
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken") => (
            "the server does not accept these credentials: check the access key id and secret (or the role) given to the server".into(),
            Some("the credentials are refused"),
        ),
        (_, "RequestTimeTooSkewed") => (
            "synchronise the host's clock (NTP)".into(),
            Some("the clock is too far off"),
        ),
        (Some(403), _) => (
            format!(
                "grant s3:ListBucket on arn:aws:s3:::{name} (see {POLICY}; without it S3 answers 403 instead of 404 for a missing log); on SeaweedFS give the identity the List and Read actions"
            ),
            None,
        ),
        _ if !error.server_answered() => (
            format!(
                "check that the endpoint is up and reachable from here ({}, port, firewall)",
                ENDPOINT.name
            ),
            Some("the endpoint cannot be reached"),
        ),
        _ => (
            "see the error above".into(),
            Some("the bucket cannot be used"),
        ),
    };
    report.fail(CheckId::Bucket, detail, fix);
    match fatal {
        Some(reason) => Err(reason.into()),
        None => Ok(()),
    }
}

/// The probe object's round: PUT, HEAD, GET, conditional PUT, DELETE; then a multipart
/// upload created and aborted. Nothing is left behind when the permissions allow DELETE.
async fn objects(report: &mut Report, store: &S3Store) {
    let settings = store.settings();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!("{PROBE_PREFIX}/probe-{nanos}-{}", std::process::id());
    let shown = format!("s3://{}/{}{key}", settings.bucket, settings.folder);
    let body = format!("woodpecker-s3-logs doctor probe {nanos}\n").into_bytes();

    let put = store.probe_put(&key, &body).await;
    match &put {
        Ok(()) => report.pass(
            CheckId::ObjectPut,
            format!("{shown} ({} bytes)", body.len()),
        ),
        Err(e) => report.fail(
            CheckId::ObjectPut,
            e.to_string(),
            write_fix(e, "s3:PutObject", settings),
        ),
    }
    if put.is_ok() {
        match store.probe_head(&key).await {
            Ok(size) if size == body.len() as u64 => {
                report.pass(CheckId::ObjectHead, format!("{size} bytes, as written"))
            }
            Ok(size) => report.fail(
                CheckId::ObjectHead,
                format!("{size} bytes, {} written", body.len()),
                "the server does not keep what it accepted: check the server's health",
            ),
            Err(e) => report.fail(CheckId::ObjectHead, e.to_string(), read_fix(&e, settings)),
        }
        match store.probe_get(&key).await {
            Ok(read) if read == body => {
                report.pass(CheckId::ObjectGet, "content equal to what was written")
            }
            Ok(read) => report.fail(
                CheckId::ObjectGet,
                format!(
                    "{} bytes read back, different from the {} written",
                    read.len(),
                    body.len()
                ),
                "something between here and the bucket changes objects (a proxy, or the server): check it",
            ),
            Err(e) => report.fail(CheckId::ObjectGet, e.to_string(), read_fix(&e, settings)),
        }
        match store.probe_conditional_put(&key, &body).await {
            Ok(ConditionalWrites::Honoured) => report.pass(
                CheckId::ConditionalWrite,
                "honoured: PUT with If-None-Match: * on the existing probe was refused (412 PreconditionFailed)",
            ),
            Ok(outcome) => report.warn(
                CheckId::ConditionalWrite,
                match outcome {
                    ConditionalWrites::Unsupported => {
                        "not supported: the server answered 501 NotImplemented to If-None-Match: *"
                    }
                    _ => "ignored: PUT with If-None-Match: * over the existing probe was accepted",
                },
                "none needed: this addon does not rely on conditional writes (servers such as Garage and older SeaweedFS ignore them): it falls back to its own record of what it archived, and says so once in its log; keep one Woodpecker server per bucket folder, since this server overwrites where AWS would refuse",
            ),
            Err(e) => report.fail(
                CheckId::ConditionalWrite,
                e.to_string(),
                write_fix(&e, "s3:PutObject", settings),
            ),
        }
    } else {
        let reason = "PUT failed: no probe object to read";
        report.skip(CheckId::ObjectHead, reason);
        report.skip(CheckId::ObjectGet, reason);
        report.skip(CheckId::ConditionalWrite, reason);
    }
    // Also without a probe object: DeleteObject of a missing key succeeds when allowed, so
    // the permission LogDelete needs is checked either way.
    match store.probe_delete(&key).await {
        Ok(()) => report.pass(
            CheckId::ObjectDelete,
            if put.is_ok() {
                "probe object removed"
            } else {
                "allowed (nothing to remove)"
            },
        ),
        Err(e) => report.fail(
            CheckId::ObjectDelete,
            e.to_string(),
            write_fix(&e, "s3:DeleteObject", settings),
        ),
    }
    let multipart_key = format!("{key}-multipart");
    match store.probe_multipart(&multipart_key).await {
        Ok(()) => report.pass(
            CheckId::Multipart,
            format!(
                "CreateMultipartUpload + AbortMultipartUpload (logs of {} and more go up in parts)",
                PART_SIZE.name
            ),
        ),
        Err(e) => report.fail(
            CheckId::Multipart,
            e.to_string(),
            write_fix(&e, "s3:PutObject and s3:AbortMultipartUpload", settings),
        ),
    }
}

/// What to change when a write is refused.
fn write_fix(error: &ProbeError, actions: &str, settings: &archive::S3Settings) -> String {
    let code = error.code().unwrap_or_default();
    if code.contains("KMS") {
        return format!(
            "the KMS key is not usable by these credentials: grant kms:GenerateDataKey and kms:Decrypt, or check {}",
            SSE_KMS_KEY_ID.name
        );
    }
    if code == "InvalidStorageClass" {
        return format!(
            "the server does not know the storage class: change {}",
            STORAGE_CLASS.name
        );
    }
    match error.status() {
        Some(403) => format!(
            "permission denied: grant {actions} on arn:aws:s3:::{}/{}* (see {POLICY}); on SeaweedFS give the identity the Write action",
            settings.bucket, settings.folder
        ),
        Some(_) => "see the server's error above".into(),
        None => unreachable_fix(),
    }
}

/// What to change when a read is refused.
fn read_fix(error: &ProbeError, settings: &archive::S3Settings) -> String {
    match error.status() {
        Some(403) => format!(
            "permission denied: grant s3:GetObject on arn:aws:s3:::{}/{}* (see {POLICY}; HEAD needs it too); on SeaweedFS give the identity the Read action",
            settings.bucket, settings.folder
        ),
        Some(404) => format!(
            "the object just written is missing: is {} shared with something that deletes objects (a lifecycle rule on the prefix)?",
            BUCKET_FOLDER.name
        ),
        Some(_) => "see the server's error above".into(),
        None => unreachable_fix(),
    }
}

fn unreachable_fix() -> String {
    format!(
        "the request got no answer: check the network to the endpoint ({}) and the operation timeout",
        ENDPOINT.name
    )
}
