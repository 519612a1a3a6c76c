//! The S3 backend against real S3-compatible servers started by scripts/s3/start.sh
//! (SeaweedFS, moto). Each test prints SKIPPED and passes when its server's variables are
//! unset; CI sets them.

mod common;

use archive::{ChecksumMode, ErrorKind, ObjectStore};
use common::{External, MIB, conformance, connect, external, log_meta, test_settings, write};

async fn conforms(server: &External, name: &str, checksum: Option<ChecksumMode>) {
    let mut settings = test_settings(&server.endpoint, &server.bucket);
    settings.checksum = checksum;
    let store = connect(settings, &server.access_key, &server.secret_key).await;
    store.check().await.unwrap();
    conformance(&store, name, 12 * MIB).await;
    common::measure(&store, name, 20).await;
}

async fn refuses_clearly(server: &External, bad_key_code: &str) {
    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "x", b"x");

    let store = connect(
        test_settings(&server.endpoint, "no-such-bucket-for-tests"),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    let errors = [
        store.check().await.unwrap_err(),
        store
            .put_file("k", &body, &log_meta("1"))
            .await
            .unwrap_err(),
        store.get("k").await.unwrap_err(),
        store.head("k").await.unwrap_err(),
        store.list("").await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
        let text = err.to_string();
        assert!(text.contains("NoSuchBucket"), "{text}");
        assert_eq!(err.code(), "NoSuchBucket", "{text}");
        assert!(text.contains("s3://no-such-bucket-for-tests/"), "{text}");
    }

    let store = connect(
        test_settings(&server.endpoint, &server.bucket),
        "not-a-key",
        "nope",
    )
    .await;
    let err = store
        .put_file("k", &body, &log_meta("1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    assert!(err.to_string().contains(bad_key_code), "{err}");
    assert_eq!(err.code(), bad_key_code, "{err}");
    eprintln!("admin sees: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_conforms() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    conforms(&server, "seaweedfs", None).await;
}

/// Whether SeaweedFS takes the SDK's default trailing checksums (`aws-chunked` uploads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_conforms_with_sdk_default_checksums() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    conforms(
        &server,
        "seaweedfs-checksums",
        Some(ChecksumMode::WhenSupported),
    )
    .await;
}

/// More than one ListObjectsV2 page and one DeleteObjects batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_lists_in_pages_and_deletes_in_batches() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let store = connect(
        test_settings(&server.endpoint, &server.bucket),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    common::paging_and_batch_delete(&store, "seaweedfs", 1_200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_lists_in_pages_and_deletes_in_batches() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let store = connect(
        test_settings(&server.endpoint, &server.bucket),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    common::paging_and_batch_delete(&store, "moto", 1_200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_refuses_clearly() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    refuses_clearly(&server, "InvalidAccessKeyId").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_conforms() {
    let Some(server) = external("MOTO") else {
        return;
    };
    conforms(&server, "moto", None).await;
}

/// moto follows AWS closely: the SDK's own default (trailing CRC checksums, `aws-chunked`
/// next to our `Content-Encoding: zstd`) must work there as it does on AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_conforms_with_sdk_default_checksums() {
    let Some(server) = external("MOTO") else {
        return;
    };
    conforms(&server, "moto-checksums", Some(ChecksumMode::WhenSupported)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_refuses_missing_buckets() {
    let Some(server) = external("MOTO") else {
        return;
    };
    let store = connect(
        test_settings(&server.endpoint, "no-such-bucket-for-tests"),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "x", b"x");
    for err in [
        store
            .put_file("k", &body, &log_meta("1"))
            .await
            .unwrap_err(),
        store.get("k").await.unwrap_err(),
        store.head("k").await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
        assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    }
}
