//! Which rows of the table are staging's: those inserted since database staging was first
//! used with this archive prefix, recorded once in a small object beside the step objects.
//!
//! A server that used Woodpecker's database store has years of rows in `log_entries`. They
//! are logs from before the switch: reads serve them (the read merges rows anyway), `migrate`
//! archives them when the admin chooses. Without the marker, the sweep would take all of them
//! for steps a killed addon left behind and archive the whole history at start.
//!
//! The marker holds a time, not a row id: SQLite may hand out ids again after the rows with
//! the largest ids are deleted, and PostgreSQL/MySQL give ids at insert, not at commit.
//! `created` is the server's clock at insert, so a row of staging is never older than the
//! marker (a clock set back by more than the sweep's idle timeout would delay the sweep of
//! rows written meanwhile until they age past it; they are still read and still archived by
//! StepFinished and by the idle timeout of this process).

use std::time::{SystemTime, UNIX_EPOCH};

use archive::{ObjectMeta, ObjectStore, WriteCondition};
use serde::{Deserialize, Serialize};

use super::Inner;

/// The marker's name under the archive prefix (beside the `v1/` tree of step objects and
/// the instance marker).
pub const SINCE_MARKER_NAME: &str = "woodpecker-staging.json";

/// The marker's key for an engine key prefix.
pub fn since_marker_key(key_prefix: &str) -> String {
    match key_prefix.trim_matches('/') {
        "" => SINCE_MARKER_NAME.to_owned(),
        prefix => format!("{prefix}/{SINCE_MARKER_NAME}"),
    }
}

/// What the marker holds.
#[derive(Debug, Serialize, Deserialize)]
struct SinceMarker {
    /// Unix seconds: rows of `log_entries` created from then on are staging's.
    database_staging_since: i64,
}

/// The marker's time, or `None` when database staging was never used with this prefix.
pub async fn read_since_marker(
    store: &dyn ObjectStore,
    key_prefix: &str,
) -> Result<Option<i64>, String> {
    let key = since_marker_key(key_prefix);
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "{what} the database staging marker {key} in {}: {e}",
            store.describe()
        )
    };
    let Some((bytes, _)) = store.get(&key).await.map_err(|e| fail("reading", &e))? else {
        return Ok(None);
    };
    let marker: SinceMarker = serde_json::from_slice(&bytes).map_err(|e| fail("decoding", &e))?;
    Ok(Some(marker.database_staging_since))
}

/// Reads the marker, or writes it with the current time when there is none yet (only if
/// it is still absent, so two addons starting together agree on the first one).
pub(super) async fn load_or_claim(inner: &Inner) -> Result<i64, String> {
    let key = since_marker_key(&inner.settings.key_prefix);
    let store = &inner.store;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "{what} the database staging marker {key} in {}: {e}",
            store.describe()
        )
    };
    for _ in 0..2 {
        if let Some(since) = read_since_marker(&**store, &inner.settings.key_prefix).await? {
            return Ok(since);
        }
        // Whole seconds down: rows created within this second count as staging's.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut body = serde_json::to_vec_pretty(&SinceMarker {
            database_staging_since: now,
        })
        .map_err(|e| fail("encoding", &e))?;
        body.push(b'\n');
        std::fs::create_dir_all(&inner.scratch).map_err(|e| fail("writing", &e))?;
        let file =
            tempfile::NamedTempFile::new_in(&inner.scratch).map_err(|e| fail("writing", &e))?;
        std::fs::write(file.path(), &body).map_err(|e| fail("writing", &e))?;
        let meta = ObjectMeta {
            content_type: "application/json".to_owned(),
            ..ObjectMeta::default()
        };
        match store
            .put_file_if(&key, file.path(), &meta, Some(&WriteCondition::Absent))
            .await
        {
            Ok(_) => {
                tracing::info!(marker = %key, since = now,
                    "database staging starts: rows of log_entries from now on are staged lines; older rows are logs from before the switch (read through; `migrate` archives them)");
                return Ok(now);
            }
            // Another addon wrote it meanwhile: read theirs.
            Err(e) if e.is_precondition_failed() => continue,
            Err(e) => return Err(fail("writing", &e)),
        }
    }
    Err(format!(
        "the database staging marker {key} in {} was written and then vanished",
        store.describe()
    ))
}
