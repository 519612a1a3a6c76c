//! The engine's `WOODPECKER_LOG_STORE_S3_*` settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use archive::{SettingError, Source, parse_duration};

pub const SPOOL_DIR: &str = "WOODPECKER_LOG_STORE_S3_SPOOL_DIR";
pub const SPOOL_SYNC: &str = "WOODPECKER_LOG_STORE_S3_SPOOL_SYNC";
pub const FINALIZE_DELAY: &str = "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY";
pub const IDLE_TIMEOUT: &str = "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT";
pub const COMPRESSION_LEVEL: &str = "WOODPECKER_LOG_STORE_S3_COMPRESSION_LEVEL";
pub const ARCHIVE_CONCURRENCY: &str = "WOODPECKER_LOG_STORE_S3_ARCHIVE_CONCURRENCY";

/// Where Woodpecker keeps its own data in the official images; a spool next to it lives on
/// the same persistent volume.
const WOODPECKER_DATA: &str = "/var/lib/woodpecker";

/// When appended lines reach the disk itself, beyond the OS page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `fsync` before every append returns: survives power loss, costs a disk flush per batch.
    Always,
    /// `fsync` in the background every `sync_interval` (and before archiving): survives a
    /// crash or SIGKILL of the addon (the data is in the kernel), may lose the last second on
    /// power loss.
    Interval,
}

/// Everything the engine needs to know. [`EngineSettings::from_source`] reads the
/// environment; the fields below "tuning" have no variable and exist for tests and benchmarks.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub spool_dir: PathBuf,
    pub sync: SyncMode,
    /// Grace period between StepFinished (or a late line) and archiving, so the agent's last
    /// batches land in the same object.
    pub finalize_delay: Duration,
    /// A step with spool data that neither finished nor got a line for this long is archived
    /// (cancelled and killed steps never get StepFinished).
    pub idle_timeout: Duration,
    pub compression_level: i32,
    /// Archive uploads in flight at once.
    pub archive_concurrency: usize,

    // Tuning.
    /// Prefix of every object key inside the store. Empty by default because `S3Store`
    /// already applies `WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER`.
    pub key_prefix: String,
    pub sync_interval: Duration,
    /// Spool files kept open at once (least recently used are closed).
    pub max_open_files: usize,
    /// Entries buffered in memory while sorting a step's spool for its archive; larger spools
    /// are sorted in runs on disk and merged.
    pub sort_budget_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl EngineSettings {
    /// The defaults, with the spool in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            sync: SyncMode::Interval,
            finalize_delay: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            compression_level: 3,
            archive_concurrency: 4,
            key_prefix: String::new(),
            sync_interval: Duration::from_secs(1),
            max_open_files: 256,
            sort_budget_bytes: 16 << 20,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }

    /// Reads the settings; the error names the variable at fault.
    pub fn from_source(source: &impl Source) -> Result<Self, SettingError> {
        let spool_dir = match source.get(SPOOL_DIR) {
            Some(dir) => {
                let dir = PathBuf::from(dir.trim());
                if !dir.is_absolute() {
                    return Err(SettingError::new(
                        SPOOL_DIR,
                        &dir.to_string_lossy(),
                        "must be an absolute path",
                    ));
                }
                dir
            }
            None => default_spool_dir(source, Path::new(WOODPECKER_DATA)),
        };
        let mut settings = Self::new(spool_dir);
        if let Some(value) = source.get(SPOOL_SYNC) {
            settings.sync = match value.trim() {
                "always" => SyncMode::Always,
                "interval" => SyncMode::Interval,
                _ => {
                    return Err(SettingError::new(
                        SPOOL_SYNC,
                        &value,
                        "expected always or interval",
                    ));
                }
            };
        }
        if let Some(value) = source.get(FINALIZE_DELAY) {
            settings.finalize_delay = parse_duration(FINALIZE_DELAY, &value)?;
        }
        if let Some(value) = source.get(IDLE_TIMEOUT) {
            settings.idle_timeout = parse_duration(IDLE_TIMEOUT, &value)?;
            if settings.idle_timeout < Duration::from_secs(1) {
                return Err(SettingError::new(
                    IDLE_TIMEOUT,
                    &value,
                    "must be at least 1s (running steps would be archived between batches)",
                ));
            }
        }
        if let Some(value) = source.get(COMPRESSION_LEVEL) {
            settings.compression_level = parse_int(COMPRESSION_LEVEL, &value, 1, 19)? as i32;
        }
        if let Some(value) = source.get(ARCHIVE_CONCURRENCY) {
            settings.archive_concurrency = parse_int(ARCHIVE_CONCURRENCY, &value, 1, 256)? as usize;
        }
        Ok(settings)
    }
}

fn parse_int(variable: &str, value: &str, min: i64, max: i64) -> Result<i64, SettingError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            SettingError::new(
                variable,
                value,
                format!("expected a whole number from {min} to {max}"),
            )
        })
}

/// Next to Woodpecker's data when that directory is writable (the server's persistent
/// volume); otherwise a per-user state directory, with a warning, because in a container
/// that directory usually disappears with the container and running steps' lines with it.
fn default_spool_dir(source: &impl Source, woodpecker_data: &Path) -> PathBuf {
    let preferred = woodpecker_data.join("s3-logs-spool");
    if woodpecker_data.is_dir() && std::fs::create_dir_all(&preferred).is_ok() {
        return preferred;
    }
    let state = source
        .get("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            source
                .get("HOME")
                .map(|home| Path::new(&home).join(".local/state"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("woodpecker-s3-logs-state"));
    let dir = state.join("woodpecker-s3-logs").join("spool");
    tracing::warn!(
        spool_dir = %dir.display(),
        "{} is not writable; spooling running steps' lines to {} instead. Set {SPOOL_DIR} to a \
         persistent volume: this directory may not survive a container restart",
        woodpecker_data.display(),
        dir.display(),
    );
    dir
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_every_variable() {
        let settings = EngineSettings::from_source(&source(&[
            (SPOOL_DIR, "/data/spool"),
            (SPOOL_SYNC, "always"),
            (FINALIZE_DELAY, "500ms"),
            (IDLE_TIMEOUT, "2m"),
            (COMPRESSION_LEVEL, "9"),
            (ARCHIVE_CONCURRENCY, "2"),
        ]))
        .unwrap();
        assert_eq!(settings.spool_dir, PathBuf::from("/data/spool"));
        assert_eq!(settings.sync, SyncMode::Always);
        assert_eq!(settings.finalize_delay, Duration::from_millis(500));
        assert_eq!(settings.idle_timeout, Duration::from_secs(120));
        assert_eq!(settings.compression_level, 9);
        assert_eq!(settings.archive_concurrency, 2);
    }

    #[test]
    fn errors_name_the_variable() {
        for (variable, value) in [
            (SPOOL_DIR, "relative/dir"),
            (SPOOL_SYNC, "sometimes"),
            (FINALIZE_DELAY, "5"),
            (IDLE_TIMEOUT, "10ms"),
            (COMPRESSION_LEVEL, "22"),
            (COMPRESSION_LEVEL, "fast"),
            (ARCHIVE_CONCURRENCY, "0"),
        ] {
            let err = EngineSettings::from_source(&source(&[
                (SPOOL_DIR, "/data/spool"),
                (variable, value),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(err.to_string().contains(variable), "{err}");
        }
    }

    #[test]
    fn default_spool_prefers_woodpecker_data_then_user_state() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("woodpecker");
        std::fs::create_dir(&data).unwrap();
        assert_eq!(
            default_spool_dir(&source(&[]), &data),
            data.join("s3-logs-spool")
        );

        let missing = tmp.path().join("missing");
        let home = tmp.path().join("home");
        assert_eq!(
            default_spool_dir(&source(&[("HOME", home.to_str().unwrap())]), &missing),
            home.join(".local/state/woodpecker-s3-logs/spool")
        );
        assert_eq!(
            default_spool_dir(&source(&[("XDG_STATE_HOME", "/st")]), &missing),
            PathBuf::from("/st/woodpecker-s3-logs/spool")
        );
    }
}
