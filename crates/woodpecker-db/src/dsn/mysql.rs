//! go-sql-driver/mysql's data source:
//! `[user[:password]@][net[(addr)]]/dbname[?param1=value1&paramN=valueN]`.
//!
//! Split exactly as the Go driver splits it: the last `/` ends the address part, the last
//! `@` before it ends the credentials, the first `:` in them starts the password (so a
//! password may hold `:` and `@`, as in Go). Defaults as in Go: `tcp` to `127.0.0.1:3306`,
//! port 3306, and no TLS unless `tls=` asks for it (sqlx's own default would be
//! "preferred").
//!
//! Parameters:
//! - mapped: `tls` (`true` verifies certificate and host name, `skip-verify` encrypts
//!   without verifying, `preferred`, `false`), `charset` (the first of the list),
//!   `collation`, `timeout` (checked here, applied as the pool's connect timeout);
//! - refused: a `tls` configuration name (only Go code can register one), a network other
//!   than `tcp`, `tcp6` or `unix`;
//! - ignored: options of the Go driver's own behaviour that do not change the bytes read
//!   (`parseTime`, `loc`, `interpolateParams`, `multiStatements`, `readTimeout`, …), and
//!   unknown keys, which the Go driver sends as session variables (`sql_mode=…`): the
//!   addon's queries do not depend on them.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

use super::{MASK, parse_go_duration, query_pairs};

/// The parts of a go-sql-driver DSN, before any default.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parts<'a> {
    user: &'a str,
    password: Option<&'a str>,
    net: &'a str,
    addr: &'a str,
    dbname: &'a str,
    params: &'a str,
}

/// Splits `text` as go-sql-driver's `ParseDSN` does.
fn split(text: &str) -> Result<Parts<'_>, String> {
    let Some(slash) = text.rfind('/') else {
        return Err(
            "expected user:password@tcp(host:port)/dbname (no / before the \
             database name)"
                .into(),
        );
    };
    let (head, tail) = (&text[..slash], &text[slash + 1..]);
    let (user, password, target) = match head.rfind('@') {
        Some(at) => {
            let credentials = &head[..at];
            match credentials.split_once(':') {
                Some((user, password)) => (user, Some(password), &head[at + 1..]),
                None => (credentials, None, &head[at + 1..]),
            }
        }
        None => ("", None, head),
    };
    let (net, addr) = match target.find('(') {
        Some(open) => {
            let Some(addr) = target[open + 1..].strip_suffix(')') else {
                return Err(format!(
                    "the address in {target:?} must be written net(host:port), ending in )"
                ));
            };
            (&target[..open], addr)
        }
        None => (target, ""),
    };
    let (dbname, params) = tail.split_once('?').unwrap_or((tail, ""));
    Ok(Parts {
        user,
        password,
        net,
        addr,
        dbname,
        params,
    })
}

pub(super) fn options(text: &str) -> Result<MySqlConnectOptions, String> {
    let parts = split(text)?;
    let mut options = MySqlConnectOptions::new().username(parts.user);
    if let Some(password) = parts.password {
        options = options.password(password);
    }
    options = match parts.net {
        "" | "tcp" | "tcp6" => {
            let (host, port) = host_port(parts.addr)?;
            options.host(&host).port(port)
        }
        "unix" if parts.addr.is_empty() => options.socket("/tmp/mysql.sock"),
        "unix" => options.socket(parts.addr),
        other => {
            return Err(format!(
                "network {other:?}: expected tcp or unix (a network registered in Go code \
                 cannot be used here)"
            ));
        }
    };
    let dbname = percent_encoding::percent_decode_str(parts.dbname)
        .decode_utf8()
        .map_err(|_| format!("the database name {:?} is not UTF-8", parts.dbname))?;
    if !dbname.is_empty() {
        options = options.database(&dbname);
    }
    let mut ssl_mode = MySqlSslMode::Disabled;
    for (key, value) in query_pairs(parts.params)? {
        options = match key.as_str() {
            "tls" => {
                ssl_mode = match value.as_str() {
                    "true" | "1" | "t" | "T" | "TRUE" | "True" => MySqlSslMode::VerifyIdentity,
                    "false" | "0" | "f" | "F" | "FALSE" | "False" => MySqlSslMode::Disabled,
                    "skip-verify" => MySqlSslMode::Required,
                    "preferred" => MySqlSslMode::Preferred,
                    name => {
                        return Err(format!(
                            "tls={name:?}: a named TLS configuration exists only inside a Go \
                             program; use tls=true, skip-verify, preferred or false"
                        ));
                    }
                };
                options
            }
            "charset" => match value.split(',').next().filter(|c| !c.is_empty()) {
                Some(charset) => options.charset(charset),
                None => options,
            },
            "collation" => options.collation(&value),
            "timeout" => {
                parse_go_duration(&key, &value)?;
                options
            }
            _ => options,
        };
    }
    Ok(options.ssl_mode(ssl_mode))
}

/// The pool's connect timeout from a `timeout=` parameter, if any.
pub(super) fn connect_timeout(text: &str) -> Option<Duration> {
    let parts = split(text).ok()?;
    query_pairs(parts.params)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == "timeout")
        .and_then(|(key, value)| parse_go_duration(&key, &value).ok())
}

/// `host:port`, `[v6]:port` or a host alone (port 3306), as Go's driver reads the address.
fn host_port(addr: &str) -> Result<(String, u16), String> {
    if addr.is_empty() {
        return Ok(("127.0.0.1".to_owned(), 3306));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("address {addr:?}: expected [host]:port")),
            },
            None => return Err(format!("address {addr:?}: missing ]")),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (addr, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| format!("address {addr:?}: {port:?} is not a port number"))?,
        None => 3306,
    };
    Ok((host.to_owned(), port))
}

/// The text between the first `:` of the credentials and their last `@`, masked.
pub(super) fn mask(text: &str) -> String {
    match split(text) {
        Ok(Parts {
            user,
            password: Some(_),
            ..
        }) => {
            let slash = text.rfind('/').unwrap_or(text.len());
            let at = text[..slash].rfind('@').unwrap_or(0);
            format!("{user}:{MASK}{}", &text[at..])
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_like_go_sql_driver() {
        assert_eq!(
            split("wp:p@ss:w/rd@tcp(db:3307)/woodpecker?parseTime=true").unwrap(),
            Parts {
                user: "wp",
                password: Some("p@ss:w/rd"),
                net: "tcp",
                addr: "db:3307",
                dbname: "woodpecker",
                params: "parseTime=true",
            }
        );
        assert_eq!(
            split("/wp").unwrap(),
            Parts {
                dbname: "wp",
                ..Parts::default()
            }
        );
        assert_eq!(
            split("root@unix(/run/mysqld/mysqld.sock)/wp").unwrap().addr,
            "/run/mysqld/mysqld.sock"
        );
    }

    #[test]
    fn defaults_and_mapping() {
        let options =
            options("wp:pw@tcp(db)/woodpecker?parseTime=true&charset=utf8mb4,utf8").unwrap();
        assert_eq!(options.get_host(), "db");
        assert_eq!(options.get_port(), 3306);
        assert_eq!(options.get_username(), "wp");
        assert_eq!(options.get_database(), Some("woodpecker"));
        assert_eq!(options.get_charset(), "utf8mb4");
        let debug = format!("{options:?}");
        assert!(debug.contains("Disabled"), "{debug}");
        let tls = super::options("wp:pw@tcp([::1]:3310)/wp?tls=skip-verify").unwrap();
        assert_eq!(tls.get_host(), "::1");
        assert_eq!(tls.get_port(), 3310);
        assert!(format!("{tls:?}").contains("Required"), "{tls:?}");
        assert_eq!(
            connect_timeout("wp:pw@tcp(db)/wp?timeout=2s"),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (dsn, reason) in [
            ("wp:pw@tcp(db:3306)", "no / before"),
            ("wp:pw@tcp(db:3306/wp", "ending in )"),
            ("wp:pw@tcp(db:port)/wp", "not a port number"),
            ("wp:pw@tcp(db)/wp?tls=custom", "named TLS configuration"),
            ("wp:pw@cloudsql(x)/wp", "expected tcp or unix"),
            ("wp:pw@tcp(db)/wp?timeout=soon", "duration"),
        ] {
            let err = options(dsn).unwrap_err();
            assert!(err.contains(reason), "{dsn}: {err}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        for (dsn, masked) in [
            (
                "wp:s3cret@tcp(db:3306)/wp?parseTime=true",
                "wp:***@tcp(db:3306)/wp?parseTime=true",
            ),
            ("wp:s3c@r:et@tcp(db)/wp", "wp:***@tcp(db)/wp"),
            ("wp@tcp(db)/wp", "wp@tcp(db)/wp"),
        ] {
            assert_eq!(mask(dsn), masked);
        }
    }
}
