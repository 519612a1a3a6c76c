//! Issue 12, finding 7: a body damaged on the way to the server must never pass as stored.
//! Real SeaweedFS behind the fault proxy, which flips one byte of a PUT body (the one fault
//! a real server cannot produce). `put_file` must notice (the server refuses the body for its
//! `Content-MD5`, or the stored object differs), send the file again, and end with an object
//! equal to the file; the caller keeps its copy until then.

mod common;

use archive::ObjectStore;
use common::fault_proxy::{Fault, FaultProxy};
use common::{MIB, connect, external, log_meta, pattern, test_settings, unique_prefix, write};
use hyper::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_damaged_on_the_way_is_sent_again_until_stored_intact() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let proxy = FaultProxy::start(&server.endpoint).await;
    let store = connect(
        test_settings(&proxy.endpoint, &server.bucket),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("damaged-body");

    // A single PUT (below the part size), its first body damaged.
    let key = format!("{prefix}single.ndjson.zst");
    let body = pattern(64 * 1024, 7);
    let file = write(work.path(), "single", &body);
    proxy.inject_unless(Method::PUT, &key, "partNumber", 1, Fault::FlipByte);
    let info = store.put_file(&key, &file, &log_meta("1")).await.unwrap();
    assert_eq!(info.size, body.len() as u64);
    let (stored, _) = store.get(&key).await.unwrap().unwrap();
    assert!(stored == body, "the object differs from the file uploaded");
    let puts: Vec<u16> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::PUT && s.path.contains(&key))
        .map(|s| s.status)
        .collect();
    assert_eq!(proxy.faulted(), 1);
    assert_eq!(puts.len(), 2, "the damaged PUT is sent again: {puts:?}");
    assert!(
        proxy.seen().iter().all(|s| s.method != Method::PUT
            || !s.path.contains(&key)
            || s.headers.contains_key("content-md5")),
        "every PUT carries Content-MD5"
    );
    eprintln!(
        "SeaweedFS answered the damaged single PUT with HTTP {}",
        puts[0]
    );

    // A multipart upload, one part's body damaged.
    let key = format!("{prefix}multipart.ndjson.zst");
    let body = pattern(12 * MIB, 9);
    let file = write(work.path(), "multipart", &body);
    // The only multipart upload under way: its second part.
    proxy.inject(Method::PUT, "partNumber=2", 1, Fault::FlipByte);
    store.put_file(&key, &file, &log_meta("1")).await.unwrap();
    let (stored, _) = store.get(&key).await.unwrap().unwrap();
    assert!(stored == body, "the multipart object differs from the file");
    assert_eq!(proxy.faulted(), 2);
    let parts: Vec<(String, u16)> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::PUT && s.path.contains("partNumber="))
        .map(|s| (s.path.clone(), s.status))
        .collect();
    assert!(
        parts.iter().all(|(path, _)| proxy
            .seen()
            .iter()
            .any(|s| &s.path == path && s.headers.contains_key("content-md5"))),
        "every part carries Content-MD5: {parts:?}"
    );
    eprintln!("multipart requests: {parts:?}");

    store
        .delete_many(&[format!("{prefix}single.ndjson.zst"), key])
        .await;
}

/// s3s-fs (a real S3 server on the local file system) that forgets `Content-MD5` before
/// writing, as a server that does not check it would: the damaged body is stored.
struct IgnoresContentMd5(s3s_fs::FileSystem);

#[async_trait::async_trait]
impl s3s::S3 for IgnoresContentMd5 {
    async fn put_object(
        &self,
        mut req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        req.input.content_md5 = None;
        self.0.put_object(req).await
    }
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(req).await
    }
    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(req).await
    }
}

/// Where the server does not check `Content-MD5`, the damaged body is stored; the ETag (the
/// MD5 of what was stored) or the read-back shows it, and the file is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_body_stored_by_a_server_that_does_not_check_is_sent_again() {
    const KEY: &str = "s3s-integrity-key";
    const SECRET: &str = "s3s-integrity-secret";
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("ci-logs")).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(IgnoresContentMd5(
        s3s_fs::FileSystem::new(root.path()).unwrap(),
    ));
    builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    let proxy = FaultProxy::start(&endpoint).await;
    let store = connect(test_settings(&proxy.endpoint, "ci-logs"), KEY, SECRET).await;
    let work = tempfile::tempdir().unwrap();
    let key = "integrity/unchecked.ndjson.zst";
    let body = pattern(64 * 1024, 3);
    let file = write(work.path(), "body", &body);
    proxy.inject(Method::PUT, key, 1, Fault::FlipByte);
    store.put_file(key, &file, &log_meta("1")).await.unwrap();
    let (stored, _) = store.get(key).await.unwrap().unwrap();
    assert!(stored == body, "the damaged object was left in place");
    let puts = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::PUT && s.path.contains(key))
        .map(|s| s.status)
        .collect::<Vec<_>>();
    assert_eq!(puts, vec![200, 200], "accepted damaged, then sent again");
    server.abort();
}
