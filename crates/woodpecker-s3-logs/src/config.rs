//! The addon's whole configuration, read once from the environment it inherits from the
//! Woodpecker server.

use std::path::PathBuf;
use std::sync::Arc;

use archive::{LocalDirStore, ObjectStore, S3Settings, S3Store, SettingError, Source};
use engine::EngineSettings;

/// Where archives go when no bucket is configured.
pub const ARCHIVE_DIR: &str = "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR";

/// The addon's own log level, falling back to the server's.
pub const LOG_LEVEL_VARS: [&str; 2] = ["WOODPECKER_LOG_STORE_S3_LOG_LEVEL", "WOODPECKER_LOG_LEVEL"];

/// Where finished logs rest.
#[derive(Clone, Debug)]
pub enum Backend {
    S3(Box<S3Settings>),
    /// The embedded default: a local directory.
    LocalDir(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub engine: EngineSettings,
    pub backend: Backend,
}

impl Config {
    pub fn from_source(source: &impl Source) -> Result<Self, SettingError> {
        let engine = EngineSettings::from_source(source)?;
        let backend = match S3Settings::from_source(source)? {
            Some(s3) => Backend::S3(Box::new(s3)),
            None => Backend::LocalDir(match source.get(ARCHIVE_DIR) {
                Some(dir) if PathBuf::from(dir.trim()).is_absolute() => PathBuf::from(dir.trim()),
                Some(dir) => {
                    return Err(SettingError::new(
                        ARCHIVE_DIR,
                        &dir,
                        "must be an absolute path",
                    ));
                }
                None => default_archive_dir(&engine.spool_dir),
            }),
        };
        Ok(Self { engine, backend })
    }

    /// Connects the archive backend. Does not contact S3: an unreachable bucket must not stop
    /// the addon from starting (lines keep landing in the spool).
    pub async fn open_store(&self) -> Result<Store, String> {
        match &self.backend {
            Backend::S3(settings) => S3Store::connect((**settings).clone())
                .await
                .map(|store| Store::S3(Arc::new(store)))
                .map_err(|e| format!("cannot set up the S3 client: {e}")),
            Backend::LocalDir(dir) => LocalDirStore::new(dir)
                .map(|store| Store::Local(Arc::new(store)))
                .map_err(|e| format!("cannot use {ARCHIVE_DIR}={}: {e}", dir.display())),
        }
    }
}

/// The opened archive backend.
#[derive(Clone)]
pub enum Store {
    S3(Arc<S3Store>),
    Local(Arc<LocalDirStore>),
}

impl Store {
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        match self {
            Store::S3(s3) => s3.clone(),
            Store::Local(local) => local.clone(),
        }
    }

    /// Whether the backend answers (a bucket request on S3; nothing to do for a directory).
    pub async fn check(&self) -> Result<(), archive::StoreError> {
        match self {
            Store::S3(s3) => s3.check().await,
            Store::Local(_) => Ok(()),
        }
    }
}

/// Next to the spool, so both live on the same volume: `<spool>/../s3-logs-archive`.
fn default_archive_dir(spool: &std::path::Path) -> PathBuf {
    spool
        .parent()
        .unwrap_or(spool)
        .join("woodpecker-s3-logs-archive")
}
