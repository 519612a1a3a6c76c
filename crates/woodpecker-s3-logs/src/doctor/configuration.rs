//! The settings check: every variable that is set, as the addon reads it, secrets masked.

use std::collections::HashMap;

use archive::S3Settings;
use engine::EngineSettings;
use settings::SettingDoc;

use crate::config::{Backend, Config};
use crate::variables::{ADOPT_PREFIX, ARCHIVE_DIR, LOG_LEVEL, METRICS_ADDR, STAGING, Staging};

/// Every variable the addon reads itself, in the README's order (the `AWS_*` row is the AWS
/// chain's, shown separately).
fn declared() -> Vec<SettingDoc> {
    let mut rows: Vec<SettingDoc> = S3Settings::VARIABLES
        .iter()
        .filter(|doc| !doc.name.ends_with('*'))
        .copied()
        .collect();
    rows.push(ARCHIVE_DIR.documented());
    rows.push(STAGING.documented());
    rows.extend_from_slice(EngineSettings::VARIABLES);
    rows.push(LOG_LEVEL.documented());
    rows.extend_from_slice(woodpecker_db::settings::VARIABLES);
    rows.push(ADOPT_PREFIX.documented());
    rows.push(METRICS_ADDR.documented());
    rows
}

/// `NAME=value` for each variable of ours that is set, then each `AWS_*` variable, then what
/// the addon makes of them.
pub(super) fn describe(env: &HashMap<String, String>, config: &Config) -> String {
    let mut lines = Vec::new();
    for doc in declared() {
        if let Some(value) = env.get(doc.name) {
            lines.push(format!("{}={}", doc.name, masked(doc.name, value)));
        }
    }
    let mut aws: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with("AWS_"))
        .collect();
    aws.sort();
    for (name, value) in aws {
        lines.push(format!("{name}={}", masked(name, value)));
    }
    if lines.is_empty() {
        lines.push("no WOODPECKER_LOG_STORE_S3_* or AWS_* variable set: all defaults".into());
    }
    lines.push(match &config.backend {
        Backend::S3(s3) => format!(
            "→ archive: s3://{}/{}{}{}",
            s3.bucket,
            s3.folder,
            s3.endpoint
                .as_deref()
                .map(|e| format!(" at {}", archive::redact_endpoint(e)))
                .unwrap_or_default(),
            if s3.path_style { " (path-style)" } else { "" }
        ),
        Backend::LocalDir(dir) => format!(
            "→ archive: local directory {} (embedded default: no bucket set)",
            dir.display()
        ),
    });
    match (config.staging, &config.database) {
        (Staging::Database, Some(database)) => lines.push(format!(
            "→ staging: log_entries in Woodpecker's {database} (no spool directory)"
        )),
        _ => lines.push(format!("→ spool: {}", config.engine.spool_dir.display())),
    }
    lines.join("\n")
}

/// A value as it may be printed: secrets (keys, tokens, passwords) are replaced, an access
/// key id keeps its first and last four characters, an endpoint URL loses its
/// `user:password@`.
fn masked(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("ACCESS_KEY_ID") {
        return archive::access_key_hint(value);
    }
    if upper.contains("ENDPOINT") {
        return archive::redact_endpoint(value).into_owned();
    }
    let secret = upper.contains("SECRET")
        || upper.contains("PASSWORD")
        || upper.contains("DATASOURCE")
        || (upper.contains("TOKEN") && !upper.ends_with("_FILE"));
    if secret {
        "****** (set, hidden)".into()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        assert_eq!(
            masked("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            "****** (set, hidden)"
        );
        assert_eq!(masked("AWS_SESSION_TOKEN", "x"), "****** (set, hidden)");
        assert_eq!(
            masked("AWS_CONTAINER_AUTHORIZATION_TOKEN", "x"),
            "****** (set, hidden)"
        );
        assert_eq!(
            masked("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            "/var/run/token"
        );
        assert_eq!(
            masked("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            "AKIA…MPLE"
        );
        assert_eq!(masked("AWS_REGION", "eu-west-1"), "eu-west-1");
    }

    /// Finding 8 of issue 12: an endpoint with `user:password@` never shows the password,
    /// neither as the variable nor in what the addon makes of it.
    #[test]
    fn endpoint_passwords_never_show() {
        let env: HashMap<String, String> = [
            ("WOODPECKER_LOG_STORE_S3_BUCKET", "ci-logs"),
            (
                "WOODPECKER_LOG_STORE_S3_ENDPOINT",
                "http://admin:hunter2@127.0.0.1:9000",
            ),
            ("AWS_ENDPOINT_URL", "https://key:hunter2@s3.example.com"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::from_source(&env).unwrap();
        let shown = describe(&env, &config);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("WOODPECKER_LOG_STORE_S3_ENDPOINT=http://***@127.0.0.1:9000"),
            "{shown}"
        );
        assert!(shown.contains("at http://***@127.0.0.1:9000"), "{shown}");
    }

    #[test]
    fn lists_what_is_set_and_what_it_means() {
        let env: HashMap<String, String> = [
            ("WOODPECKER_LOG_STORE_S3_BUCKET", "ci-logs"),
            (
                "WOODPECKER_LOG_STORE_S3_SPOOL_DIR",
                "/var/lib/woodpecker/spool",
            ),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("AWS_REGION", "eu-west-1"),
            ("HOME", "/root"),
            ("WOODPECKER_LOG_STORE_S3_METRICS_ADDR", ":9464"),
            ("WOODPECKER_DATABASE_DRIVER", "postgres"),
            (
                "WOODPECKER_DATABASE_DATASOURCE",
                "postgres://woodpecker:hunter2@db:5432/woodpecker",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_source(&env).unwrap();
        let text = describe(&env, &config);
        assert_eq!(
            text,
            "WOODPECKER_LOG_STORE_S3_BUCKET=ci-logs\n\
             WOODPECKER_LOG_STORE_S3_SPOOL_DIR=/var/lib/woodpecker/spool\n\
             WOODPECKER_DATABASE_DRIVER=postgres\n\
             WOODPECKER_DATABASE_DATASOURCE=****** (set, hidden)\n\
             WOODPECKER_LOG_STORE_S3_METRICS_ADDR=:9464\n\
             AWS_REGION=eu-west-1\n\
             AWS_SECRET_ACCESS_KEY=****** (set, hidden)\n\
             → archive: s3://ci-logs/\n\
             → spool: /var/lib/woodpecker/spool"
        );
    }
}
