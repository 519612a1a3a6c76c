//! The parsers every crate's settings share. Each takes the variable's name so its error can
//! name it, trims surrounding whitespace, and quotes the value as given in its error.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::SettingError;

const MIB: u64 = 1024 * 1024;

/// `true`/`false` and the other spellings Go's `strconv.ParseBool` accepts.
pub fn parse_bool(variable: &str, value: &str) -> Result<bool, SettingError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(SettingError::new(variable, value, "expected true or false")),
    }
}

/// The longest duration Go's `time.ParseDuration` accepts (2^63 - 1 ns, about 292 years), as
/// Go writes it. Longer ones are refused too, so no setting can hold a duration that the
/// clock arithmetic using it cannot represent.
const MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// [`MAX_DURATION`] in the notation of the error that names it.
const MAX_DURATION_TEXT: &str = "2562047h47m16.854775807s";

/// A Go duration such as `500ms`, `5s`, `1h30m`, at most [`MAX_DURATION`], as in Go.
/// Negative durations are refused: no setting of this product means anything with one.
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
    Duration::try_from_secs_f64(total)
        .ok()
        .filter(|duration| *duration <= MAX_DURATION)
        .ok_or_else(|| {
            error(&format!(
                "too long: at most {MAX_DURATION_TEXT} (about 292 years, the longest duration Woodpecker accepts)"
            ))
        })
}

/// A whole number within `range` (inclusive), in the integer type the setting is used as.
pub fn parse_number<T>(
    variable: &str,
    value: &str,
    range: RangeInclusive<T>,
) -> Result<T, SettingError>
where
    T: FromStr + PartialOrd + Display,
{
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            SettingError::new(
                variable,
                value,
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A byte size: `8388608`, `8MiB`, `8M`, `8MB`, `512KiB`, `1GiB`. All units are binary
/// (S3's part limits are stated in MiB).
pub fn parse_size(variable: &str, value: &str) -> Result<u64, SettingError> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| multiplier != 0)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| {
            SettingError::new(variable, value, "expected a size such as 8MiB or 16777216")
        })
}

/// An absolute directory or file path. Relative paths are refused: the addon's working
/// directory is whatever the Woodpecker server's is, which nobody should depend on.
pub fn parse_absolute_path(variable: &str, value: &str) -> Result<PathBuf, SettingError> {
    let path = PathBuf::from(value.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(SettingError::new(
            variable,
            value,
            "must be an absolute path",
        ))
    }
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

    /// Finding 8 of issue 12: a duration too long for the clock (it overflowed `Instant` in
    /// the scheduler) is refused at start, naming the variable, its value and the maximum.
    #[test]
    fn absurd_durations_are_refused_with_the_maximum() {
        let variable = "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT";
        for absurd in ["99999999999999999h", "2562048h", "9223372037s"] {
            let err = parse_duration(variable, absurd).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid {variable}={absurd:?}: too long: at most 2562047h47m16.854775807s \
                     (about 292 years, the longest duration Woodpecker accepts)"
                )
            );
        }
        assert_eq!(
            parse_duration(variable, "2562047h"),
            Ok(Duration::from_secs(2_562_047 * 3600))
        );
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
    }

    #[test]
    fn booleans_as_go_parses_them() {
        assert!(parse_bool("X", "true").unwrap());
        assert!(!parse_bool("X", "0").unwrap());
        assert!(parse_bool("X", "yes").is_err());
    }

    #[test]
    fn sizes() {
        let p = |v| parse_size("X", v);
        assert_eq!(p("8388608").unwrap(), 8 * MIB);
        assert_eq!(p("8M").unwrap(), 8 * MIB);
        assert_eq!(p("8 MB").unwrap(), 8 * MIB);
        assert_eq!(p("1GiB").unwrap(), 1024 * MIB);
        for bad in [
            "",
            "MiB",
            "8 parsecs",
            "-1",
            "1.5MiB",
            "99999999999999999999G",
        ] {
            p(bad).unwrap_err();
        }
    }

    #[test]
    fn numbers_within_their_range() {
        assert_eq!(parse_number("X", " 9 ", 1..=19), Ok(9_i32));
        assert_eq!(parse_number("X", "64", 1..=64), Ok(64_usize));
        for bad in ["0", "20", "-1", "fast", "1.5", "99999999999999999999"] {
            let err = parse_number("X", bad, 1..=19_i32).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid X={bad:?}: expected a whole number from 1 to 19")
            );
        }
    }

    #[test]
    fn paths_must_be_absolute() {
        assert_eq!(
            parse_absolute_path("X", " /data/spool "),
            Ok(PathBuf::from("/data/spool"))
        );
        let err = parse_absolute_path("X", "relative/dir").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid X=\"relative/dir\": must be an absolute path"
        );
    }
}
