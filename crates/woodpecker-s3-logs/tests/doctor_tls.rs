//! `doctor` against an https endpoint with a private CA: s3s-fs, a real S3 server on the
//! local file system, behind rustls on 127.0.0.1. Without `CA_BUNDLE` the TLS check fails
//! and names the variable; with it, every check that applies passes. A second run drops
//! `If-None-Match` before s3s-fs sees it (the one fault injected: every server here honours
//! it, while Garage and older SeaweedFS do not), which must be a warning, not a failure.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");
const KEY: &str = "s3s-doctor-key";
const SECRET: &str = "s3s-doctor-secret";
const BUCKET: &str = "ci-logs";

/// s3s-fs, forgetting `If-None-Match` on PutObject when asked (like servers that ignore
/// conditional writes); every call doctor and the addon make is passed on.
struct Server {
    fs: s3s_fs::FileSystem,
    ignore_conditional_writes: bool,
}

#[async_trait::async_trait]
impl S3 for Server {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if self.ignore_conditional_writes {
            req.input.if_none_match = None;
        }
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
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}

/// The server over TLS with a fresh self-signed certificate; returns the endpoint and the
/// certificate's PEM.
async fn start(
    root: &Path,
    ignore_conditional_writes: bool,
) -> (String, String, tokio::task::JoinHandle<()>) {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let cert = rcgen::generate_simple_self_signed(["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let service = {
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(Server {
            fs,
            ignore_conditional_writes,
        });
        builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
        builder.build()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let (service, acceptor) = (service.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(socket).await {
                    let http = ConnBuilder::new(TokioExecutor::new());
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            });
        }
    });
    (endpoint, cert.cert.pem(), task)
}

/// Runs `doctor --json` in a child process without blocking the server's runtime.
async fn doctor(dir: &Path, env: Vec<(&'static str, String)>) -> (Option<i32>, Value) {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", dir.join("spool"))
        .env("WOODPECKER_LOG_STORE_S3_BUCKET", BUCKET)
        .env("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true")
        .env("WOODPECKER_LOG_STORE_S3_OPERATION_TIMEOUT", "20s")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .args(["doctor", "--json"])
        .envs(env);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{stdout}"));
    (output.status.code(), report)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_private_ca_and_then_everything_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, pem, server) = start(&dir.path().join("s3"), false).await;
    let pem_path = dir.path().join("ca.pem");
    std::fs::write(&pem_path, pem).unwrap();

    let (code, report) = doctor(
        dir.path(),
        vec![("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint.clone())],
    )
    .await;
    assert_eq!(code, Some(1), "{report:#}");
    let tls = check(&report, "endpoint_tls");
    assert_eq!(tls["status"], "fail", "{tls}");
    assert!(
        tls["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{tls}"
    );
    assert!(
        tls["fix"]
            .as_str()
            .unwrap()
            .contains("WOODPECKER_LOG_STORE_S3_CA_BUNDLE"),
        "{tls}"
    );
    assert_eq!(check(&report, "object_put")["status"], "skip");

    let (code, report) = doctor(
        dir.path(),
        vec![
            ("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint),
            (
                "WOODPECKER_LOG_STORE_S3_CA_BUNDLE",
                pem_path.display().to_string(),
            ),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(check(&report, "conditional_write")["status"], "pass");
    assert_eq!(check(&report, "endpoint_tls")["status"], "pass");
    for id in ["object_put", "object_get", "multipart", "round_trip"] {
        assert_eq!(check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_conditional_writes_gets_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, pem, server) = start(&dir.path().join("s3"), true).await;
    let pem_path = dir.path().join("ca.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let (code, report) = doctor(
        dir.path(),
        vec![
            ("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint),
            (
                "WOODPECKER_LOG_STORE_S3_CA_BUNDLE",
                pem_path.display().to_string(),
            ),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let conditional = check(&report, "conditional_write");
    assert_eq!(conditional["status"], "warn", "{conditional}");
    assert!(
        conditional["detail"]
            .as_str()
            .unwrap()
            .starts_with("ignored"),
        "{conditional}"
    );
    assert!(
        conditional["fix"]
            .as_str()
            .unwrap()
            .contains("does not rely on conditional writes"),
        "{conditional}"
    );
    assert_eq!(check(&report, "round_trip")["status"], "pass");
    server.abort();
}
