//! Logs from before the switch (Woodpecker's database or file store) and the instance
//! marker: opened from the configuration, attached to the engine, checked at start.
//!
//! Nothing here stops the addon for an unreachable database: read-through reports the
//! outage per read, a warning is logged once, and the check is retried in the background.
//! Only a prefix that provably belongs to another Woodpecker stops the start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use archive::ObjectStore;
use engine::legacy::{LegacyLogs, LegacySources};
use woodpecker_db::instance::{Claim, MarkerError, claim_prefix};
use woodpecker_db::{Database, FileStoreLogs};

use crate::config::Config;
use crate::variables::ADOPT_PREFIX;

/// How long the start waits for the database and the archive to answer the marker check
/// before going on without it (and retrying in the background).
const START_CHECK: Duration = Duration::from_secs(5);
/// Background retries of the database check: from this…
const RETRY_FIRST: Duration = Duration::from_secs(10);
/// …doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The legacy sources the configuration names (none: nothing changes).
pub(crate) struct Legacy {
    /// Woodpecker's database, connecting lazily.
    pub(crate) database: Option<Database>,
    /// Woodpecker's file store directory.
    pub(crate) files: Option<FileStoreLogs>,
}

impl Legacy {
    /// Opens what `config` names; touches nothing (the pool connects on first use).
    pub(crate) fn open(config: &Config) -> Self {
        Self {
            database: config.database.clone().map(Database::connect_lazy),
            files: config.legacy_file_dir.clone().map(FileStoreLogs::new),
        }
    }

    /// The sources for the engine: the database first, then the file store.
    pub(crate) fn sources(&self) -> LegacySources {
        let mut sources: Vec<Arc<dyn LegacyLogs>> = Vec::new();
        if let Some(db) = &self.database {
            sources.push(Arc::new(db.clone()));
        }
        if let Some(files) = &self.files {
            sources.push(Arc::new(files.clone()));
        }
        LegacySources::new(sources)
    }
}

/// What the start-up check concluded.
pub(crate) enum StartCheck {
    /// Done (or nothing to do).
    Done,
    /// The database or the archive did not answer: retry in the background.
    Retry {
        /// What this means for the admin.
        consequence: &'static str,
        /// The error.
        reason: String,
    },
}

/// The warning when the database cannot be read at start.
const DATABASE_DOWN: &str = "Woodpecker's database is unavailable: reading logs from before \
     the switch fails until it answers (retrying in the background); new logs are stored and \
     archived as usual";
/// The warning when only the marker could not be checked.
const MARKER_UNCHECKED: &str = "the archive prefix's instance marker cannot be checked yet \
     (retrying in the background); logs are stored and read as usual";

/// Checks the database and claims the archive prefix for its Woodpecker instance. Errs
/// only when the prefix belongs to another instance.
pub(crate) async fn check_at_start(
    db: &Database,
    store: &dyn ObjectStore,
    config: &Config,
    scratch: &Path,
) -> Result<StartCheck, MarkerError> {
    let retry = |consequence, reason| {
        Ok(StartCheck::Retry {
            consequence,
            reason,
        })
    };
    match tokio::time::timeout(START_CHECK, check_and_claim(db, store, config, scratch)).await {
        Ok(Ok(())) => Ok(StartCheck::Done),
        Ok(Err(e @ MarkerError::OtherInstance { .. })) => Err(e),
        Ok(Err(e @ MarkerError::Database(_))) => retry(DATABASE_DOWN, e.to_string()),
        Ok(Err(e)) => retry(MARKER_UNCHECKED, e.to_string()),
        Err(_) => retry(
            DATABASE_DOWN,
            format!(
                "{} or the archive ({}) did not answer within {START_CHECK:?}",
                db.describe(),
                store.describe()
            ),
        ),
    }
}

/// Retries [`check_and_claim`] with backoff until it succeeds. A prefix found to belong
/// to another instance now can no longer stop the addon (it serves already): that is
/// logged as an error on every attempt, with the fix.
pub(crate) async fn retry_in_background(
    db: Database,
    store: Arc<dyn ObjectStore>,
    config: Config,
    scratch: PathBuf,
) {
    let mut wait = RETRY_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        match check_and_claim(&db, &*store, &config, &scratch).await {
            Ok(()) => {
                tracing::info!(database = %db.describe(), "Woodpecker's database is reachable: read-through of logs from before the switch works");
                return;
            }
            Err(e @ MarkerError::OtherInstance { .. }) => tracing::error!(
                error = %e,
                "the archive prefix belongs to another Woodpecker instance; logs of both may mix"
            ),
            Err(e) => tracing::debug!(error = %e, "Woodpecker's database still unavailable"),
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Checks the database and claims the prefix; `scratch` is where the marker is written
/// before its upload.
pub(crate) async fn check_and_claim(
    db: &Database,
    store: &dyn ObjectStore,
    config: &Config,
    scratch: &Path,
) -> Result<(), MarkerError> {
    db.check().await?;
    let Some(instance) = db.instance_id().await? else {
        tracing::warn!(
            "Woodpecker's database has no signing key yet (server_configs.{}): the archive \
             prefix is not marked for this instance until the server has started once",
            woodpecker_db::instance::SIGNATURE_KEY
        );
        return Ok(());
    };
    let claim = claim_prefix(
        store,
        &config.engine.key_prefix,
        &instance,
        db.driver().name(),
        config.adopt_prefix,
        ADOPT_PREFIX.name,
        scratch,
    )
    .await?;
    match claim {
        Claim::Written => {
            tracing::info!(%instance, archive = %store.describe(), "archive prefix marked as this Woodpecker's")
        }
        Claim::Ours => tracing::debug!(%instance, "archive prefix belongs to this Woodpecker"),
        Claim::Adopted { previous } => tracing::warn!(
            %instance, %previous, archive = %store.describe(),
            "took over an archive prefix marked for another Woodpecker instance ({} is set)",
            ADOPT_PREFIX.name
        ),
    }
    Ok(())
}
