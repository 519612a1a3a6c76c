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
