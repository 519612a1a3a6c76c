//! The conformance suite every [`ObjectStore`] must pass, written once and run against the
//! local directory, s3s-fs in-process, SeaweedFS and moto.
#![allow(dead_code)] // each test binary uses a different part of this module

pub(crate) mod fault_proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use archive::{ErrorKind, ObjectMeta, ObjectStore, S3Settings, S3Store, StoreError};

pub(crate) const MIB: usize = 1024 * 1024;

/// A key prefix no earlier run used, so suites can share a long-lived server and bucket.
pub(crate) fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conformance/{name}-{nanos}/")
}

/// Deterministic bytes that are not all alike, so a misplaced part would show.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

pub(crate) fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

pub(crate) fn log_meta(lines: &str) -> ObjectMeta {
    ObjectMeta {
        content_type: "application/x-ndjson".into(),
        content_encoding: "zstd".into(),
        user: BTreeMap::from([
            ("format".to_owned(), "1".to_owned()),
            ("lines".to_owned(), lines.to_owned()),
        ]),
    }
}

/// Runs every check against `store`. `big` is the size of an object that must go through
/// the store's large-object path (multipart on S3: make it more than two parts).
pub(crate) async fn conformance(store: &dyn ObjectStore, name: &str, big: usize) {
    let work = tempfile::tempdir().unwrap();
    let p = unique_prefix(name);
    let key = |k: &str| format!("{p}{k}");

    // Missing keys.
    assert!(store.get(&key("missing")).await.unwrap().is_none());
    assert!(store.head(&key("missing")).await.unwrap().is_none());
    store.delete(&key("missing")).await.unwrap();
    assert_eq!(store.list(&p).await.unwrap(), Vec::<String>::new());

    // Small object with metadata, read back exactly.
    let small = pattern(1000, 1);
    let meta = log_meta("42");
    store
        .put_file(
            &key("steps/1.ndjson.zst"),
            &write(work.path(), "small", &small),
            &meta,
        )
        .await
        .unwrap();
    let (data, info) = store
        .get(&key("steps/1.ndjson.zst"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, small);
    assert_eq!(info.size, small.len() as u64);
    assert_eq!(info.meta, meta);
    let head = store
        .head(&key("steps/1.ndjson.zst"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head, info);

    // Replacing an object replaces bytes and metadata together.
    let replacement = pattern(777, 2);
    let meta2 = log_meta("43");
    store
        .put_file(
            &key("steps/1.ndjson.zst"),
            &write(work.path(), "replacement", &replacement),
            &meta2,
        )
        .await
        .unwrap();
    let (data, info) = store
        .get(&key("steps/1.ndjson.zst"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, replacement);
    assert_eq!(info.meta, meta2);

    // An empty object is an object.
    store
        .put_file(
            &key("steps/empty"),
            &write(work.path(), "empty", b""),
            &meta,
        )
        .await
        .unwrap();
    let (data, info) = store.get(&key("steps/empty")).await.unwrap().unwrap();
    assert!(data.is_empty());
    assert_eq!(info.size, 0);

    // Large object: the multipart path on S3, streaming on every backend.
    let large = pattern(big, 3);
    let started = Instant::now();
    store
        .put_file(
            &key("steps/large"),
            &write(work.path(), "large", &large),
            &meta,
        )
        .await
        .unwrap();
    let put_time = started.elapsed();
    let (data, info) = store.get(&key("steps/large")).await.unwrap().unwrap();
    assert_eq!(info.size, large.len() as u64);
    assert!(data == large, "large object differs after the round trip");
    assert_eq!(info.meta, meta);
    eprintln!(
        "{name}: {} MiB put in {put_time:?} via {}",
        big / MIB,
        store.describe()
    );

    // Listing: lexical order, prefixes inside and across segments.
    for k in ["list/a/2", "list/a/1", "list/b/1", "list/ab"] {
        store
            .put_file(&key(k), &write(work.path(), "tiny", b"x"), &meta)
            .await
            .unwrap();
    }
    assert_eq!(
        store.list(&key("list/")).await.unwrap(),
        ["list/a/1", "list/a/2", "list/ab", "list/b/1"].map(key)
    );
    assert_eq!(
        store.list(&key("list/a/")).await.unwrap(),
        ["list/a/1", "list/a/2"].map(key)
    );
    assert_eq!(
        store.list(&key("list/a")).await.unwrap(),
        ["list/a/1", "list/a/2", "list/ab"].map(key)
    );
    assert_eq!(
        store.list(&key("list/c")).await.unwrap(),
        Vec::<String>::new()
    );

    // Delete removes exactly one key; deleting again succeeds.
    store.delete(&key("list/a/1")).await.unwrap();
    store.delete(&key("list/a/1")).await.unwrap();
    assert!(store.get(&key("list/a/1")).await.unwrap().is_none());
    assert!(store.head(&key("list/a/1")).await.unwrap().is_none());
    assert_eq!(
        store.list(&key("list/a")).await.unwrap(),
        ["list/a/2", "list/ab"].map(key)
    );

    // Keys that could escape a directory are refused before anything is sent.
    for bad in ["../escape", "/absolute", "a//b", ""] {
        let err = store
            .put_file(bad, &write(work.path(), "tiny", b"x"), &meta)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{bad:?}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Denied, "{bad:?}: {err}");
        assert!(store.get(bad).await.is_err(), "{bad:?}");
    }

    // Leave nothing behind on shared servers.
    for k in store.list(&p).await.unwrap() {
        store.delete(&k).await.unwrap();
    }
    assert_eq!(store.list(&p).await.unwrap(), Vec::<String>::new());
}

/// Put/get latency of a 1 MiB object, the median of `rounds`, for the report.
pub(crate) async fn measure(
    store: &dyn ObjectStore,
    name: &str,
    rounds: usize,
) -> (Duration, Duration) {
    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "1mib", &pattern(MIB, 9));
    let key = format!("{}latency", unique_prefix(name));
    let meta = log_meta("1");
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        store.put_file(&key, &body, &meta).await.unwrap();
        puts.push(t.elapsed());
        let t = Instant::now();
        store.get(&key).await.unwrap().unwrap();
        gets.push(t.elapsed());
    }
    store.delete(&key).await.unwrap();
    puts.sort();
    gets.sort();
    let (put, get) = (puts[rounds / 2], gets[rounds / 2]);
    eprintln!(
        "{name}: 1 MiB put (incl. verify) median {put:?}, get median {get:?} over {rounds} rounds"
    );
    (put, get)
}

/// Settings for a path-style S3-compatible endpoint with a small part size, so a 12 MiB
/// object takes three parts.
pub(crate) fn test_settings(endpoint: &str, bucket: &str) -> S3Settings {
    let mut s = S3Settings::new(bucket);
    s.endpoint = Some(endpoint.to_owned());
    s.path_style = true;
    s.region = Some("us-east-1".into());
    s.part_size = archive::MIN_PART_SIZE;
    s.upload_concurrency = 2;
    s.connect_timeout = Duration::from_secs(2);
    s.operation_timeout = Duration::from_secs(30);
    s
}

/// A store with explicit keys: tests of the credential chain itself live in `chain.rs`.
pub(crate) async fn connect(settings: S3Settings, key: &str, secret: &str) -> S3Store {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(
        aws_credential_types::Credentials::new(key, secret, None, None, "archive-tests"),
    );
    S3Store::connect_with(settings, loader).await.unwrap()
}

/// An S3-compatible server named by `ARCHIVE_TEST_<NAME>_*` variables (set by
/// scripts/s3/start.sh), or `None` with a notice when they are unset.
pub(crate) struct External {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

pub(crate) fn external(name: &str) -> Option<External> {
    let var = |what: &str| std::env::var(format!("ARCHIVE_TEST_{name}_{what}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        eprintln!(
            "SKIPPED: ARCHIVE_TEST_{name}_ENDPOINT is unset (eval \"$(scripts/s3/start.sh)\" to run this test)"
        );
        return None;
    };
    Some(External {
        endpoint,
        access_key: var("ACCESS_KEY").unwrap_or_else(|| "test".into()),
        secret_key: var("SECRET_KEY").unwrap_or_else(|| "test".into()),
        bucket: var("BUCKET").unwrap_or_else(|| "ci-logs".into()),
    })
}

/// Listing page by page and deleting in batches, across more than one page and batch:
/// `count` keys spread over shards (as the archive's `v1/<shard>/<id>` keys are), plus keys
/// whose order depends on `/` sorting before letters, and a neighbour outside the prefix.
pub(crate) async fn paging_and_batch_delete(store: &dyn ObjectStore, name: &str, count: usize) {
    use archive::MAX_BATCH;
    use futures::StreamExt;

    let work = tempfile::tempdir().unwrap();
    let body = write(work.path(), "tiny", b"x");
    let p = unique_prefix(name);
    let meta = log_meta("1");
    let mut expected: Vec<String> = (0..count)
        .map(|i| format!("{p}page/v1/{:03}/{i}.ndjson.zst", i % 13))
        .chain(["page/a-1", "page/a/1", "page/ab", "page/a/b/c"].map(|k| format!("{p}{k}")))
        .collect();
    let outside = format!("{p}pagex/1");
    let all: Vec<String> = expected.iter().cloned().chain([outside.clone()]).collect();
    futures::stream::iter(all.iter())
        .map(|key| {
            let (body, meta) = (&body, &meta);
            async move { store.put_file(key, body, meta).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    expected.sort();

    for page_size in [MAX_BATCH, 7_000, 333] {
        let (mut listed, mut pages, mut start) = (Vec::new(), 0, None::<String>);
        loop {
            let page = store
                .list_page(&format!("{p}page/"), start.as_deref(), page_size)
                .await
                .unwrap();
            pages += 1;
            assert!(page.objects.len() <= page_size.min(MAX_BATCH), "{name}");
            for object in &page.objects {
                assert!(object.size >= 1, "{name}: {object:?}");
                assert!(object.last_modified.is_some(), "{name}: {object:?}");
            }
            listed.extend(page.objects.into_iter().map(|o| o.key));
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
            assert!(pages < 10_000, "{name}: the listing does not end");
        }
        // S3 lists in byte order; SeaweedFS lists directory by directory. Either way every
        // key comes exactly once.
        listed.sort();
        if listed != expected {
            let missing: Vec<_> = expected.iter().filter(|k| !listed.contains(k)).collect();
            let extra: Vec<_> = listed.iter().filter(|k| !expected.contains(k)).collect();
            panic!(
                "{name}: page size {page_size}: {} listed, {} expected, missing {missing:?}, extra {extra:?}",
                listed.len(),
                expected.len()
            );
        }
        let minimum = expected.len().div_ceil(page_size.min(MAX_BATCH));
        assert!(pages >= minimum, "{name}: {pages} pages");
        eprintln!(
            "{name}: {} keys listed in {pages} pages of {page_size}",
            listed.len()
        );
    }

    // A missing key is no failure; a key that must never be built is refused by itself.
    let mut doomed = expected.clone();
    doomed.push(format!("{p}page/never-written"));
    doomed.push("../escape".to_owned());
    let started = Instant::now();
    let failures = store.delete_many(&doomed).await;
    eprintln!(
        "{name}: {} keys deleted in {:?}",
        doomed.len(),
        started.elapsed()
    );
    assert_eq!(failures.len(), 1, "{name}: {failures:?}");
    assert_eq!(failures[0].key, "../escape");
    assert_eq!(failures[0].error.kind(), ErrorKind::Denied);
    let left = store.list_page(&p, None, MAX_BATCH).await.unwrap();
    let left: Vec<String> = left.objects.into_iter().map(|o| o.key).collect();
    assert_eq!(left, vec![outside.clone()], "{name}");
    assert!(store.delete_many(&[outside]).await.is_empty());
}
