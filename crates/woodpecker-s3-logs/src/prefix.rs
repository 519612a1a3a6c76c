//! One prefix, one Woodpecker, for the tools too: `migrate` and `gc` judge objects by step
//! id, and step ids restart at 1 in every Woodpecker, so run against another instance's
//! prefix they would write into its logs or delete them all as "deleted steps". They refuse
//! as the addon does (same marker, same adopt setting).

use archive::ObjectStore;
use woodpecker_db::Database;
use woodpecker_db::instance::{Marker, MarkerError, marker_key};

use crate::config::Config;
use crate::legacy::check_and_claim;
use crate::variables::ADOPT_PREFIX;

/// Checks that the archive prefix is this database's Woodpecker's. With `claim`, marks an
/// unmarked prefix as the addon's start does; without (dry runs), only reads.
pub(crate) async fn ensure_ours(
    db: &Database,
    store: &dyn ObjectStore,
    config: &Config,
    claim: bool,
) -> Result<(), String> {
    if claim {
        return check_and_claim(db, store, config, &config.engine.spool_dir)
            .await
            .map_err(|e| e.to_string());
    }
    let Some(ours) = db.instance_id().await.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let key = marker_key(&config.engine.key_prefix);
    let found = match store.get(&key).await {
        Ok(None) => return Ok(()),
        Ok(Some((bytes, _))) => match serde_json::from_slice::<Marker>(&bytes) {
            Ok(marker) if marker.woodpecker_instance == ours => return Ok(()),
            Ok(marker) => marker.woodpecker_instance.0,
            Err(e) => format!("unreadable marker: {e}"),
        },
        Err(e) => return Err(format!("reading the instance marker {key}: {e}")),
    };
    if config.adopt_prefix {
        return Ok(());
    }
    Err(MarkerError::OtherInstance {
        store: store.describe(),
        key,
        found,
        ours,
        adopt: ADOPT_PREFIX.name,
    }
    .to_string())
}
