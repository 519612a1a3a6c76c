//! Issue 12, finding 8: a multipart upload abandoned mid-way (its archive run dropped at
//! shutdown) is aborted on the way out, so the bucket keeps no invisible, billed parts.
//! Against SeaweedFS and moto started by scripts/s3/start.sh (SKIPPED when unset).

mod common;

use std::time::Duration;

use archive::{MULTIPART_ABORT_TIMEOUT, ObjectStore};
use aws_sdk_s3::Client;
use common::{External, connect, external, log_meta, test_settings, unique_prefix};

/// A plain client of the server, to look at it the way an admin's tools would.
async fn admin_client(server: &External) -> Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(aws_credential_types::Credentials::new(
            &server.access_key,
            &server.secret_key,
            None,
            None,
            "archive-tests",
        ))
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .load()
        .await;
    Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// The keys of the multipart uploads under `prefix` that are neither completed nor aborted.
async fn unfinished(client: &Client, server: &External, prefix: &str) -> Vec<String> {
    let listed = client
        .list_multipart_uploads()
        .bucket(&server.bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    listed
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

async fn abandoned_uploads_are_aborted_at_exit(server: &External, name: &str) {
    let folder = unique_prefix(&format!("abort-{name}"));
    let mut settings = test_settings(&server.endpoint, &server.bucket);
    settings.folder = folder.clone();
    settings.upload_concurrency = 1;
    let store = connect(settings, &server.access_key, &server.secret_key).await;
    let admin = admin_client(server).await;
    // Large enough (at 5 MiB parts, one at a time) to be caught mid-way; sparse, so it
    // costs no disk here.
    let work = tempfile::tempdir().unwrap();
    let body = work.path().join("big");
    std::fs::File::create(&body)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();

    let upload = tokio::spawn({
        let store = store.clone();
        let body = body.clone();
        async move { store.put_file("big", &body, &log_meta("1")).await }
    });
    let mut seen = Vec::new();
    for _ in 0..2000 {
        seen = unfinished(&admin, server, &folder).await;
        if !seen.is_empty() || upload.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen, [format!("{folder}big")], "the upload is under way");
    // What the archiver does at shutdown with a run still going: drop it.
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    assert_eq!(
        unfinished(&admin, server, &folder).await.len(),
        1,
        "left behind by the dropped run"
    );

    assert_eq!(
        store
            .abort_unfinished_uploads(MULTIPART_ABORT_TIMEOUT)
            .await,
        1
    );
    assert_eq!(
        unfinished(&admin, server, &folder).await,
        Vec::<String>::new(),
        "none left after the exit"
    );
    assert_eq!(
        store
            .abort_unfinished_uploads(MULTIPART_ABORT_TIMEOUT)
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_abandoned_uploads_are_aborted_at_exit() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    abandoned_uploads_are_aborted_at_exit(&server, "seaweedfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_abandoned_uploads_are_aborted_at_exit() {
    let Some(server) = external("MOTO") else {
        return;
    };
    abandoned_uploads_are_aborted_at_exit(&server, "moto").await;
}
