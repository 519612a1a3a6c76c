//! What the `migrate` and `gc` tests share: running the binary as an admin would, with a
//! Woodpecker database's variables and an archive (a local directory, or SeaweedFS).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use archive::{LocalDirStore, ObjectStore, S3Settings, S3Store};
use logservice::{LogEntry, StepId};
use woodpecker_db::testing::TestDb;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_woodpecker-s3-logs");

/// Where the archive is, and the variables that say so.
pub(crate) struct Archive {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) env: HashMap<String, String>,
}

impl Archive {
    /// A local directory archive in `dir`.
    pub(crate) fn local(dir: &Path) -> Self {
        let root = dir.join("archive");
        Self {
            store: Arc::new(LocalDirStore::new(&root).unwrap()),
            env: HashMap::from([(
                "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR".to_owned(),
                root.to_string_lossy().into_owned(),
            )]),
        }
    }

    /// SeaweedFS from scripts/s3/start.sh under a fresh bucket folder, or `None` (with the
    /// reason printed) when its variables are unset.
    pub(crate) async fn seaweedfs(folder: &str) -> Option<Self> {
        let var = |name: &str| std::env::var(format!("ARCHIVE_TEST_SEAWEEDFS_{name}")).ok();
        let Some(endpoint) = var("ENDPOINT") else {
            eprintln!(
                "SKIPPED the SeaweedFS case: ARCHIVE_TEST_SEAWEEDFS_ENDPOINT is unset (eval \"$(scripts/s3/start.sh)\")"
            );
            return None;
        };
        let (key, secret) = (var("ACCESS_KEY").unwrap(), var("SECRET_KEY").unwrap());
        let bucket = var("BUCKET").unwrap_or_else(|| "ci-logs".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let folder = format!("{folder}-{nanos}/");
        let mut settings = S3Settings::new(&bucket);
        settings.endpoint = Some(endpoint.clone());
        settings.path_style = true;
        settings.region = Some("us-east-1".into());
        settings.folder = folder.clone();
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_credential_types::Credentials::new(
                &key, &secret, None, None, "tests",
            ));
        let store = S3Store::connect_with(settings, loader).await.unwrap();
        let env = HashMap::from(
            [
                ("WOODPECKER_LOG_STORE_S3_BUCKET", bucket.as_str()),
                ("WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER", folder.as_str()),
                ("WOODPECKER_LOG_STORE_S3_ENDPOINT", endpoint.as_str()),
                ("WOODPECKER_LOG_STORE_S3_PATH_STYLE", "true"),
                ("AWS_ACCESS_KEY_ID", key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
                ("AWS_REGION", "us-east-1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        Some(Self {
            store: Arc::new(store),
            env,
        })
    }

    /// Every step object's key.
    pub(crate) async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .store
                .list_page("v1/", start.as_deref(), 1000)
                .await
                .unwrap();
            keys.extend(page.objects.into_iter().map(|o| o.key));
            match page.next {
                Some(next) => start = Some(next),
                None => return keys,
            }
        }
    }

    /// A step's object as the JSON array LogFind answers, or `None`.
    pub(crate) async fn log_json(&self, step: i64) -> Option<Vec<u8>> {
        let key = engine::format::object_key("", StepId::new(step).unwrap());
        let (bytes, _) = self.store.get(&key).await.unwrap()?;
        let entries = engine::format::decode_object(&bytes).unwrap();
        Some(json_array(&entries))
    }
}

/// Entries as the JSON array Woodpecker answers.
pub(crate) fn json_array(entries: &[LogEntry]) -> Vec<u8> {
    let mut out = b"[".to_vec();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        logservice::push_entry(entry, &mut out);
    }
    out.push(b']');
    out
}

/// The command for `args` with the database's and the archive's variables, a spool in
/// `work`, and nothing else from the test's environment.
pub(crate) fn command(work: &Path, db: &TestDb, archive: &Archive, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WOODPECKER_LOG_STORE_S3_SPOOL_DIR", spool(work))
        .stdin(std::process::Stdio::null());
    command.envs(db.env()).envs(&archive.env);
    command
}

/// The spool directory the commands are given.
pub(crate) fn spool(work: &Path) -> PathBuf {
    work.join("spool")
}

/// Runs the command to its end; panics with its output unless it exits with `code`.
pub(crate) fn run(command: &mut Command, code: i32) -> Output {
    let output = command.output().unwrap();
    let text = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(code), "{text}");
    eprintln!("{text}");
    output
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
