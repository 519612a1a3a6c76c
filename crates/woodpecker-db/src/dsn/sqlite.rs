//! mattn/go-sqlite3's data source: a file name, or a `file:` URI, either with `?options`.
//!
//! As in go-sqlite3, options after `?` are read from both forms, and a plain file name ends
//! at the `?`. Options are handled deliberately:
//! - mapped: `mode` (`ro` opens read-only; `rw`/`rwc` read-write; the addon never creates
//!   the file), `immutable`, `vfs`, `_busy_timeout`/`_timeout` (milliseconds, default 5000
//!   as in go-sqlite3), `_query_only` (read-only), `_synchronous`/`_sync` (default `NORMAL`
//!   as in go-sqlite3: the addon's commits are as durable as the server's own, no more; SQLite's
//!   own default, `FULL`, syncs the rollback journal once more per commit);
//! - refused: an in-memory database (`:memory:`, `mode=memory`: it holds none of the
//!   server's logs) and `_auth*` (SQLite's user-authentication extension, which sqlx lacks);
//! - ignored: everything else (`cache`, `_journal_mode`, `_locking_mode`,
//!   `_foreign_keys`, `_txlock`, `_loc`, `_cache_size`, `_pragma`, …): they tune the
//!   server's own connections, and the addon must not change the server's file (its journal
//!   mode, say) behind its back. Unknown options are ignored, as go-sqlite3 and SQLite do.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};

use super::{MASK, parse_go_bool, percent_decode, query_pairs};

/// go-sqlite3's default busy timeout.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn options(text: &str) -> Result<SqliteConnectOptions, String> {
    let (path_part, query) = match text.find('?') {
        Some(pos) if pos >= 1 => (&text[..pos], &text[pos + 1..]),
        _ => (text, ""),
    };
    let path = match path_part.strip_prefix("file:") {
        Some(uri_path) => uri_file_path(uri_path)?,
        None => path_part.to_owned(),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(
            "an in-memory SQLite database holds none of the server's logs; \
             set the path of the server's database file"
                .into(),
        );
    }
    let mut options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(false)
        .busy_timeout(DEFAULT_BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Normal);
    for (key, value) in query_pairs(query)? {
        options = match key.as_str() {
            "mode" => match value.as_str() {
                "ro" => options.read_only(true),
                "rw" | "rwc" => options,
                "memory" => {
                    return Err("mode=memory: an in-memory SQLite database holds none of \
                         the server's logs"
                        .into());
                }
                _ => return Err(format!("mode={value:?}: expected ro, rw or rwc")),
            },
            "immutable" => options.immutable(parse_go_bool(&key, &value)?),
            "vfs" => options.vfs(value),
            "_busy_timeout" | "_timeout" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("{key}={value:?}: expected milliseconds"))?;
                options.busy_timeout(Duration::from_millis(ms))
            }
            "_query_only" => options.read_only(parse_go_bool(&key, &value)?),
            "_synchronous" | "_sync" => options.synchronous(synchronous(&key, &value)?),
            key if key.starts_with("_auth") => {
                return Err(format!(
                    "{key}: SQLite user authentication is not supported; \
                     remove the _auth options (file permissions protect the database)"
                ));
            }
            _ => options,
        };
    }
    Ok(options)
}

/// go-sqlite3's `_synchronous` values (case-insensitive).
fn synchronous(key: &str, value: &str) -> Result<SqliteSynchronous, String> {
    Ok(match value.to_ascii_uppercase().as_str() {
        "0" | "OFF" => SqliteSynchronous::Off,
        "1" | "NORMAL" => SqliteSynchronous::Normal,
        "2" | "FULL" => SqliteSynchronous::Full,
        "3" | "EXTRA" => SqliteSynchronous::Extra,
        _ => {
            return Err(format!(
                "{key}={value:?}: expected OFF, NORMAL, FULL or EXTRA (or 0-3)"
            ));
        }
    })
}

/// The file path of a `file:` URI (`file:data.db`, `file:/abs/data.db`,
/// `file:///abs/data.db`, `file://localhost/abs/data.db`), percent-decoded.
fn uri_file_path(uri_path: &str) -> Result<String, String> {
    let path = match uri_path.strip_prefix("//") {
        Some(rest) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if !authority.is_empty() && authority != "localhost" {
                return Err(format!(
                    "file://{authority}/…: SQLite opens local files only (the authority must \
                     be empty or localhost)"
                ));
            }
            path
        }
        None => uri_path,
    };
    let path = path.split('#').next().unwrap_or_default();
    percent_decode(path).ok_or_else(|| format!("the file path {path:?} has a bad % escape"))
}

/// The only secret a go-sqlite3 data source may hold is `_auth_pass`.
pub(super) fn mask(text: &str) -> String {
    let Some(pos) = text.find('?') else {
        return text.to_owned();
    };
    let (head, query) = text.split_at(pos + 1);
    let masked: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some(("_auth_pass", _)) => format!("_auth_pass={MASK}"),
            _ => part.to_owned(),
        })
        .collect();
    format!("{head}{}", masked.join("&"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn filename(text: &str) -> String {
        options(text)
            .unwrap()
            .get_filename()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn file_names_and_uris() {
        for (dsn, path) in [
            (
                "/var/lib/woodpecker/woodpecker.sqlite",
                "/var/lib/woodpecker/woodpecker.sqlite",
            ),
            ("woodpecker.sqlite", "woodpecker.sqlite"),
            (
                "/data/wp.db?_busy_timeout=9000&_journal_mode=WAL",
                "/data/wp.db",
            ),
            ("file:/data/wp.db?cache=shared&mode=rwc", "/data/wp.db"),
            ("file:///data/my%20wp.db", "/data/my wp.db"),
            ("file://localhost/data/wp.db", "/data/wp.db"),
            ("file:wp.db?_pragma=busy_timeout(5000)", "wp.db"),
        ] {
            assert!(filename(dsn).ends_with(path), "{dsn}: {}", filename(dsn));
            assert!(Path::new(&filename(dsn)).ends_with(path));
        }
    }

    #[test]
    fn options_are_mapped_or_refused() {
        let ro = options("file:/d/wp.db?mode=ro").unwrap();
        assert!(format!("{ro:?}").contains("read_only: true"), "{ro:?}");
        for (dsn, reason) in [
            (":memory:", "in-memory"),
            ("file::memory:?cache=shared", "in-memory"),
            ("file:/d/wp.db?mode=memory", "in-memory"),
            ("file:/d/wp.db?mode=sometimes", "expected ro, rw or rwc"),
            ("/d/wp.db?_busy_timeout=soon", "milliseconds"),
            (
                "/d/wp.db?_sync=often",
                "expected OFF, NORMAL, FULL or EXTRA",
            ),
            (
                "/d/wp.db?_auth&_auth_user=a&_auth_pass=b",
                "user authentication",
            ),
            ("file://otherhost/d/wp.db", "local files only"),
            ("file:/d/wp%zz.db", "bad % escape"),
        ] {
            let err = options(dsn).unwrap_err();
            assert!(err.contains(reason), "{dsn}: {err}");
        }
    }

    /// What a connection opened with `dsn` reports for `PRAGMA synchronous` (0-3).
    async fn synchronous_of(dsn: &str) -> i64 {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = options(dsn).unwrap().connect().await.unwrap();
        let level = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        level
    }

    #[tokio::test]
    async fn commits_are_as_durable_as_the_servers_own() {
        let dir = std::env::temp_dir().join(format!("wpdb-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wp.db");
        std::fs::write(&file, b"").unwrap();
        let path = file.display();
        // go-sqlite3's default and its two spellings; SQLite's own default would be 2.
        assert_eq!(synchronous_of(&format!("{path}")).await, 1);
        assert_eq!(
            synchronous_of(&format!("{path}?_synchronous=full")).await,
            2
        );
        assert_eq!(synchronous_of(&format!("file:{path}?_sync=3")).await, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_auth_password_is_masked() {
        assert_eq!(
            mask("file:/d/wp.db?_auth&_auth_user=admin&_auth_pass=s3cret"),
            "file:/d/wp.db?_auth&_auth_user=admin&_auth_pass=***"
        );
        assert_eq!(mask("/d/wp.db"), "/d/wp.db");
    }
}
