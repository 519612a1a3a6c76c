//! lib/pq's data source: a URL (`postgres://user:pass@host:port/db?sslmode=disable`) or
//! `key=value` pairs (`host=db user=wp password='a b' dbname=wp sslmode=disable`).
//!
//! Both forms become one set of parameters, as in lib/pq, applied over the `PG*`
//! environment variables sqlx reads (as lib/pq does). lib/pq's defaults differ from
//! libpq's in one place that matters: `sslmode` defaults to `require` (encrypted, not
//! verified), and so it does here. Parameters sqlx has no use for (`connect_timeout`,
//! `fallback_application_name`, `binary_parameters`, `disable_prepared_binary_result`,
//! `krbsrvname`, `krbspn`) are ignored; any other unknown key is a run-time parameter, as
//! lib/pq sends it (`search_path=…`).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::MASK;

pub(super) fn options(text: &str) -> Result<PgConnectOptions, String> {
    let params = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        url_params(text)?
    } else {
        key_value_params(text)?
    };
    let mut options = PgConnectOptions::new();
    let mut ssl_mode = PgSslMode::Require;
    let mut runtime = Vec::new();
    for (key, value) in params {
        options = match key.as_str() {
            "host" if value.starts_with('/') => options.socket(&value),
            "host" => options.host(&value),
            "port" => options.port(
                value
                    .parse()
                    .map_err(|_| format!("port={value:?} is not a port number"))?,
            ),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "dbname" => options.database(&value),
            "sslmode" => {
                ssl_mode = match value.as_str() {
                    "disable" => PgSslMode::Disable,
                    "allow" => PgSslMode::Allow,
                    "prefer" => PgSslMode::Prefer,
                    "require" => PgSslMode::Require,
                    "verify-ca" => PgSslMode::VerifyCa,
                    "verify-full" => PgSslMode::VerifyFull,
                    _ => {
                        return Err(format!(
                            "sslmode={value:?}: expected disable, allow, prefer, require, \
                             verify-ca or verify-full"
                        ));
                    }
                };
                options
            }
            "sslrootcert" => options.ssl_root_cert(&value),
            "sslcert" => options.ssl_client_cert(&value),
            "sslkey" => options.ssl_client_key(&value),
            "application_name" => options.application_name(&value),
            "connect_timeout" => {
                value.parse::<i64>().map_err(|_| {
                    format!("connect_timeout={value:?}: expected a number of seconds")
                })?;
                options
            }
            "fallback_application_name"
            | "binary_parameters"
            | "disable_prepared_binary_result"
            | "krbsrvname"
            | "krbspn"
            | "sslinline"
            | "sslsni"
            | "sslpassword" => options,
            _ => {
                runtime.push((key, value));
                options
            }
        };
    }
    if !runtime.is_empty() {
        options = options.options(runtime);
    }
    Ok(options.ssl_mode(ssl_mode))
}

/// The pool's connect timeout from `connect_timeout=` (seconds, as in lib/pq; 0 or less
/// means none).
pub(super) fn connect_timeout(text: &str) -> Option<Duration> {
    let params = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        url_params(text).ok()?
    } else {
        key_value_params(text).ok()?
    };
    let (_, seconds) = params.into_iter().find(|(k, _)| k == "connect_timeout")?;
    seconds
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// The parameters of a URL, as lib/pq's `ParseURL` turns them into `key=value` pairs.
fn url_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "the user or password is not UTF-8 once decoded".to_owned())
    };
    let mut params = Vec::new();
    if !url.username().is_empty() {
        params.push(("user".to_owned(), decode(url.username())?));
    }
    if let Some(password) = url.password() {
        params.push(("password".to_owned(), decode(password)?));
    }
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        params.push((
            "host".to_owned(),
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        ));
    }
    if let Some(port) = url.port() {
        params.push(("port".to_owned(), port.to_string()));
    }
    let database = url.path().trim_start_matches('/');
    if !database.is_empty() {
        params.push(("dbname".to_owned(), decode(database)?));
    }
    params.extend(
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned())),
    );
    Ok(params)
}

/// lib/pq's `key=value` form: pairs separated by whitespace, spaces allowed around `=`,
/// values either bare or in single quotes, `\` escaping the next character in both.
fn key_value_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "expected key=value pairs (or a postgres:// URL); {key:?} has no value"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the quoted value of {key} is not closed")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.push((key, value));
    }
}

/// The URL's password or the `password=` pair's value, masked.
pub(super) fn mask(text: &str) -> String {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return mask_url(text);
    }
    let Ok(params) = key_value_params(text) else {
        // Unparseable: show nothing after a password key rather than risk showing it.
        return match text.find("password") {
            Some(pos) => format!("{}password={MASK} …", &text[..pos]),
            None => text.to_owned(),
        };
    };
    params
        .iter()
        .map(|(key, value)| {
            if key == "password" {
                format!("password={MASK}")
            } else if value.is_empty() || value.contains([' ', '\'', '\\']) {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            } else {
                format!("{key}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A URL with its password replaced; the authority is cut by hand so that even a URL the
/// parser refuses is masked.
fn mask_url(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}{tail}"),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_key_value_pairs_mean_the_same() {
        let url =
            options("postgres://wp:p%40ss@db.example:6432/woodpecker?sslmode=disable").unwrap();
        let pairs = options(
            "host=db.example port=6432 user=wp password='p@ss' dbname=woodpecker sslmode=disable",
        )
        .unwrap();
        for options in [url, pairs] {
            assert_eq!(options.get_host(), "db.example");
            assert_eq!(options.get_port(), 6432);
            assert_eq!(options.get_username(), "wp");
            assert_eq!(options.get_database(), Some("woodpecker"));
            assert!(format!("{options:?}").contains("Disable"), "{options:?}");
        }
    }

    #[test]
    fn sslmode_defaults_to_require_as_in_lib_pq() {
        let options = options("host=db user=wp dbname=wp").unwrap();
        assert!(
            format!("{options:?}").contains("ssl_mode: Require"),
            "{options:?}"
        );
    }

    #[test]
    fn key_value_quoting() {
        assert!(key_value_params(r"user = wp password='it''s'").is_err());
        assert_eq!(
            key_value_params("user = wp").unwrap(),
            [("user".to_owned(), "wp".to_owned())]
        );
        assert_eq!(
            key_value_params(r"password='it\'s' x=a\ b dbname='my db' e=''").unwrap(),
            [
                ("password", "it's"),
                ("x", "a b"),
                ("dbname", "my db"),
                ("e", "")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(key_value_params("password='open").is_err());
    }

    #[test]
    fn bad_values_are_named() {
        for (dsn, reason) in [
            ("host=db port=fivefour", "not a port number"),
            ("host=db sslmode=always", "expected disable"),
            ("postgres://wp:pw@db:99999/wp", "not a valid URL"),
            ("just-a-name", "has no value"),
        ] {
            let err = options(dsn).unwrap_err();
            assert!(err.contains(reason), "{dsn}: {err}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        for (dsn, masked) in [
            (
                "postgres://wp:s3cret@db:5432/wp?sslmode=disable",
                "postgres://wp:***@db:5432/wp?sslmode=disable",
            ),
            ("postgresql://wp:s3c@ret@db/wp", "postgresql://wp:***@db/wp"),
            ("postgres://wp@db/wp", "postgres://wp@db/wp"),
            (
                "host=db user=wp password='s3 cret' dbname=wp",
                "host=db user=wp password=*** dbname=wp",
            ),
            ("host=db password='open", "host=db password=*** …"),
        ] {
            assert_eq!(mask(dsn), masked);
            assert!(!mask(dsn).contains("s3"), "{dsn}");
        }
    }
}
