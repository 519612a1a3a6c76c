//! Woodpecker's database settings, read as the server reads them: the driver
//! (`WOODPECKER_DATABASE_DRIVER`) and its data source string in the format of the Go driver
//! Woodpecker uses for it (mattn/go-sqlite3, lib/pq, go-sql-driver/mysql), turned into
//! sqlx connect options.
//!
//! Every error names the variable and shows its value with the password masked.

mod mysql;
mod postgres;
mod sqlite;

use std::fmt;
use std::time::Duration;

use settings::SettingError;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// The password, wherever a data source shows it to a person.
pub const MASK: &str = "***";

/// One of the three databases Woodpecker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Driver {
    /// `sqlite3`: a file, Woodpecker's default.
    Sqlite,
    /// `postgres`.
    Postgres,
    /// `mysql` (MySQL or MariaDB).
    MySql,
}

impl Driver {
    /// The name `WOODPECKER_DATABASE_DRIVER` uses.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Sqlite => "sqlite3",
            Driver::Postgres => "postgres",
            Driver::MySql => "mysql",
        }
    }

    /// Parses a `WOODPECKER_DATABASE_DRIVER` value; `variable` is named in the error.
    pub fn parse(variable: &str, value: &str) -> Result<Self, SettingError> {
        match value.trim() {
            "sqlite3" => Ok(Driver::Sqlite),
            "postgres" => Ok(Driver::Postgres),
            "mysql" => Ok(Driver::MySql),
            _ => Err(SettingError::new(
                variable,
                value,
                "expected sqlite3, postgres or mysql (Woodpecker's database drivers)",
            )),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to reach the database, per driver.
#[derive(Clone, Debug)]
pub enum ConnectOptions {
    /// A SQLite file.
    Sqlite(SqliteConnectOptions),
    /// A PostgreSQL server.
    Postgres(PgConnectOptions),
    /// A MySQL or MariaDB server.
    MySql(MySqlConnectOptions),
}

/// A parsed data source: the connect options and how to name it to a person.
#[derive(Clone)]
pub struct DataSource {
    /// The driver it is for.
    pub driver: Driver,
    /// The variable it was read from (`…_DATASOURCE`, `…_DATASOURCE_FILE`, or Woodpecker's
    /// default), for error messages.
    pub variable: String,
    /// The string with its password replaced by [`MASK`].
    pub masked: String,
    /// What sqlx connects with.
    pub options: ConnectOptions,
    /// How long to wait for a connection, when the data source says (`timeout=` for
    /// MySQL, `connect_timeout=` for PostgreSQL).
    pub connect_timeout: Option<Duration>,
}

impl fmt::Debug for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The options hold the password: never print them.
        f.debug_struct("DataSource")
            .field("driver", &self.driver)
            .field("variable", &self.variable)
            .field("masked", &self.masked)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} database {}", self.driver, self.masked)
    }
}

impl DataSource {
    /// Parses `text` (the value of `variable`) in `driver`'s format. The error names
    /// `variable` and shows the value with its password masked.
    pub fn parse(driver: Driver, variable: &str, text: &str) -> Result<Self, SettingError> {
        let text = text.trim();
        let masked = mask(driver, text);
        let error = |reason: String| SettingError::new(variable, &masked, reason);
        let (options, connect_timeout) = match driver {
            Driver::Sqlite => (
                ConnectOptions::Sqlite(sqlite::options(text).map_err(error)?),
                None,
            ),
            Driver::Postgres => (
                ConnectOptions::Postgres(postgres::options(text).map_err(error)?),
                postgres::connect_timeout(text),
            ),
            Driver::MySql => (
                ConnectOptions::MySql(mysql::options(text).map_err(error)?),
                mysql::connect_timeout(text),
            ),
        };
        Ok(Self {
            driver,
            variable: variable.to_owned(),
            masked,
            options,
            connect_timeout,
        })
    }
}

/// `text` with its password replaced by [`MASK`], for messages.
pub fn mask(driver: Driver, text: &str) -> String {
    match driver {
        Driver::Sqlite => sqlite::mask(text),
        Driver::Postgres => postgres::mask(text),
        Driver::MySql => mysql::mask(text),
    }
}

/// Parses a `key=value&…` query string the way Go's `url.ParseQuery` does (`+` is a space,
/// percent escapes decoded); a malformed escape is an error naming the parameter.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode(&s).ok_or_else(|| format!("the parameter {part:?} has a bad % escape"))
        };
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return None;
        }
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// A duration parameter such as `_busy_timeout=5000` (milliseconds) or `timeout=30s` (Go).
fn parse_go_duration(key: &str, value: &str) -> Result<std::time::Duration, String> {
    settings::parse_duration(key, value).map_err(|e| e.reason)
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
fn parse_go_bool(key: &str, value: &str) -> Result<bool, String> {
    settings::parse_bool(key, value).map_err(|_| format!("{key}={value:?} is not true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_are_named_as_woodpecker_names_them() {
        for driver in [Driver::Sqlite, Driver::Postgres, Driver::MySql] {
            assert_eq!(Driver::parse("V", driver.name()).unwrap(), driver);
        }
        let err = Driver::parse("WOODPECKER_DATABASE_DRIVER", "sqlite").unwrap_err();
        assert_eq!(err.variable, "WOODPECKER_DATABASE_DRIVER");
        assert!(
            err.to_string().contains("sqlite3, postgres or mysql"),
            "{err}"
        );
    }

    #[test]
    fn query_strings_decode_as_go_does() {
        assert_eq!(
            query_pairs("a=1&b=x+y&c=%2F&&d").unwrap(),
            [("a", "1"), ("b", "x y"), ("c", "/"), ("d", "")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(query_pairs("a=%zz").is_err());
    }
}
