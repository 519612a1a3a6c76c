//! The engine's `WOODPECKER_LOG_STORE_S3_*` settings.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use settings::DefaultValue::{Described, Literal};
use settings::{
    Setting, SettingDoc, SettingError, Source, parse_absolute_path, parse_duration, parse_number,
    parse_size,
};

/// The spool directory.
pub const SPOOL_DIR: Setting<PathBuf> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
    default: Described(
        "`/var/lib/woodpecker/s3-logs-spool` if writable, else a per-user state dir (with a warning)",
    ),
    doc: "staging for running steps; a directory that is not the spool's own (such as `/tmp`) gets a private subdirectory `woodpecker-s3-logs-spool`; symbolic links and other users' directories are refused",
    // Trimmed first, so an error quotes the path as it would have been used.
    parse: |variable, value| parse_absolute_path(variable, value.trim()),
};

/// When appended lines reach the disk.
pub const SPOOL_SYNC: Setting<SyncMode> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_SPOOL_SYNC",
    default: Literal("interval"),
    doc: "`always`: fsync before each append returns; `interval`: fsync every second and before archiving",
    parse: parse_sync_mode,
};

/// Grace period before a finished step is archived.
pub const FINALIZE_DELAY: Setting<Duration> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY",
    default: Literal("5s"),
    doc: "grace between StepFinished and archiving, for the agent's last batches",
    parse: parse_duration,
};

/// How long archive uploads under way may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Setting<Duration> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_SHUTDOWN_GRACE",
    default: Literal("10s"),
    doc: "on SIGTERM, time allowed for archive uploads under way to finish (the rest are archived after the next start)",
    parse: parse_duration,
};

/// Silence after which an unfinished step is archived.
pub const IDLE_TIMEOUT: Setting<Duration> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT",
    default: Literal("10m"),
    doc: "archive a step that never finished after this much silence",
    parse: parse_idle_timeout,
};

/// The archives' zstd level.
pub const COMPRESSION_LEVEL: Setting<i32> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_COMPRESSION_LEVEL",
    default: Literal("3"),
    doc: "zstd level, 1–19",
    parse: |variable, value| parse_number(variable, value, 1..=19),
};

/// Archive uploads in flight at once.
pub const ARCHIVE_CONCURRENCY: Setting<usize> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ARCHIVE_CONCURRENCY",
    default: Literal("4"),
    doc: "steps archived at once",
    parse: |variable, value| parse_number(variable, value, 1..=256),
};

/// Memory that LogFind reads may hold at once.
pub const READ_MEMORY: Setting<u64> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_READ_MEMORY",
    default: Literal("256MiB"),
    doc: "memory LogFind reads may use at once (answer, spool part, compressed object, zstd window); further reads wait their turn, and a read larger than this runs alone",
    parse: |variable, value| parse_size_within(variable, value, 16 * MIB),
};

/// The largest log LogFind answers.
pub const MAX_LOG_SIZE: Setting<u64> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_MAX_LOG_SIZE",
    default: Literal("1GiB"),
    doc: "LogFind answers larger logs (their JSON) with an error saying so; `woodpecker-s3-logs get <step-id>` still reads them",
    parse: |variable, value| parse_size_within(variable, value, MIB),
};

const MIB: u64 = 1 << 20;

/// Where Woodpecker keeps its own data in the official images; a spool next to it lives on
/// the same persistent volume.
pub const WOODPECKER_DATA: &str = "/var/lib/woodpecker";

/// When appended lines reach the disk itself, beyond the OS page cache (`SPOOL_SYNC`).
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
    /// Where running steps' lines are staged (`SPOOL_DIR`).
    pub spool_dir: PathBuf,
    /// When appends reach the disk (`SPOOL_SYNC`).
    pub sync: SyncMode,
    /// Grace period between StepFinished (or a late line) and archiving, so the agent's last
    /// batches land in the same object.
    pub finalize_delay: Duration,
    /// A step with spool data that neither finished nor got a line for this long is archived
    /// (cancelled and killed steps never get StepFinished).
    pub idle_timeout: Duration,
    /// zstd level of the archives.
    pub compression_level: i32,
    /// Archive uploads in flight at once.
    pub archive_concurrency: usize,
    /// On SIGTERM, how long archive uploads under way may finish (`SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// Bytes that LogFind reads may hold at once (`READ_MEMORY`).
    pub read_memory: u64,
    /// The largest answer LogFind gives, in bytes of JSON (`MAX_LOG_SIZE`).
    pub max_log_size: u64,

    // Tuning.
    /// Prefix of every object key inside the store. Empty by default because `S3Store`
    /// already applies `WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER`.
    pub key_prefix: String,
    /// How often spool files are fsynced in [`SyncMode::Interval`].
    pub sync_interval: Duration,
    /// Spool files kept open at once (least recently used are closed).
    pub max_open_files: usize,
    /// Entries buffered in memory while sorting a step's spool for its archive; larger spools
    /// are sorted in runs on disk and merged.
    pub sort_budget_bytes: usize,
    /// With database staging, bytes of running steps' lines kept in memory so that archive
    /// runs need not read them back from the database (0: always read them back).
    pub staged_copy_bytes: u64,
    /// First wait before retrying a failed archive upload; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest wait between archive retries.
    pub retry_max: Duration,
}

impl EngineSettings {
    /// Every variable the engine reads, in the README's order.
    pub const VARIABLES: &[SettingDoc] = &[
        SPOOL_DIR.documented(),
        SPOOL_SYNC.documented(),
        FINALIZE_DELAY.documented(),
        IDLE_TIMEOUT.documented(),
        COMPRESSION_LEVEL.documented(),
        ARCHIVE_CONCURRENCY.documented(),
        SHUTDOWN_GRACE.documented(),
        READ_MEMORY.documented(),
        MAX_LOG_SIZE.documented(),
    ];

    /// The defaults, with the spool in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            sync: SPOOL_SYNC.default_value(),
            finalize_delay: FINALIZE_DELAY.default_value(),
            idle_timeout: IDLE_TIMEOUT.default_value(),
            compression_level: COMPRESSION_LEVEL.default_value(),
            archive_concurrency: ARCHIVE_CONCURRENCY.default_value(),
            shutdown_grace: SHUTDOWN_GRACE.default_value(),
            read_memory: READ_MEMORY.default_value(),
            max_log_size: MAX_LOG_SIZE.default_value(),
            key_prefix: String::new(),
            sync_interval: Duration::from_secs(1),
            max_open_files: 256,
            sort_budget_bytes: 16 << 20,
            staged_copy_bytes: 64 << 20,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }

    /// Reads the settings; the error names the variable at fault.
    pub fn from_source(source: &impl Source) -> Result<Self, SettingError> {
        let spool_dir = match SPOOL_DIR.read(source)? {
            Some(dir) => dir,
            None => default_spool_dir(source, Path::new(WOODPECKER_DATA)),
        };
        Self::with_spool_dir(source, spool_dir)
    }

    /// [`EngineSettings::from_source`] for database staging, which uses no spool: the spool
    /// directory is only where a spool left by spool staging would be (to move its lines),
    /// found without creating anything or warning about it.
    pub fn from_source_without_spool(source: &impl Source) -> Result<Self, SettingError> {
        let spool_dir = match SPOOL_DIR.read(source)? {
            Some(dir) => dir,
            None => default_spool_location(source, Path::new(WOODPECKER_DATA)),
        };
        Self::with_spool_dir(source, spool_dir)
    }

    fn with_spool_dir(source: &impl Source, spool_dir: PathBuf) -> Result<Self, SettingError> {
        let mut settings = Self::new(spool_dir);
        if let Some(sync) = SPOOL_SYNC.read(source)? {
            settings.sync = sync;
        }
        if let Some(delay) = FINALIZE_DELAY.read(source)? {
            settings.finalize_delay = delay;
        }
        if let Some(grace) = SHUTDOWN_GRACE.read(source)? {
            settings.shutdown_grace = grace;
        }
        if let Some(timeout) = IDLE_TIMEOUT.read(source)? {
            settings.idle_timeout = timeout;
        }
        if let Some(level) = COMPRESSION_LEVEL.read(source)? {
            settings.compression_level = level;
        }
        if let Some(concurrency) = ARCHIVE_CONCURRENCY.read(source)? {
            settings.archive_concurrency = concurrency;
        }
        if let Some(bytes) = READ_MEMORY.read(source)? {
            settings.read_memory = bytes;
        }
        if let Some(bytes) = MAX_LOG_SIZE.read(source)? {
            settings.max_log_size = bytes;
        }
        Ok(settings)
    }
}

fn parse_sync_mode(variable: &str, value: &str) -> Result<SyncMode, SettingError> {
    match value.trim() {
        "always" => Ok(SyncMode::Always),
        "interval" => Ok(SyncMode::Interval),
        _ => Err(SettingError::new(
            variable,
            value,
            "expected always or interval",
        )),
    }
}

/// A size of at least `min` bytes (and at most 1 TiB: beyond any machine's memory, so
/// certainly a typo).
fn parse_size_within(variable: &str, value: &str, min: u64) -> Result<u64, SettingError> {
    let bytes = parse_size(variable, value)?;
    if !(min..=1 << 40).contains(&bytes) {
        return Err(SettingError::new(
            variable,
            value,
            format!("expected a size from {}MiB to 1024GiB", min / MIB),
        ));
    }
    Ok(bytes)
}

fn parse_idle_timeout(variable: &str, value: &str) -> Result<Duration, SettingError> {
    let timeout = parse_duration(variable, value)?;
    if timeout < Duration::from_secs(1) {
        return Err(SettingError::new(
            variable,
            value,
            "must be at least 1s (running steps would be archived between batches)",
        ));
    }
    Ok(timeout)
}

/// Where [`default_spool_dir`] put the spool, if it did: the preferred directory unless
/// only the fallback exists. Creates nothing.
fn default_spool_location(source: &impl Source, woodpecker_data: &Path) -> PathBuf {
    let preferred = woodpecker_data.join("s3-logs-spool");
    let fallback = fallback_spool_dir(source);
    if !preferred.is_dir() && fallback.is_dir() {
        fallback
    } else {
        preferred
    }
}

/// The per-user state directory the spool falls back to.
fn fallback_spool_dir(source: &impl Source) -> PathBuf {
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
    state.join("woodpecker-s3-logs").join("spool")
}

/// Next to Woodpecker's data when that directory is writable (the server's persistent
/// volume); otherwise a per-user state directory, with a warning, because in a container
/// that directory usually disappears with the container and running steps' lines with it.
fn default_spool_dir(source: &impl Source, woodpecker_data: &Path) -> PathBuf {
    let preferred = woodpecker_data.join("s3-logs-spool");
    // 0700 like every directory the spool makes (the umask can only take bits away).
    if woodpecker_data.is_dir()
        && DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&preferred)
            .is_ok()
    {
        return preferred;
    }
    let dir = fallback_spool_dir(source);
    tracing::warn!(
        spool_dir = %dir.display(),
        "{} is not writable; spooling running steps' lines to {} instead. Set {} to a \
         persistent volume: this directory may not survive a container restart",
        woodpecker_data.display(),
        dir.display(),
        SPOOL_DIR.name,
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
    fn defaults_are_the_documented_ones() {
        let settings = EngineSettings::new("/spool");
        assert_eq!(settings.sync, SyncMode::Interval);
        assert_eq!(settings.finalize_delay, Duration::from_secs(5));
        assert_eq!(settings.idle_timeout, Duration::from_secs(600));
        assert_eq!(settings.compression_level, 3);
        assert_eq!(settings.archive_concurrency, 4);
        assert_eq!(settings.read_memory, 256 << 20);
        assert_eq!(settings.max_log_size, 1 << 30);
    }

    #[test]
    fn reads_every_variable() {
        let settings = EngineSettings::from_source(&source(&[
            (SPOOL_DIR.name, "/data/spool"),
            (SPOOL_SYNC.name, "always"),
            (FINALIZE_DELAY.name, "500ms"),
            (IDLE_TIMEOUT.name, "2m"),
            (COMPRESSION_LEVEL.name, "9"),
            (ARCHIVE_CONCURRENCY.name, "2"),
            (READ_MEMORY.name, "64MiB"),
            (MAX_LOG_SIZE.name, "2GiB"),
        ]))
        .unwrap();
        assert_eq!(settings.spool_dir, PathBuf::from("/data/spool"));
        assert_eq!(settings.sync, SyncMode::Always);
        assert_eq!(settings.finalize_delay, Duration::from_millis(500));
        assert_eq!(settings.idle_timeout, Duration::from_secs(120));
        assert_eq!(settings.compression_level, 9);
        assert_eq!(settings.archive_concurrency, 2);
        assert_eq!(settings.read_memory, 64 << 20);
        assert_eq!(settings.max_log_size, 2 << 30);
    }

    #[test]
    fn errors_name_the_variable() {
        for (variable, value) in [
            (SPOOL_DIR.name, "relative/dir"),
            (SPOOL_SYNC.name, "sometimes"),
            (FINALIZE_DELAY.name, "5"),
            (IDLE_TIMEOUT.name, "10ms"),
            (COMPRESSION_LEVEL.name, "22"),
            (COMPRESSION_LEVEL.name, "fast"),
            (ARCHIVE_CONCURRENCY.name, "0"),
            (READ_MEMORY.name, "1MiB"),
            (READ_MEMORY.name, "lots"),
            (MAX_LOG_SIZE.name, "0"),
            (MAX_LOG_SIZE.name, "2TiB"),
            (MAX_LOG_SIZE.name, "5000GiB"),
        ] {
            let err = EngineSettings::from_source(&source(&[
                (SPOOL_DIR.name, "/data/spool"),
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
        let mode = std::fs::metadata(data.join("s3-logs-spool"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
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
