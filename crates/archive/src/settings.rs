//! Parsing of `WOODPECKER_LOG_STORE_S3_*` values, shared by every crate that reads settings.
//!
//! Values follow Woodpecker's own notation (Go's `time.ParseDuration`, `strconv.ParseBool`)
//! so admins can write them as they write the server's. Every error names the variable.

use std::time::Duration;

/// A setting that cannot be used. Its text is the one line the admin sees in the Woodpecker
/// log before the addon refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct SettingError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

impl SettingError {
    pub fn new(variable: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where settings come from: the process environment in production, a map in tests.
pub trait Source {
    /// The value of `name`, or `None` when unset or empty (an empty variable means "default",
    /// as in Woodpecker).
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<S: std::hash::BuildHasher> Source for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }
}

/// `true`/`false` and the other spellings Go's `strconv.ParseBool` accepts.
pub fn parse_bool(variable: &str, value: &str) -> Result<bool, SettingError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(SettingError::new(variable, value, "expected true or false")),
    }
}

/// A Go duration such as `500ms`, `5s`, `1h30m`. Negative durations are refused: no
/// setting of this product means anything with one.
pub fn parse_duration(variable: &str, value: &str) -> Result<Duration, SettingError> {
    let error = |reason: &str| SettingError::new(variable, value, reason);
    let text = value.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(error("a duration cannot be negative"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(error("expected a duration such as 500ms, 5s, 10m or 1h"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| error("missing unit (use ns, us, ms, s, m or h)"))?;
        let (number, tail) = rest.split_at(number_len);
        let number: f64 = number
            .parse()
            .map_err(|_| error("expected a duration such as 500ms, 5s, 10m or 1h"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(error("unknown unit (use ns, us, ms, s, m or h)")),
        };
        total += number * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| error("duration out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_notation() {
        let d = |v| parse_duration("X", v).unwrap();
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("0"), Duration::ZERO);
    }

    #[test]
    fn bad_durations_name_the_variable() {
        for bad in ["5", "abc", "-1s", "10 parsecs", "", "1d"] {
            let err = parse_duration("WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT", bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT"),
                "{err}"
            );
        }
    }

    #[test]
    fn booleans_as_go_parses_them() {
        assert!(parse_bool("X", "true").unwrap());
        assert!(!parse_bool("X", "0").unwrap());
        assert!(parse_bool("X", "yes").is_err());
    }
}
