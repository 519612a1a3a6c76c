//! The variables this crate reads: Woodpecker's own database settings (inherited from the
//! server's environment) and the addon's legacy file-store directory.

use std::path::{Path, PathBuf};

use settings::DefaultValue::Described;
use settings::{Setting, SettingDoc, SettingError, Source, parse_absolute_path};

use crate::dsn::{DataSource, Driver};

/// Woodpecker's database driver.
pub const DATABASE_DRIVER: Setting<Driver> = Setting {
    name: "WOODPECKER_DATABASE_DRIVER",
    default: Described("`sqlite3` (Woodpecker's default)"),
    doc: "Woodpecker's own setting, inherited: `sqlite3`, `postgres` or `mysql`; with the data source, enables read-through of logs from before the switch, `migrate` and `gc`",
    parse: Driver::parse,
};

/// Woodpecker's data source string.
pub const DATABASE_DATASOURCE: Setting<String> = Setting {
    name: "WOODPECKER_DATABASE_DATASOURCE",
    default: Described(
        "Woodpecker's default SQLite file (`/var/lib/woodpecker/woodpecker.sqlite` in its images, else `woodpecker.sqlite`), used only if it exists",
    ),
    doc: "Woodpecker's own setting, inherited, in the Go driver's format (a SQLite path or `file:` URI, a PostgreSQL URL or `key=value` string, `user:pass@tcp(host:port)/db`)",
    parse: |_, value| Ok(value.trim().to_owned()),
};

/// A file holding Woodpecker's data source string (wins over the variable, as in Woodpecker).
pub const DATABASE_DATASOURCE_FILE: Setting<PathBuf> = Setting {
    name: "WOODPECKER_DATABASE_DATASOURCE_FILE",
    default: Described("unset"),
    doc: "Woodpecker's own setting, inherited: a file holding the data source (a secret mount); wins over the variable, which is used (with a warning) when the file cannot be read, as Woodpecker does",
    parse: |_, value| Ok(PathBuf::from(value.trim())),
};

/// The directory of Woodpecker's file log store, read through and migrated like the
/// database.
pub const LEGACY_FILE_DIR: Setting<PathBuf> = Setting {
    name: "WOODPECKER_LOG_STORE_S3_LEGACY_FILE_DIR",
    default: Described("unset"),
    doc: "the directory Woodpecker's file log store used (its old `WOODPECKER_LOG_STORE_FILE_PATH`): its `<step id>.json` logs are read through, migrated and deleted like the database's",
    parse: parse_absolute_path,
};

/// Set in Woodpecker's official images; changes the default SQLite path.
const IN_CONTAINER: &str = "WOODPECKER_IN_CONTAINER";

/// Every variable, in the README's order.
pub const VARIABLES: &[SettingDoc] = &[
    DATABASE_DRIVER.documented(),
    DATABASE_DATASOURCE.documented(),
    DATABASE_DATASOURCE_FILE.documented(),
    LEGACY_FILE_DIR.documented(),
];

/// Woodpecker's database as the server's environment configures it, or `None` when it
/// configures none the addon can use: no variable is set and Woodpecker's default SQLite
/// file does not exist (so nothing changes for an addon run apart from a Woodpecker).
pub fn database_from_source(source: &impl Source) -> Result<Option<DataSource>, SettingError> {
    let driver = DATABASE_DRIVER.read(source)?;
    // Woodpecker's flag reads the file first and, when it cannot be read, goes on to the
    // variable and then the default (urfave/cli's value source chain): so does the addon.
    let from_file = DATABASE_DATASOURCE_FILE.read(source)?.and_then(|path| {
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(error) => {
                tracing::warn!(
                    file = %path.display(),
                    %error,
                    "cannot read {}; using {} as Woodpecker does",
                    DATABASE_DATASOURCE_FILE.name,
                    DATABASE_DATASOURCE.name
                );
                None
            }
        }
    });
    let (variable, text) = if let Some(text) = from_file {
        (DATABASE_DATASOURCE_FILE.name, text)
    } else if let Some(text) = DATABASE_DATASOURCE.read(source)? {
        (DATABASE_DATASOURCE.name, text)
    } else {
        return default_sqlite(source, driver);
    };
    let driver = driver.unwrap_or(Driver::Sqlite);
    DataSource::parse(driver, variable, &text).map(Some)
}

/// No data source is set: Woodpecker then opens its default SQLite file (under
/// `/var/lib/woodpecker` in its images). The addon reads it only when it exists; with
/// another driver and no data source Woodpecker itself cannot start, so neither does this.
fn default_sqlite(
    source: &impl Source,
    driver: Option<Driver>,
) -> Result<Option<DataSource>, SettingError> {
    match driver {
        None | Some(Driver::Sqlite) => {}
        Some(other) => {
            return Err(SettingError::new(
                DATABASE_DRIVER.name,
                other.name(),
                format!(
                    "set {} (or {}) to the server's data source as well",
                    DATABASE_DATASOURCE.name, DATABASE_DATASOURCE_FILE.name
                ),
            ));
        }
    }
    let path = if source.get(IN_CONTAINER).is_some() {
        Path::new("/var/lib/woodpecker/woodpecker.sqlite")
    } else {
        Path::new("woodpecker.sqlite")
    };
    if !path.is_file() {
        return Ok(None);
    }
    let variable = format!("{} (unset: Woodpecker's default)", DATABASE_DATASOURCE.name);
    DataSource::parse(Driver::Sqlite, &variable, &path.to_string_lossy()).map(Some)
}

/// The legacy file-store directory, if set.
pub fn legacy_file_dir(source: &impl Source) -> Result<Option<PathBuf>, SettingError> {
    LEGACY_FILE_DIR.read(source)
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
    fn nothing_set_and_no_default_file_means_no_database() {
        // The tests run in the crate's directory, which has no woodpecker.sqlite.
        assert!(database_from_source(&source(&[])).unwrap().is_none());
        let err = database_from_source(&source(&[(DATABASE_DRIVER.name, "postgres")])).unwrap_err();
        assert_eq!(err.variable, DATABASE_DRIVER.name);
        assert!(err.to_string().contains(DATABASE_DATASOURCE.name), "{err}");
    }

    #[test]
    fn the_file_wins_over_the_variable_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dsn");
        std::fs::write(&file, "postgres://wp:s3cret@db/wp?sslmode=disable\n").unwrap();
        let parsed = database_from_source(&source(&[
            (DATABASE_DRIVER.name, "postgres"),
            (DATABASE_DATASOURCE.name, "postgres://other@elsewhere/x"),
            (DATABASE_DATASOURCE_FILE.name, file.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(parsed.variable, DATABASE_DATASOURCE_FILE.name);
        assert_eq!(parsed.masked, "postgres://wp:***@db/wp?sslmode=disable");

        // An unreadable file falls back to the variable, as in Woodpecker.
        let missing = dir.path().join("missing");
        let parsed = database_from_source(&source(&[
            (DATABASE_DRIVER.name, "postgres"),
            (DATABASE_DATASOURCE.name, "postgres://other@elsewhere/x"),
            (DATABASE_DATASOURCE_FILE.name, missing.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(parsed.variable, DATABASE_DATASOURCE.name);
        assert_eq!(parsed.masked, "postgres://other@elsewhere/x");
    }

    #[test]
    fn errors_name_the_variable_and_mask_the_password() {
        for (driver, dsn, shown, reason) in [
            (
                "mysql",
                "wp:s3cret@tcp(db:port)/wp",
                "wp:***@tcp(db:port)/wp",
                "not a port number",
            ),
            (
                "mysql",
                "wp:s3cret@tcp(db)/wp?tls=custom",
                "wp:***@tcp(db)/wp?tls=custom",
                "named TLS configuration",
            ),
            (
                "postgres",
                "postgres://wp:s3cret@db/wp?sslmode=sometimes",
                "postgres://wp:***@db/wp?sslmode=sometimes",
                "expected disable",
            ),
            (
                "postgres",
                "host=db password=s3cret port=x",
                "host=db password=*** port=x",
                "not a port number",
            ),
            (
                "sqlite3",
                "file:/d/wp.db?_auth&_auth_user=a&_auth_pass=s3cret",
                "_auth_pass=***",
                "user authentication",
            ),
            ("sqlite3", "file::memory:", "file::memory:", "in-memory"),
        ] {
            let err = database_from_source(&source(&[
                (DATABASE_DRIVER.name, driver),
                (DATABASE_DATASOURCE.name, dsn),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, DATABASE_DATASOURCE.name);
            let text = err.to_string();
            assert!(text.contains(shown), "{text}");
            assert!(text.contains(reason), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let err = database_from_source(&source(&[(DATABASE_DRIVER.name, "sqlite")])).unwrap_err();
        assert_eq!(err.variable, DATABASE_DRIVER.name);
    }
}
