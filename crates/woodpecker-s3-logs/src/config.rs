//! The addon's whole configuration, read once from the environment it inherits from the
//! Woodpecker server.

use std::path::PathBuf;
use std::sync::Arc;

use archive::{LocalDirStore, ObjectStore, S3Settings, S3Store};
use engine::EngineSettings;
use settings::{SettingError, Source};

use woodpecker_db::DataSource;

use crate::variables::{ADOPT_PREFIX, ARCHIVE_DIR, ListenAddr, METRICS_ADDR};

/// Where finished logs rest.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// A bucket (`WOODPECKER_LOG_STORE_S3_BUCKET` is set).
    S3(Box<S3Settings>),
    /// The embedded default: a local directory.
    LocalDir(PathBuf),
}

/// Everything the addon is configured with.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Spool, archiving and their timing.
    pub(crate) engine: EngineSettings,
    /// Where finished logs go.
    pub(crate) backend: Backend,
    /// Woodpecker's database, when the inherited environment names one (or its default
    /// SQLite file exists): read-through, `migrate`, `gc`, the instance marker.
    pub(crate) database: Option<DataSource>,
    /// Woodpecker's file log store directory from before the switch.
    pub(crate) legacy_file_dir: Option<PathBuf>,
    /// Take over a prefix whose instance marker names another Woodpecker.
    pub(crate) adopt_prefix: bool,
    /// Where Prometheus metrics are served; `None`: nowhere.
    pub(crate) metrics_addr: Option<ListenAddr>,
}

impl Config {
    /// Reads every setting; the error names the variable at fault.
    pub(crate) fn from_source(source: &impl Source) -> Result<Self, SettingError> {
        let engine = EngineSettings::from_source(source)?;
        let backend = match S3Settings::from_source(source)? {
            Some(s3) => Backend::S3(Box::new(s3)),
            None => Backend::LocalDir(match ARCHIVE_DIR.read(source)? {
                Some(dir) => dir,
                None => default_archive_dir(&engine.spool_dir),
            }),
        };
        Ok(Self {
            engine,
            backend,
            database: woodpecker_db::settings::database_from_source(source)?,
            legacy_file_dir: woodpecker_db::settings::legacy_file_dir(source)?,
            adopt_prefix: ADOPT_PREFIX.read(source)?.unwrap_or(false),
            metrics_addr: METRICS_ADDR.read(source)?,
        })
    }

    /// Connects the archive backend. Does not contact S3: an unreachable bucket must not stop
    /// the addon from starting (lines keep landing in the spool).
    pub(crate) async fn open_store(&self) -> Result<Store, String> {
        match &self.backend {
            Backend::S3(settings) => S3Store::connect((**settings).clone())
                .await
                .map(|store| Store::S3(Arc::new(store)))
                .map_err(|e| format!("cannot set up the S3 client: {e}")),
            Backend::LocalDir(dir) => LocalDirStore::new(dir)
                .map(|store| Store::Local(Arc::new(store)))
                .map_err(|e| format!("cannot use {}={}: {e}", ARCHIVE_DIR.name, dir.display())),
        }
    }
}

/// The opened archive backend.
#[derive(Clone)]
pub(crate) enum Store {
    /// The bucket's client.
    S3(Arc<S3Store>),
    /// The local directory.
    Local(Arc<LocalDirStore>),
}

impl Store {
    /// The backend as the engine uses it.
    pub(crate) fn object_store(&self) -> Arc<dyn ObjectStore> {
        match self {
            Store::S3(s3) => s3.clone(),
            Store::Local(local) => local.clone(),
        }
    }

    /// Aborts the multipart uploads abandoned by archive runs cut short at exit, within
    /// [`archive::MULTIPART_ABORT_TIMEOUT`] (nothing to do for a directory).
    pub(crate) async fn abort_unfinished_uploads(&self) {
        if let Store::S3(s3) = self {
            s3.abort_unfinished_uploads(archive::MULTIPART_ABORT_TIMEOUT)
                .await;
        }
    }

    /// Whether the backend answers (a bucket request on S3; nothing to do for a directory).
    pub(crate) async fn check(&self) -> Result<(), archive::StoreError> {
        match self {
            Store::S3(s3) => s3.check().await,
            Store::Local(_) => Ok(()),
        }
    }
}

/// Next to the spool, so both live on the same volume: `<spool>/../woodpecker-s3-logs-archive`.
fn default_archive_dir(spool: &std::path::Path) -> PathBuf {
    spool
        .parent()
        .unwrap_or(spool)
        .join("woodpecker-s3-logs-archive")
}
