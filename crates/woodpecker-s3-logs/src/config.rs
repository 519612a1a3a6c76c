//! The addon's whole configuration, read once from the environment it inherits from the
//! Woodpecker server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use archive::variables::BUCKET;
use archive::{LocalDirStore, ObjectStore, S3Settings, S3Store};
use engine::EngineSettings;
use settings::{SettingError, Source};

use woodpecker_db::DataSource;

use crate::variables::{ADOPT_PREFIX, ARCHIVE_DIR, ListenAddr, METRICS_ADDR, STAGING, Staging};

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
    /// Where running steps' lines are staged.
    pub(crate) staging: Staging,
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
        Self::read(source, Path::new(engine::WOODPECKER_DATA))
    }

    /// [`Config::from_source`], with Woodpecker's data volume at `woodpecker_data`.
    fn read(source: &impl Source, woodpecker_data: &Path) -> Result<Self, SettingError> {
        let staging = STAGING.read(source)?.unwrap_or_default();
        let engine = match staging {
            Staging::Spool => EngineSettings::from_source(source)?,
            Staging::Database => EngineSettings::from_source_without_spool(source)?,
        };
        let backend = match S3Settings::from_source(source)? {
            Some(s3) => Backend::S3(Box::new(s3)),
            None => Backend::LocalDir(match ARCHIVE_DIR.read(source)? {
                Some(dir) => dir,
                None => {
                    let dir = default_archive_dir(&engine.spool_dir);
                    // A spool the admin placed is on a volume of their choosing; one that
                    // fell back takes the archive with it.
                    if source.get(engine::SPOOL_DIR.name).is_none()
                        && !dir.starts_with(woodpecker_data)
                    {
                        log_archive_off_the_data_volume(&dir, woodpecker_data);
                    }
                    dir
                }
            }),
        };
        let database = woodpecker_db::settings::database_from_source(source)?;
        if staging == Staging::Database && database.is_none() {
            return Err(SettingError::new(
                STAGING.name,
                "database",
                "database staging keeps running steps' lines in Woodpecker's database, but \
                 none is configured: set WOODPECKER_DATABASE_DRIVER and \
                 WOODPECKER_DATABASE_DATASOURCE as the server has them",
            ));
        }
        Ok(Self {
            engine,
            staging,
            backend,
            database,
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
fn default_archive_dir(spool: &Path) -> PathBuf {
    spool
        .parent()
        .unwrap_or(spool)
        .join("woodpecker-s3-logs-archive")
}

/// The default archive directory followed the spool off Woodpecker's data volume (which was
/// not writable). Unlike the spool, which only holds running steps, the archive is every
/// finished log: said at error level, with the fix, at every start. Not a refusal to start:
/// the addon cannot tell whether the directory persists (a per-user state directory does on
/// an ordinary host), and a refusal would stop the Woodpecker server itself, CI with it.
fn log_archive_off_the_data_volume(dir: &Path, woodpecker_data: &Path) {
    tracing::error!(
        archive_dir = %dir.display(),
        "no bucket is set, so finished logs are archived to the local directory {}, which is \
         not on Woodpecker's data volume {}: if it does not survive a restart (a container's \
         own file system does not), every archived log is lost with it. Set {} to archive to \
         S3, or {} to a directory on a persistent volume",
        dir.display(),
        woodpecker_data.display(),
        BUCKET.name,
        ARCHIVE_DIR.name,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What `f` logs, as text.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (result, text)
    }

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Finding 8 of issue 12: with no bucket, no archive directory and a spool that fell back
    /// off Woodpecker's data volume, the archive's fate is an error-level line naming the
    /// settings that fix it (before, only the spool's warning about running steps).
    #[test]
    fn an_archive_that_fell_back_with_the_spool_is_an_error_line() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("not-writable-woodpecker-data");
        let state = tmp.path().join("state");
        let env = source(&[("XDG_STATE_HOME", state.to_str().unwrap())]);
        let (config, text) = logged(|| Config::read(&env, &data).unwrap());
        let Backend::LocalDir(dir) = &config.backend else {
            panic!("no bucket: a local directory");
        };
        let line = text
            .lines()
            .find(|line| line.contains("ERROR"))
            .unwrap_or_else(|| panic!("no error line in {text:?}"));
        for needed in [
            &dir.display().to_string(),
            "WOODPECKER_LOG_STORE_S3_BUCKET",
            "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
            "lost",
        ] {
            assert!(line.contains(needed), "{needed} in {line}");
        }

        let chosen = tmp.path().join("archive");
        let env = source(&[
            ("XDG_STATE_HOME", state.to_str().unwrap()),
            (ARCHIVE_DIR.name, chosen.to_str().unwrap()),
        ]);
        let (_, text) = logged(|| Config::read(&env, &data).unwrap());
        assert!(!text.contains("ERROR"), "{text}");

        let placed = tmp.path().join("volume/spool");
        let env = source(&[(engine::SPOOL_DIR.name, placed.to_str().unwrap())]);
        let (_, text) = logged(|| Config::read(&env, &data).unwrap());
        assert!(!text.contains("ERROR"), "{text}");
    }
}
