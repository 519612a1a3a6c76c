//! The local-directory backend: the conformance suite plus what only a directory has
//! (permissions, the on-disk format, crash leftovers).

mod common;

use std::os::unix::fs::PermissionsExt;

use archive::{LocalDirStore, ObjectStore, StoreError};
use common::{MIB, conformance, log_meta, pattern, write};

#[tokio::test]
async fn local_directory_conforms() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("archive")).unwrap();
    conformance(&store, "local", 12 * MIB).await;
    common::measure(&store, "local", 5).await;
    // Deleting every key removed the directories it had created.
    let left: Vec<_> = std::fs::read_dir(store.root()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_lists_in_pages_and_deletes_in_batches() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("archive")).unwrap();
    common::paging_and_batch_delete(&store, "local", 2_500).await;
    // Batch deletion removed the directories it emptied.
    let left: Vec<_> = std::fs::read_dir(store.root()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn private_permissions_and_readable_format() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path().join("archive")).unwrap();
    let data = pattern(5000, 7);
    store
        .put_file(
            "logs/v1/7.ndjson.zst",
            &write(root.path(), "src", &data),
            &log_meta("9"),
        )
        .await
        .unwrap();

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let file = store.root().join("logs/v1/7.ndjson.zst");
    assert_eq!(mode(store.root()), 0o700);
    assert_eq!(mode(&store.root().join("logs")), 0o700);
    assert_eq!(mode(&store.root().join("logs/v1")), 0o700);
    assert_eq!(mode(&file), 0o600);

    // Documented layout: one JSON line of metadata, then the bytes (`tail -n +2`).
    let raw = std::fs::read(&file).unwrap();
    let newline = raw.iter().position(|b| *b == b'\n').unwrap();
    let header: serde_json::Value = serde_json::from_slice(&raw[..newline]).unwrap();
    assert_eq!(header["v"], 1);
    assert_eq!(header["content_encoding"], "zstd");
    assert_eq!(header["user"]["lines"], "9");
    assert_eq!(&raw[newline + 1..], &data[..]);
    let tail = std::process::Command::new("tail")
        .args(["-n", "+2"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(tail.stdout, data);

    // No temp files are left next to the object.
    let names: Vec<_> = std::fs::read_dir(store.root().join("logs/v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["7.ndjson.zst"]);
}

#[tokio::test]
async fn crash_leftovers_and_foreign_files() {
    let root = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(root.path()).unwrap();
    // A temp file from a crash mid-write is invisible.
    std::fs::create_dir_all(root.path().join("logs")).unwrap();
    std::fs::write(root.path().join("logs/.1.tmp-1-1"), b"half").unwrap();
    assert_eq!(store.list("").await.unwrap(), Vec::<String>::new());
    assert!(store.get("logs/1").await.unwrap().is_none());

    // A file this store did not write is reported, not misread.
    std::fs::write(root.path().join("logs/2"), b"no header here").unwrap();
    let err = store.get("logs/2").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("logs/2"), "{err}");
    std::fs::write(root.path().join("logs/3"), b"{\"v\":9}\nbody").unwrap();
    let err = store.head("logs/3").await.unwrap_err();
    assert!(
        err.to_string().contains("unreadable metadata") || err.to_string().contains("version"),
        "{err}"
    );

    // A key that is a directory of other keys is not an object.
    assert!(store.get("logs").await.unwrap().is_none());
    // And a key below an object is simply missing.
    assert!(store.get("logs/2/x").await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_writers_of_one_key_never_mix() {
    let root = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalDirStore::new(root.path().join("a")).unwrap());
    let bodies: Vec<_> = (0..8u8)
        .map(|i| {
            (
                pattern(256 * 1024, i + 1),
                write(root.path(), &format!("b{i}"), &pattern(256 * 1024, i + 1)),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for (_, path) in &bodies {
        let store = store.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                store
                    .put_file("k/one", &path, &log_meta("1"))
                    .await
                    .unwrap();
            }
        }));
    }
    let reader = {
        let store = store.clone();
        let bodies: Vec<_> = bodies.iter().map(|(d, _)| d.clone()).collect();
        tokio::spawn(async move {
            for _ in 0..50 {
                if let Some((data, _)) = store.get("k/one").await.unwrap() {
                    assert!(bodies.contains(&data), "a reader saw a mixed object");
                }
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    reader.await.unwrap();
}
