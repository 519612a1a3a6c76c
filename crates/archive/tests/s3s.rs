//! The S3 backend against s3s-fs, a real S3 server on the local file system, started
//! in-process on 127.0.0.1: the conformance suite, multipart with an injected failure,
//! error texts an admin can act on, timeouts, the bucket folder and a private CA.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use archive::{CaBundle, ErrorKind, ObjectStore, S3Settings};
use common::{MIB, conformance, connect, log_meta, pattern, test_settings, write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::net::TcpListener;

const KEY: &str = "s3s-test-key";
const SECRET: &str = "s3s-test-secret";
const BUCKET: &str = "ci-logs";

/// Counts the calls that matter and can fail one upload part on demand, around the real
/// s3s-fs implementation.
#[derive(Default)]
struct Probe {
    puts: AtomicUsize,
    parts: AtomicUsize,
    completes: AtomicUsize,
    aborts: AtomicUsize,
    /// Part number to refuse (0: none).
    fail_part: AtomicI32,
}

struct Instrumented {
    fs: s3s_fs::FileSystem,
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl S3 for Instrumented {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.probe.puts.fetch_add(1, Ordering::SeqCst);
        self.fs.put_object(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.probe.parts.fetch_add(1, Ordering::SeqCst);
        if req.input.part_number == self.probe.fail_part.load(Ordering::SeqCst) {
            return Err(s3_error!(AccessDenied, "injected failure"));
        }
        self.fs.upload_part(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.probe.completes.fetch_add(1, Ordering::SeqCst);
        self.fs.complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.probe.aborts.fetch_add(1, Ordering::SeqCst);
        self.fs.abort_multipart_upload(req).await
    }
}

/// An s3s-fs server on 127.0.0.1, stopped when dropped.
struct Server {
    endpoint: String,
    probe: Arc<Probe>,
    task: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let probe = Arc::new(Probe::default());
    let service = {
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(Instrumented {
            fs,
            probe: probe.clone(),
        });
        builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
        builder.build()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = ConnBuilder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(socket), service).await;
                    }
                }
            });
        }
    });
    Server {
        endpoint,
        probe,
        task,
        _root: root,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_conforms_with_multipart() {
    let server = start(None).await;
    let store = connect(test_settings(&server.endpoint, BUCKET), KEY, SECRET).await;
    store.check().await.unwrap();
    conformance(&store, "s3s", 12 * MIB).await;
    // 12 MiB at 5 MiB parts: exactly one multipart upload of three parts; the small
    // objects (2 + 4 listing ones + empty) went through PutObject.
    assert_eq!(server.probe.parts.load(Ordering::SeqCst), 3);
    assert_eq!(server.probe.completes.load(Ordering::SeqCst), 1);
    assert_eq!(server.probe.puts.load(Ordering::SeqCst), 7);
    assert_eq!(server.probe.aborts.load(Ordering::SeqCst), 0);
    common::measure(&store, "s3s-fs", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_lists_in_pages_and_deletes_in_batches() {
    let server = start(None).await;
    let store = connect(test_settings(&server.endpoint, BUCKET), KEY, SECRET).await;
    common::paging_and_batch_delete(&store, "s3s", 1_200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_part_aborts_the_upload() {
    let server = start(None).await;
    server.probe.fail_part.store(2, Ordering::SeqCst);
    let store = connect(test_settings(&server.endpoint, BUCKET), KEY, SECRET).await;
    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "big", &pattern(11 * MIB, 4));
    let err = store
        .put_file("big", &body, &log_meta("1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert_eq!(err.code(), "AccessDenied");
    let text = err.to_string();
    assert!(
        text.contains("s3://ci-logs/big: UploadPart 2: AccessDenied"),
        "{text}"
    );
    assert_eq!(server.probe.aborts.load(Ordering::SeqCst), 1);
    assert_eq!(server.probe.completes.load(Ordering::SeqCst), 0);
    assert!(store.get("big").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_denied_with_the_reason() {
    let server = start(None).await;
    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "x", b"x");
    for (key, secret, code) in [
        // s3s words an unknown key as AWS does for an account without S3.
        ("unknown-key", SECRET, "NotSignedUp"),
        (KEY, "wrong-secret", "SignatureDoesNotMatch"),
    ] {
        let store = connect(test_settings(&server.endpoint, BUCKET), key, secret).await;
        let err = store.check().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
        assert!(err.to_string().contains(code), "{err}");
        assert_eq!(err.code(), code);
        let err = store
            .put_file("a/b", &body, &log_meta("1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
        let text = err.to_string();
        assert!(text.starts_with("s3://ci-logs/a/b: PutObject: "), "{text}");
        assert!(text.contains(code) && text.contains("HTTP 403"), "{text}");
        eprintln!("admin sees: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_denied_naming_no_such_bucket() {
    let server = start(None).await;
    let store = connect(
        test_settings(&server.endpoint, "no-such-bucket"),
        KEY,
        SECRET,
    )
    .await;
    // PutObject and GetObject are checked against SeaweedFS and moto: s3s-fs creates a
    // missing bucket on upload and answers NoSuchKey for objects in one.
    let errors = [
        store.check().await.unwrap_err(),
        // HEAD has no error body: the store asks the bucket before saying "missing".
        store.head("k").await.unwrap_err(),
        store.list("").await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
        assert_eq!(err.code(), "NoSuchBucket", "{err}");
        let text = err.to_string();
        assert!(
            text.contains("NoSuchBucket") && text.contains("s3://no-such-bucket/"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_silent_endpoints_fail_fast_as_transient() {
    // Nothing listens: connection refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = connect(
        test_settings(&format!("http://127.0.0.1:{port}"), BUCKET),
        KEY,
        SECRET,
    )
    .await;
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        err.to_string().contains("cannot reach the endpoint"),
        "{err}"
    );
    assert_eq!(err.code(), "dispatch");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Accepts connections and never answers: the attempt timeout ends each try.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut settings = test_settings(&format!("http://{addr}"), BUCKET);
    settings.operation_timeout = Duration::from_secs(1);
    let store = connect(settings, KEY, SECRET).await;
    let started = Instant::now();
    let err = store.head("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(err.code(), "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_folder_prefixes_every_key() {
    let server = start(None).await;
    let mut settings = test_settings(&server.endpoint, BUCKET);
    settings.folder = "woodpecker/logs/".into();
    let store = connect(settings, KEY, SECRET).await;
    let whole_bucket = connect(test_settings(&server.endpoint, BUCKET), KEY, SECRET).await;
    let work = tempfile::tempdir().unwrap();
    store
        .put_file(
            "v1/1.ndjson.zst",
            &write(work.path(), "x", b"hello"),
            &log_meta("1"),
        )
        .await
        .unwrap();
    assert_eq!(store.list("").await.unwrap(), ["v1/1.ndjson.zst"]);
    assert_eq!(
        whole_bucket.list("").await.unwrap(),
        ["woodpecker/logs/v1/1.ndjson.zst"]
    );
    assert_eq!(
        store.describe(),
        format!("s3://ci-logs/woodpecker/logs/ at {}", server.endpoint)
    );
    store.delete("v1/1.ndjson.zst").await.unwrap();
    assert!(whole_bucket.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_bundle_is_trusted_only_when_configured() {
    let cert = rcgen::generate_simple_self_signed(["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
                cert.signing_key.serialize_der().into(),
            ),
        )
        .unwrap();
    let server = start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;

    let untrusted = connect(test_settings(&server.endpoint, BUCKET), KEY, SECRET).await;
    let err = untrusted.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let work = tempfile::tempdir().unwrap();
    let pem_path = write(work.path(), "ca.pem", cert.cert.pem().as_bytes());
    // Through the real settings parser, as an admin would configure it.
    let env = std::collections::HashMap::from([
        (
            "WOODPECKER_LOG_STORE_S3_BUCKET".to_owned(),
            BUCKET.to_owned(),
        ),
        (
            "WOODPECKER_LOG_STORE_S3_ENDPOINT".to_owned(),
            server.endpoint.clone(),
        ),
        (
            "WOODPECKER_LOG_STORE_S3_PATH_STYLE".to_owned(),
            "true".to_owned(),
        ),
        (
            "WOODPECKER_LOG_STORE_S3_CA_BUNDLE".to_owned(),
            pem_path.display().to_string(),
        ),
    ]);
    let settings: S3Settings = S3Settings::from_source(&env).unwrap().unwrap();
    assert!(matches!(settings.ca_bundle, Some(CaBundle { .. })));
    let trusted = connect(settings, KEY, SECRET).await;
    trusted.check().await.unwrap();
    trusted
        .put_file("tls", &write(work.path(), "x", b"over tls"), &log_meta("1"))
        .await
        .unwrap();
    assert_eq!(trusted.get("tls").await.unwrap().unwrap().0, b"over tls");
}
