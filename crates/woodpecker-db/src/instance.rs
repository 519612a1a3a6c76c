//! One bucket prefix, one Woodpecker: which instance a database belongs to, and the marker
//! object under the archive prefix that records it.
//!
//! Step ids restart at 1 in a fresh database, so a second Woodpecker pointed at a prefix
//! another one fills would read (and, first write winning, keep) the other's logs. The
//! instance is identified by the public half of the ed25519 key Woodpecker generates on its
//! first start and keeps in `server_configs` (`signature-private-key`; it signs the
//! server's webhook requests to extensions). It is random per installation, survives
//! restarts, upgrades and database dumps, and is already public (the server publishes it at
//! `/api/signature/public-key`), so the marker reveals nothing. Table rows such as the
//! first user or repository are neither unique across installations nor stable (they can
//! be deleted); the JWT secret is a secret.

use std::path::Path;

use archive::{ObjectMeta, ObjectStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::error::DbError;

/// The `server_configs` key of Woodpecker's signing key (hex of the 64-byte ed25519
/// private key, whose second half is the public key).
pub const SIGNATURE_KEY: &str = "signature-private-key";

/// The marker's name under the archive prefix (beside the `v1/` tree of step objects).
pub const MARKER_NAME: &str = "woodpecker-instance.json";

/// The marker's key for an engine key prefix (empty when the store applies the folder).
pub fn marker_key(key_prefix: &str) -> String {
    match key_prefix.trim_matches('/') {
        "" => MARKER_NAME.to_owned(),
        prefix => format!("{prefix}/{MARKER_NAME}"),
    }
}

/// A Woodpecker installation: the hex of its webhook-signing ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the marker object holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The instance the prefix belongs to.
    pub woodpecker_instance: InstanceId,
    /// How the id was derived, for a person reading the object.
    pub derived_from: String,
    /// The driver of the database it was read from.
    pub database_driver: String,
}

/// Why the prefix cannot be used, or the check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// The database could not be read.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Woodpecker's signing key in `server_configs` is not what Woodpecker writes.
    #[error("server_configs.{SIGNATURE_KEY} is not a hex ed25519 key ({len} characters)")]
    BadKey {
        /// The length of the value found.
        len: usize,
    },
    /// The archive could not be read or written.
    #[error("the instance marker {key}: {source}")]
    Store {
        /// The marker's key.
        key: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The marker could not be staged for upload.
    #[error("the instance marker {key}: {source}")]
    Io {
        /// The marker's key.
        key: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The prefix belongs to another Woodpecker.
    #[error(
        "the archive {store} belongs to another Woodpecker instance (marker {key}: {found}; this \
         server's database: {ours}). Step ids restart at 1 in every Woodpecker, so sharing a \
         prefix would show one instance's logs in the other. Fix: give this server its own \
         WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER (or archive directory); or, if this database is \
         the same installation restored or moved, set {adopt}=true once to take the prefix over"
    )]
    OtherInstance {
        /// The store, as it describes itself.
        store: String,
        /// The marker's key.
        key: String,
        /// The instance the marker names (or what was wrong with it).
        found: String,
        /// This database's instance.
        ours: InstanceId,
        /// The setting that takes the prefix over.
        adopt: &'static str,
    },
}

impl Database {
    /// The instance this database belongs to; `None` before the server's first start
    /// created its signing key.
    pub async fn instance_id(&self) -> Result<Option<InstanceId>, MarkerError> {
        let Some(value) = self.server_config(SIGNATURE_KEY).await? else {
            return Ok(None);
        };
        instance_from_key(&value).map(Some)
    }
}

/// The public half of a hex ed25519 private key (seed ‖ public key, as Go stores it).
fn instance_from_key(value: &str) -> Result<InstanceId, MarkerError> {
    let value = value.trim();
    let bytes = hex::decode(value).map_err(|_| MarkerError::BadKey { len: value.len() })?;
    if bytes.len() != 64 {
        return Err(MarkerError::BadKey { len: value.len() });
    }
    Ok(InstanceId(hex::encode(&bytes[32..])))
}

/// What [`claim_prefix`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No marker was there; this instance's is written now.
    Written,
    /// The marker names this instance.
    Ours,
    /// The marker named another instance (or was unreadable) and was replaced, as asked.
    Adopted {
        /// What it said before.
        previous: String,
    },
}

/// Makes sure the prefix of `store` belongs to `ours`: writes the marker when there is
/// none, refuses with [`MarkerError::OtherInstance`] when it names another instance unless
/// `adopt` (then it is replaced). `scratch` is a directory for staging the small upload;
/// `adopt_setting` is the variable named in the error.
pub async fn claim_prefix(
    store: &dyn ObjectStore,
    key_prefix: &str,
    ours: &InstanceId,
    driver: &str,
    adopt: bool,
    adopt_setting: &'static str,
    scratch: &Path,
) -> Result<Claim, MarkerError> {
    let key = marker_key(key_prefix);
    let store_error = |source| MarkerError::Store {
        key: key.clone(),
        source,
    };
    let previous = match store.get(&key).await.map_err(store_error)? {
        None => None,
        Some((bytes, _)) => match serde_json::from_slice::<Marker>(&bytes) {
            Ok(marker) if &marker.woodpecker_instance == ours => return Ok(Claim::Ours),
            Ok(marker) => Some(marker.woodpecker_instance.0),
            Err(e) => Some(format!("unreadable marker: {e}")),
        },
    };
    if let Some(found) = &previous
        && !adopt
    {
        return Err(MarkerError::OtherInstance {
            store: store.describe(),
            key,
            found: found.clone(),
            ours: ours.clone(),
            adopt: adopt_setting,
        });
    }
    let marker = Marker {
        woodpecker_instance: ours.clone(),
        derived_from: format!(
            "ed25519 public key of server_configs.{SIGNATURE_KEY} (the server's /api/signature/public-key)"
        ),
        database_driver: driver.to_owned(),
    };
    let io_error = |source| MarkerError::Io {
        key: key.clone(),
        source,
    };
    let mut body = serde_json::to_vec_pretty(&marker).expect("a marker serializes");
    body.push(b'\n');
    let file = tempfile::NamedTempFile::new_in(scratch).map_err(io_error)?;
    std::fs::write(file.path(), &body).map_err(io_error)?;
    let meta = ObjectMeta {
        content_type: "application/json".to_owned(),
        ..ObjectMeta::default()
    };
    store
        .put_file(&key, file.path(), &meta)
        .await
        .map_err(store_error)?;
    Ok(match previous {
        None => Claim::Written,
        Some(previous) => Claim::Adopted { previous },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_half_identifies_the_instance() {
        let key = format!("{}{}", "11".repeat(32), "ab".repeat(32));
        assert_eq!(instance_from_key(&key).unwrap().0, "ab".repeat(32));
        assert!(matches!(
            instance_from_key("abcd"),
            Err(MarkerError::BadKey { len: 4 })
        ));
        assert!(instance_from_key(&"zz".repeat(64)).is_err());
    }

    #[test]
    fn marker_keys_sit_beside_the_step_objects() {
        assert_eq!(marker_key(""), "woodpecker-instance.json");
        assert_eq!(marker_key("/logs/"), "logs/woodpecker-instance.json");
    }
}
