//! The binary's own variables; the archive and engine crates declare theirs.
//!
//! Kept apart from `config.rs` so the README check (`tests/readme.rs`) can include the
//! declarations without the rest of the binary.

use std::path::PathBuf;

use goplugin::hclog::{self, LevelFilter};
use settings::DefaultValue::Described;
use settings::DefaultValue::Literal;
use settings::{Setting, SettingError, parse_absolute_path, parse_bool};

/// Where archives go when no bucket is configured.
pub(crate) const ARCHIVE_DIR: Setting<PathBuf> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR",
    default: Described("next to the spool"),
    doc: "archive directory when no bucket is set",
    parse: parse_absolute_path,
};

/// Take over a bucket prefix whose instance marker names another Woodpecker.
pub(crate) const ADOPT_PREFIX: Setting<bool> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_ADOPT_PREFIX",
    default: Literal("false"),
    doc: "`true`: take over an archive prefix whose instance marker names another Woodpecker (after restoring or moving the server's database); the addon otherwise refuses to start there",
    parse: parse_bool,
};

/// The addon's own log level. The addon reads it with [`hclog::level_from_env`] before
/// logging starts (hclog's error text, and [`LOG_LEVEL_VARS`]' fallback); this parser is the
/// same level parser, so the declaration documents what is accepted.
pub(crate) const LOG_LEVEL: Setting<LevelFilter> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_LOG_LEVEL",
    default: Described("`WOODPECKER_LOG_LEVEL`, else `info`"),
    doc: "the addon's own log level (`trace` … `error`, `disabled`)",
    parse: parse_log_level,
};

/// The addon's own log level, falling back to the server's.
pub(crate) const LOG_LEVEL_VARS: [&str; 2] = [LOG_LEVEL.name, "WOODPECKER_LOG_LEVEL"];

fn parse_log_level(variable: &str, value: &str) -> Result<LevelFilter, SettingError> {
    hclog::level_from_str(value).ok_or_else(|| {
        SettingError::new(
            variable,
            value,
            "not a log level (use trace, debug, info, warn, error, fatal, panic or disabled)",
        )
    })
}
