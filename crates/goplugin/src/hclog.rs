//! hclog-JSON logging on stderr, the only log channel a go-plugin plugin has (PROTOCOL.md
//! §hclog).
//!
//! The host reads the plugin's stderr line by line and re-logs every JSON object through its
//! own logger. Three rules keep that safe:
//! * `@level`, `@message` and `@timestamp` are always JSON strings: Woodpecker reads them with
//!   unchecked Go type assertions and any other type panics the whole server (PROTOCOL.md §hclog);
//! * `@timestamp` has exactly six fractional digits (hclog's `TimeFormatJSON`), otherwise the
//!   host falls back to treating the line as plain text and loses its level;
//! * a line stays under 64 KiB, because the host reads with a 64 KiB buffer and logs longer
//!   lines as raw chunks at debug level.
//!
//! Write errors are ignored: after the host died stderr is a broken pipe, and logging must
//! never panic or stop the process (PROTOCOL.md §Stdio).

use std::fmt;
use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
pub use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// The longest line written, newline included: one byte under the host's 64 KiB read buffer.
pub const MAX_LINE: usize = 64 * 1024 - 1;

/// An unusable log level setting, naming the variable it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{var}={value:?} is not a log level (use trace, debug, info, warn, error, fatal, panic or disabled)"
)]
pub struct LevelError {
    /// The environment variable that held the value.
    pub var: String,
    /// The value as found.
    pub value: String,
}

/// Parses a Woodpecker log level name (zerolog's names, case-insensitive). `fatal` and `panic`
/// map to error, the most severe level tracing has; `disabled` turns logging off.
pub fn level_from_str(value: &str) -> Option<LevelFilter> {
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" | "fatal" | "panic" => LevelFilter::ERROR,
        "disabled" | "off" => LevelFilter::OFF,
        _ => return None,
    })
}

/// The level from the first of `vars` that is set and non-empty, else `default`. A set but
/// invalid value is an error rather than a silent fallback, so a typo is noticed at start.
pub fn level_from_env(vars: &[&str], default: LevelFilter) -> Result<LevelFilter, LevelError> {
    for var in vars {
        let Some(value) = std::env::var_os(var) else {
            continue;
        };
        let value = value.to_string_lossy().into_owned();
        if value.trim().is_empty() {
            continue;
        }
        return level_from_str(&value).ok_or_else(|| LevelError {
            var: (*var).to_string(),
            value,
        });
    }
    Ok(default)
}

/// Installs the hclog layer on stderr as the global subscriber at `level`, plus the panic
/// hook. Fails only if a global subscriber was already set.
pub fn init(level: LevelFilter) -> Result<(), tracing_subscriber::util::TryInitError> {
    tracing_subscriber::registry()
        .with(HclogLayer::new(std::io::stderr).with_filter(level))
        .try_init()?;
    install_panic_hook();
    Ok(())
}

/// Replaces Rust's panic message (plain text the host would only log at debug, since it does
/// not start with `panic: `) by one hclog line at error level. Panics are always logged, even
/// with logging disabled: they are the one thing an operator must see.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let mut fields = Map::new();
        if let Some(loc) = info.location() {
            fields.insert("location".into(), Value::String(loc.to_string()));
        }
        if let Some(name) = std::thread::current().name() {
            fields.insert("thread".into(), Value::String(name.to_string()));
        }
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            fields.insert("backtrace".into(), Value::String(backtrace.to_string()));
        }
        let line = format_line("error", &format!("panic: {payload}"), None, fields);
        crate::process::write_stderr(line.as_bytes());
    }));
}

/// The current time as hclog's `TimeFormatJSON`, `2006-01-02T15:04:05.000000Z07:00`, in UTC.
pub fn timestamp_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// One hclog JSON line (newline included, at most [`MAX_LINE`] bytes). `fields` become extra
/// top-level keys; the `@` keys always win over a field of the same name.
pub fn format_line(
    level: &str,
    message: &str,
    module: Option<&str>,
    fields: Map<String, Value>,
) -> String {
    let build = |limit: Option<usize>| {
        let mut obj = Map::new();
        for (k, v) in &fields {
            let v = match (v, limit) {
                (Value::String(s), Some(limit)) => Value::String(truncate(s, limit)),
                _ => v.clone(),
            };
            obj.insert(k.clone(), v);
        }
        if let Some(module) = module {
            obj.insert("@module".into(), Value::String(module.to_string()));
        }
        obj.insert("@level".into(), Value::String(level.to_string()));
        let message = match limit {
            Some(limit) => truncate(message, limit),
            None => message.to_string(),
        };
        obj.insert("@message".into(), Value::String(message));
        obj.insert("@timestamp".into(), Value::String(timestamp_now()));
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        line
    };
    let line = build(None);
    if line.len() <= MAX_LINE {
        return line;
    }
    // Too long: cap every string, halving the cap until the line fits. Escaping can grow a
    // byte to six, hence the loop rather than a computed budget.
    let mut limit = MAX_LINE / (fields.len() + 1);
    loop {
        let line = build(Some(limit));
        if line.len() <= MAX_LINE {
            return line;
        }
        if limit < 64 {
            // Many fields: keep only what the host needs.
            let mut obj = Map::new();
            obj.insert("@level".into(), Value::String(level.to_string()));
            obj.insert("@message".into(), Value::String(truncate(message, 1024)));
            obj.insert("@timestamp".into(), Value::String(timestamp_now()));
            let mut line = Value::Object(obj).to_string();
            line.push('\n');
            return line;
        }
        limit /= 2;
    }
}

/// `s` cut to at most `limit` bytes on a character boundary, with a marker saying how much
/// was dropped.
fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated {} bytes]", &s[..end], s.len() - end)
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// A tracing layer writing each event as one hclog JSON line to `make_writer` (stderr in
/// production, a buffer in tests).
pub struct HclogLayer<W> {
    make_writer: W,
}

impl<W> HclogLayer<W> {
    /// A layer writing to whatever `make_writer` makes for each line.
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for HclogLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let line = format_line(
            level_name(meta.level()),
            &visitor.message,
            Some(meta.target()),
            visitor.fields,
        );
        let _ = self
            .make_writer
            .make_writer_for(meta)
            .write_all(line.as_bytes());
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers; keep them readable as strings.
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, v);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// Re-logs one stderr line of a plugin through our own tracing, the way go-plugin's host
/// does (PROTOCOL.md §hclog): an hclog JSON object at its level with its other keys as `fields`,
/// anything else at debug. Used by the host-side client.
pub fn relay(plugin: &str, line: &str) {
    let line = line.trim_end_matches(['\r', '\n']);
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(line) else {
        tracing::debug!(target: "goplugin::plugin", plugin, "{line}");
        return;
    };
    let take = |obj: &mut Map<String, Value>, key: &str| match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let level = take(&mut obj, "@level").unwrap_or_default();
    let message = take(&mut obj, "@message").unwrap_or_default();
    obj.remove("@timestamp");
    let fields = Value::Object(obj).to_string();
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => tracing::trace!(target: "goplugin::plugin", plugin, fields, "{message}"),
        "debug" => tracing::debug!(target: "goplugin::plugin", plugin, fields, "{message}"),
        "info" => tracing::info!(target: "goplugin::plugin", plugin, fields, "{message}"),
        "warn" => tracing::warn!(target: "goplugin::plugin", plugin, fields, "{message}"),
        "error" => tracing::error!(target: "goplugin::plugin", plugin, fields, "{message}"),
        _ => tracing::debug!(target: "goplugin::plugin", plugin, "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that always fails like a broken pipe.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry()
            .with(HclogLayer::new(move || w.clone()).with_filter(LevelFilter::TRACE));
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                assert!(l.len() < MAX_LINE, "line too long: {}", l.len());
                serde_json::from_str(l).unwrap()
            })
            .collect()
    }

    fn assert_hclog(v: &Value) {
        for key in ["@level", "@message", "@timestamp"] {
            assert!(v[key].is_string(), "{key} not a string in {v}");
        }
        let ts = v["@timestamp"].as_str().unwrap();
        // 2026-01-02T03:04:05.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert_eq!(&ts[19..20], ".");
        assert!(ts[20..26].bytes().all(|b| b.is_ascii_digit()), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn events_become_hclog_lines_with_fields() {
        let lines = capture(|| {
            tracing::info!(backend = "s3", count = 3u64, ok = true, "log store ready");
            tracing::warn!(error = %"boom", "retrying");
            tracing::trace!("fine grained");
        });
        assert_eq!(lines.len(), 3);
        lines.iter().for_each(assert_hclog);
        assert_eq!(lines[0]["@level"], "info");
        assert_eq!(lines[0]["@message"], "log store ready");
        assert_eq!(lines[0]["backend"], "s3");
        assert_eq!(lines[0]["count"], 3);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[1]["@level"], "warn");
        assert_eq!(lines[1]["error"], "boom");
        assert_eq!(lines[2]["@level"], "trace");
    }

    #[test]
    fn reserved_keys_stay_strings_even_if_a_field_collides() {
        let lines = capture(|| {
            tracing::error!("@level" = 5, "@timestamp" = false, "collide");
        });
        assert_hclog(&lines[0]);
        assert_eq!(lines[0]["@level"], "error");
    }

    #[test]
    fn long_messages_are_truncated_below_64k() {
        let big = "é".repeat(100_000);
        let ctl = "\u{1}".repeat(70_000);
        let lines = capture(|| {
            tracing::info!(detail = %big, "{}", big);
            tracing::info!(ctl = %ctl, "x");
        });
        assert_eq!(lines.len(), 2);
        lines.iter().for_each(assert_hclog);
        assert!(lines[0]["@message"].as_str().unwrap().contains("truncated"));
        assert!(lines[1]["ctl"].as_str().unwrap().contains("truncated"));
    }

    #[test]
    fn write_errors_are_ignored() {
        let sub = tracing_subscriber::registry().with(HclogLayer::new(|| Broken));
        tracing::subscriber::with_default(sub, || tracing::error!("nobody listens"));
    }

    #[test]
    fn woodpecker_level_names() {
        assert_eq!(level_from_str("TRACE"), Some(LevelFilter::TRACE));
        assert_eq!(level_from_str("fatal"), Some(LevelFilter::ERROR));
        assert_eq!(level_from_str("panic"), Some(LevelFilter::ERROR));
        assert_eq!(level_from_str("disabled"), Some(LevelFilter::OFF));
        assert_eq!(level_from_str("loud"), None);
        let err = level_from_env(&["GOPLUGIN_TEST_LEVEL_UNSET_X"], LevelFilter::INFO);
        assert_eq!(err, Ok(LevelFilter::INFO));
    }
}
