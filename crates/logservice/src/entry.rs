//! The JSON types Woodpecker exchanges with a log addon.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Woodpecker's `model.LogEntryType`: 0 stdout, 1 stderr, 2 exit code, 3 metadata,
/// 4 progress. Kept as a plain integer so that types added upstream pass through untouched.
pub type EntryType = i64;

/// One log line, field for field as Woodpecker's `model.LogEntry` marshals it.
///
/// `data` is Go's `[]byte`: base64 in JSON, and `null` for a nil slice. `None` and
/// `Some(vec![])` are kept apart so that what the agent sent is what a read returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The database id Woodpecker's own store would give it; an addon keeps what it gets.
    #[serde(default)]
    pub id: i64,
    /// The step the line belongs to.
    #[serde(default)]
    pub step_id: i64,
    /// The time the agent stamped on the line, kept as sent.
    #[serde(default)]
    pub time: i64,
    /// The line number within the step: what reads sort and deduplicate by.
    #[serde(default)]
    pub line: i64,
    /// The line's bytes; `None` for Go's nil slice.
    #[serde(default, with = "go_bytes")]
    pub data: Option<Vec<u8>>,
    /// What kind of line it is (`type` in JSON).
    #[serde(default, rename = "type")]
    pub entry_type: EntryType,
}

/// The part of Woodpecker's `model.Step` a log store needs. Unknown fields are ignored, so
/// newer Woodpecker versions that add fields keep working.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The step's database id: the key logs are stored under (see [`crate::StepId`]).
    pub id: i64,
    /// The step's UUID.
    #[serde(default)]
    pub uuid: String,
    /// The pipeline it belongs to.
    #[serde(default)]
    pub pipeline_id: i64,
    /// Its process number within the pipeline.
    #[serde(default)]
    pub pid: i64,
    /// The `pid` of its parent, the workflow.
    #[serde(default)]
    pub ppid: i64,
    /// Its name in the pipeline config.
    #[serde(default)]
    pub name: String,
    /// `pending`, `running`, `success`, `failure`, … as Woodpecker names them.
    #[serde(default)]
    pub state: String,
    /// Why it failed, if it did (omitted when empty, as Go's `omitempty`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The exit code of its command.
    #[serde(default)]
    pub exit_code: i64,
    /// Unix time it started; omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started: i64,
    /// Unix time it finished; omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub finished: i64,
    /// `clone`, `service`, `plugin`, `commands` or `cache` (`type` in JSON); omitted when
    /// empty.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub step_type: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Go's `encoding/json` rules for `[]byte`: standard base64 with padding, `null` for nil.
mod go_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    pub(super) fn serialize<S: Serializer>(
        data: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match data {
            None => s.serialize_none(),
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(Base64OrNull)
    }

    /// Decodes straight from the JSON text serde hands over (borrowed from the input, as
    /// base64 has no escapes): this runs once per log line on the append path, so the
    /// string is never copied before decoding.
    struct Base64OrNull;

    impl<'de> serde::de::Visitor<'de> for Base64OrNull {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 data or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            let decoded = if text.contains(['\r', '\n']) {
                // Go's decoder skips \r and \n inside base64 strings; do the same.
                let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
                STANDARD.decode(cleaned.as_bytes())
            } else {
                STANDARD.decode(text.as_bytes())
            };
            decoded
                .map(Some)
                .map_err(|e| E::custom(format!("log entry data is not base64: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keeps_null_apart_from_empty() {
        let null: LogEntry = serde_json::from_str(r#"{"line":1,"data":null}"#).unwrap();
        let empty: LogEntry = serde_json::from_str(r#"{"line":1,"data":""}"#).unwrap();
        assert_eq!(null.data, None);
        assert_eq!(empty.data, Some(vec![]));
        assert!(
            serde_json::to_string(&null)
                .unwrap()
                .contains(r#""data":null"#)
        );
        assert!(
            serde_json::to_string(&empty)
                .unwrap()
                .contains(r#""data":"""#)
        );
    }

    #[test]
    fn binary_data_round_trips_as_base64() {
        let entry = LogEntry {
            step_id: 7,
            line: 3,
            data: Some(vec![0xff, 0x00, 0xfe, b'\n']),
            entry_type: 1,
            ..LogEntry::default()
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains(r#""data":"/wD+Cg==""#), "{json}");
        assert_eq!(serde_json::from_str::<LogEntry>(&json).unwrap(), entry);
    }

    #[test]
    fn step_ignores_unknown_fields() {
        let step: Step =
            serde_json::from_str(r#"{"id":42,"name":"build","environ":{"A":"b"},"children":[]}"#)
                .unwrap();
        assert_eq!(step.id, 42);
        assert_eq!(step.name, "build");
    }

    #[test]
    fn line_breaks_inside_base64_are_skipped_like_go() {
        let entry: LogEntry = serde_json::from_str(r#"{"data":"aGVs\r\nbG8="}"#).unwrap();
        assert_eq!(entry.data.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn bad_base64_is_an_error() {
        let err = serde_json::from_str::<LogEntry>(r#"{"data":"%%%"}"#).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }
}
