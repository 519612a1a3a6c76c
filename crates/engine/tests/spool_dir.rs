//! Issue 12, finding 6: the spool directory the admin names is checked before anything in
//! it is created, changed or removed. A symbolic link, a directory of another user or a
//! shared directory (such as `/tmp`) is never chmodded or cleared: the first two are refused
//! with an error naming the variable, the last gets a private subdirectory of ours.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

use archive::LocalDirStore;
use engine::{Engine, EngineSettings, SPOOL_DIR};
use logservice::{LogEntry, LogService, Step};

/// The subdirectory the spool makes for itself in a directory it cannot take over.
const SUBDIR: &str = "woodpecker-s3-logs-spool";

async fn start(spool: &Path, archive: &Path) -> Result<Engine, engine::StartError> {
    let store = Arc::new(LocalDirStore::new(archive).unwrap());
    Engine::start(EngineSettings::new(spool), store).await
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A directory holding someone else's `tmp/keep`, with the given mode.
fn foreign_content(dir: &Path, mode: u32) {
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::write(dir.join("tmp/keep"), b"not the addon's").unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
}

fn step(id: i64) -> Step {
    Step {
        id,
        ..Step::default()
    }
}

fn line(text: &str) -> Vec<LogEntry> {
    vec![LogEntry {
        step_id: 1,
        data: Some(text.as_bytes().to_vec()),
        ..LogEntry::default()
    }]
}

fn assert_refused(error: engine::StartError, names: &[&str]) {
    let text = error.to_string();
    assert!(text.contains(SPOOL_DIR.name), "{text}");
    for name in names {
        assert!(text.contains(name), "{name} missing from: {text}");
    }
}

#[tokio::test]
async fn a_symlinked_spool_dir_is_refused_and_its_target_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    foreign_content(&target, 0o755);
    let link = dir.path().join("spool");
    symlink(&target, &link).unwrap();

    let error = start(&link, &dir.path().join("archive"))
        .await
        .err()
        .expect("a symlinked spool directory is refused");
    assert_refused(error, &["symbolic link", target.to_str().unwrap()]);
    assert_eq!(mode(&target), 0o755, "the target is not chmodded");
    assert!(
        target.join("tmp/keep").exists(),
        "the target's tmp/ is kept"
    );
}

/// `/tmp` (sticky, writable by all) and a directory of ours that holds other things (such
/// as Woodpecker's own data directory): a private subdirectory, the directory untouched;
/// the next start finds the same subdirectory with the lines in it.
#[tokio::test]
async fn a_shared_or_busy_directory_gets_a_private_subdirectory() {
    for shared_mode in [0o1777, 0o755] {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        foreign_content(&shared, shared_mode);
        let archive = dir.path().join("archive");

        let engine = start(&shared, &archive).await.unwrap();
        let ours = shared.join(SUBDIR);
        assert_eq!(engine.spool_dir(), ours);
        assert_eq!(mode(&ours), 0o700);
        assert_eq!(mode(&shared), shared_mode, "never chmodded");
        assert!(shared.join("tmp/keep").exists(), "its tmp/ is not ours");
        assert!(!shared.join("steps").exists() && !shared.join("lock").exists());
        engine.log_append(&step(1), line("kept")).await.unwrap();
        engine.shutdown().await.unwrap();

        let engine = start(&shared, &archive).await.unwrap();
        assert_eq!(engine.spool_dir(), ours);
        let found = engine.log_find(&step(1)).await.unwrap();
        assert_eq!(found[0].data.as_deref(), Some(&b"kept"[..]));
        engine.shutdown().await.unwrap();
    }
}

/// An attacker's symlink where the subdirectory goes (a shared `/tmp`), and symbolic links
/// inside the spool: refused, nothing followed.
#[tokio::test]
async fn symlinks_planted_in_or_under_the_spool_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    foreign_content(&target, 0o755);
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    symlink(&target, shared.join(SUBDIR)).unwrap();
    let error = start(&shared, &dir.path().join("archive"))
        .await
        .err()
        .expect("a planted symlink is refused");
    assert_refused(error, &["symbolic link", SUBDIR]);

    // A spool (its lock file) whose steps/ became a link.
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(spool.join("lock"), b"").unwrap();
    symlink(&target, spool.join("steps")).unwrap();
    let error = start(&spool, &dir.path().join("archive"))
        .await
        .err()
        .expect("a symlinked steps/ is refused");
    assert_refused(error, &["symbolic link", "steps"]);
    assert_eq!(mode(&target), 0o755);
    assert!(target.join("tmp/keep").exists());
}

/// Another user's directory (only testable as root, as CI runs): refused, for the spool
/// itself and for a subdirectory someone made in advance in a shared directory.
#[tokio::test]
async fn directories_of_other_users_are_refused() {
    if !running_as_root() {
        eprintln!("skipped: needs root to make a directory of another user");
        return;
    }
    let nobody = 65534;
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    foreign_content(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(nobody), Some(nobody)).unwrap();
    let error = start(&theirs, &dir.path().join("archive"))
        .await
        .err()
        .expect("a directory of another user is refused");
    assert_refused(error, &["65534"]);
    assert_eq!(mode(&theirs), 0o700);
    assert!(theirs.join("tmp/keep").exists());

    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(shared.join(SUBDIR)).unwrap();
    std::os::unix::fs::chown(shared.join(SUBDIR), Some(nobody), Some(nobody)).unwrap();
    let error = start(&shared, &dir.path().join("archive"))
        .await
        .err()
        .expect("a subdirectory made by another user is refused");
    assert_refused(error, &["65534", SUBDIR]);
}

fn running_as_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}
