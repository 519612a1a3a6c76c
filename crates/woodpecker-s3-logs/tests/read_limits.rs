//! A hostile archive object against the real addon, launched as Woodpecker launches it
//! (go-plugin handshake): a decompression bomb fails only its own LogFind, with an RPC error
//! naming the key, and the addon stays up serving other reads and appends. Run against a
//! local archive directory, and against SeaweedFS when scripts/s3/start.sh's variables are
//! set.

mod tools;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use engine::format::{self, ObjectWriter};
use goplugin::{ClientConfig, PluginClient};
use logservice::addon::{HANDSHAKE, LogClient, PLUGIN_NAME};
use logservice::{LogEntry, LogService, Step, StepId};
use tools::{Archive, BIN};

fn step(id: i64) -> Step {
    Step {
        id,
        name: format!("step-{id}"),
        ..Step::default()
    }
}

fn entry(step_id: i64, line: i64) -> LogEntry {
    LogEntry {
        step_id,
        line,
        data: Some(format!("line {line}").into_bytes()),
        ..LogEntry::default()
    }
}

/// The addon with its spool under `dir` and `archive`'s variables.
async fn launch(dir: &Path, archive: &Archive) -> (PluginClient, LogClient) {
    let mut config = ClientConfig::new(BIN, HANDSHAKE);
    let spool = dir.join("spool").display().to_string();
    config.env = archive
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain([("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", spool)])
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    config.capture_stderr = true;
    let plugin = PluginClient::start(config).await.unwrap();
    let log = LogClient::new(plugin.dispense(PLUGIN_NAME).await.unwrap());
    (plugin, log)
}

/// Stores `object` under step `id`'s key with `meta`.
async fn put(archive: &Archive, dir: &Path, id: i64, object: &[u8], meta: &archive::ObjectMeta) {
    let file = dir.join(format!("object-{id}"));
    std::fs::write(&file, object).unwrap();
    let key = format::object_key("", StepId::new(id).unwrap());
    archive.store.put_file(&key, &file, meta).await.unwrap();
}

async fn a_bomb_fails_only_its_own_read(archive: Archive) {
    let dir = tempfile::tempdir().unwrap();
    // Step 1: an ordinary archived log.
    let good: Vec<LogEntry> = (0..100).map(|line| entry(1, line)).collect();
    let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
    for e in &good {
        writer.push(e).unwrap();
    }
    let (bytes, summary) = writer.finish().unwrap();
    put(
        &archive,
        dir.path(),
        1,
        &bytes,
        &summary.to_meta(StepId::new(1).unwrap()),
    )
    .await;
    // Step 2: 24 canonical records of 12 MiB (288 MiB of text, kilobytes compressed),
    // recorded as 200 bytes.
    let mut writer = ObjectWriter::new(Vec::new(), 1).unwrap();
    let mut record = Vec::with_capacity(13 << 20);
    for line in 0..24 {
        record.clear();
        write!(
            record,
            "{{\"id\":0,\"step_id\":2,\"time\":0,\"line\":{line},\"data\":\""
        )
        .unwrap();
        record.resize(record.len() + (12 << 20), b'A');
        record.extend_from_slice(b"\",\"type\":0}\n");
        writer.push_raw(line, &record).unwrap();
    }
    let (bomb, summary) = writer.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    let mut meta = summary.to_meta(StepId::new(2).unwrap());
    meta.user
        .insert(format::META_UNCOMPRESSED_SIZE.into(), "200".into());
    put(&archive, dir.path(), 2, &bomb, &meta).await;

    let (plugin, log) = launch(dir.path(), &archive).await;
    let error = match log.log_find(&step(2)).await {
        Ok(entries) => panic!(
            "the bomb's read must fail; it answered {} entries",
            entries.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("v1/002/2.ndjson.zst"),
        "names the key: {error}"
    );
    assert!(error.contains("uncompressed-size"), "says why: {error}");
    // The addon is still there: other reads and appends work.
    assert_eq!(log.log_find(&step(1)).await.unwrap(), good);
    log.log_append(&step(3), vec![entry(3, 0)]).await.unwrap();
    assert_eq!(log.log_find(&step(3)).await.unwrap(), vec![entry(3, 0)]);
    plugin.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_in_a_local_archive_fails_only_its_own_read() {
    let dir = tempfile::tempdir().unwrap();
    a_bomb_fails_only_its_own_read(Archive::local(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_in_seaweedfs_fails_only_its_own_read() {
    if let Some(archive) = Archive::seaweedfs("read-limits").await {
        a_bomb_fails_only_its_own_read(archive).await;
    }
}
