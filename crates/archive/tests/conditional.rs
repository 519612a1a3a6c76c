//! Conditional writes on the real servers here (SeaweedFS, moto): `If-None-Match: *` for a
//! first upload and `If-Match: <etag>` for a replacement, on single PUTs and multipart
//! uploads; a condition that no longer holds is refused, nothing written, and the error
//! says so ([`StoreError::is_precondition_failed`]).

mod common;

use archive::{ConditionalWrites, ObjectStore, S3Store, WriteCondition};
use common::{
    External, MIB, connect, external, log_meta, pattern, test_settings, unique_prefix, write,
};

/// `multipart`: whether the server honours conditions on CompleteMultipartUpload too (moto
/// 5 does not: it checks them on PutObject only).
async fn conditions_hold(server: &External, name: &str, multipart: bool) {
    let store: S3Store = connect(
        test_settings(&server.endpoint, &server.bucket),
        &server.access_key,
        &server.secret_key,
    )
    .await;
    assert_eq!(
        store.conditional_writes().await.unwrap(),
        ConditionalWrites::Honoured,
        "{name}"
    );
    let work = tempfile::tempdir().unwrap();
    let prefix = unique_prefix(name);
    // Below the part size, and above it (multipart, the condition on CompleteMultipartUpload).
    let sizes = [("single", 4096), ("multipart", 11 * MIB)];
    for (label, size) in &sizes[..if multipart { 2 } else { 1 }] {
        let size = *size;
        let key = format!("{prefix}{label}.ndjson.zst");
        let first = write(work.path(), "first", &pattern(size, 1));
        let second = write(work.path(), "second", &pattern(size, 2));
        let meta = log_meta("1");

        let stored = store
            .put_file_if(&key, &first, &meta, Some(&WriteCondition::Absent))
            .await
            .unwrap();
        let etag = stored.etag.clone().expect("an ETag");
        let refused = store
            .put_file_if(&key, &second, &meta, Some(&WriteCondition::Absent))
            .await
            .unwrap_err();
        assert!(
            refused.is_precondition_failed(),
            "{name} {label}: {refused}"
        );

        let replaced = store
            .put_file_if(
                &key,
                &second,
                &meta,
                Some(&WriteCondition::Matches(etag.clone())),
            )
            .await
            .unwrap();
        assert_ne!(
            replaced.etag.as_deref(),
            Some(etag.as_str()),
            "{name} {label}"
        );
        let stale = store
            .put_file_if(&key, &first, &meta, Some(&WriteCondition::Matches(etag)))
            .await
            .unwrap_err();
        assert!(stale.is_precondition_failed(), "{name} {label}: {stale}");
        let (bytes, _) = store.get(&key).await.unwrap().unwrap();
        assert!(
            bytes == pattern(size, 2),
            "{name} {label}: the refused writes changed nothing"
        );
        store.delete(&key).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_honours_conditional_writes() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    conditions_hold(&server, "seaweedfs-conditional", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_honours_conditional_writes() {
    let Some(server) = external("MOTO") else {
        return;
    };
    conditions_hold(&server, "moto-conditional", false).await;
}
