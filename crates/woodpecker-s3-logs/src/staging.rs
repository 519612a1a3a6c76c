//! Database staging in the addon (`WOODPECKER_LOG_STORE_S3_STAGING=database`): serving with
//! the [`TableEngine`] over Woodpecker's `log_entries`, and moving lines between the spool
//! and the table when the mode changes (see `engine::table::switch`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::legacy::LegacySources;
use engine::table::{TableEngine, TableStaging, drain_table, read_since_marker, spool_holds_lines};
use engine::{Clock, Engine};
use logservice::{LogService, Step};
use woodpecker_db::staging::LogEntriesStaging;
use woodpecker_db::{Database, FileStoreLogs};

use crate::config::{Backend, Config, Store};
use crate::serve::{claim_prefix_at_start, fail, serve_host, spawn_store_check};
use crate::variables::STAGING;

/// Retries of a move between the spool and the table: from this…
const MOVE_RETRY_FIRST: Duration = Duration::from_secs(10);
/// …doubling up to this.
const MOVE_RETRY_MAX: Duration = Duration::from_secs(300);

/// Serves with database staging; never returns.
pub(crate) async fn serve_database(config: Config, store: Store) -> ! {
    let Some(source) = config.database.clone() else {
        fail(&format!(
            "{}=database needs Woodpecker's database (WOODPECKER_DATABASE_DRIVER, WOODPECKER_DATABASE_DATASOURCE)",
            STAGING.name
        ));
    };
    if let Backend::LocalDir(dir) = &config.backend {
        tracing::warn!(archive = %dir.display(),
            "database staging with a local archive directory: the archives still need a persistent volume; set WOODPECKER_LOG_STORE_S3_BUCKET to keep logs in a bucket");
    }
    if config.metrics_addr.is_some() {
        tracing::warn!(
            "WOODPECKER_LOG_STORE_S3_METRICS_ADDR is not served with database staging yet; no metrics listener is opened"
        );
    }
    let scratch = scratch_dir().unwrap_or_else(|e| fail(&e));
    let db = Database::connect_lazy(source);
    let table = Arc::new(LogEntriesStaging::new(db.clone()));
    let engine = Arc::new(TableEngine::start(
        config.engine.clone(),
        store.object_store(),
        table.clone(),
        scratch.path().to_owned(),
        Clock::Real,
    ));
    tracing::info!(staging = %table.describe(), archive = %store.object_store().describe(),
        "running steps' lines are staged in Woodpecker's database");
    if let Some(dir) = &config.legacy_file_dir {
        let files: Arc<dyn engine::legacy::LegacyLogs> = Arc::new(FileStoreLogs::new(dir.clone()));
        let sources = LegacySources::new(vec![files]);
        tracing::info!(legacy = %sources.describe(), "logs from before the switch are read through");
        engine.set_legacy(sources);
    }
    claim_prefix_at_start(db, &store, &config, scratch.path().to_owned()).await;
    spawn_store_check(&store, &tokio::runtime::Handle::current());
    if spool_holds_lines(&config.engine.spool_dir) {
        // Reads merge the spool's lines until they are in the table.
        engine.read_spool_too(Some(config.engine.spool_dir.clone()));
        tokio::spawn(import_spool_until_done(
            config.engine.spool_dir.clone(),
            engine.clone(),
        ));
    }

    let socket_fallback_dir = scratch.path().to_owned();
    let (code, sigterm) = serve_host(engine.clone(), socket_fallback_dir).await;
    // Nothing to flush: every acknowledged line is committed. Runs under way get the
    // grace period after SIGTERM; their rows stay in the database otherwise.
    let grace = if sigterm {
        engine.settings().shutdown_grace
    } else {
        Duration::ZERO
    };
    engine.shutdown_within(grace).await;
    store.abort_unfinished_uploads().await;
    drop(scratch);
    if sigterm {
        tracing::info!("stopped after SIGTERM");
        std::process::exit(0)
    }
    std::process::exit(code)
}

/// A private directory for archive builds (and the plugin socket where no other directory
/// is writable): the temporary directory, else `XDG_CACHE_HOME`, else Woodpecker's data
/// directory (the official image has no `/tmp`). Its files live for one upload each; the
/// directory is removed at exit.
pub(crate) fn scratch_dir() -> Result<tempfile::TempDir, String> {
    let mut candidates = vec![std::env::temp_dir()];
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(cache));
    }
    candidates.push(PathBuf::from(engine::WOODPECKER_DATA));
    let mut refused = Vec::new();
    for base in &candidates {
        match tempfile::Builder::new()
            .prefix("woodpecker-s3-logs-")
            .tempdir_in(base)
        {
            Ok(dir) => return Ok(dir),
            Err(e) => refused.push(format!("{}: {e}", base.display())),
        }
    }
    Err(format!(
        "database staging needs a writable directory for archive builds; tried {}",
        refused.join("; ")
    ))
}

/// Moves the lines a spool left (the addon ran with spool staging before) into the table,
/// retrying until it succeeds; steps whose StepFinished had come are archived after the
/// finalize delay.
async fn import_spool_until_done(spool_dir: PathBuf, engine: Arc<TableEngine>) {
    let mut wait = MOVE_RETRY_FIRST;
    loop {
        match engine.import_spool(&spool_dir).await {
            Ok(moved) => {
                if !moved.steps.is_empty() {
                    tracing::info!(steps = moved.steps.len(), entries = moved.entries,
                        spool = %spool_dir.display(),
                        "moved the lines the spool held into the database (staging switched from spool to database)");
                }
                engine.read_spool_too(None);
                for (id, finished) in moved.steps {
                    if finished {
                        let step = Step {
                            id: id.get(),
                            ..Step::default()
                        };
                        engine.step_finished(&step).await;
                    }
                }
                return;
            }
            Err(error) => tracing::warn!(%error, spool = %spool_dir.display(),
                "cannot move the spool's lines into the database yet; retrying (they stay in the spool meanwhile)"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MOVE_RETRY_MAX);
    }
}

/// With spool staging and a database configured: moves the rows a run with database
/// staging left in `log_entries` into the spool, in the background, retrying until done.
/// Nothing happens when database staging was never used with this archive prefix.
pub(crate) fn drain_database_staging(engine: &Arc<Engine>, store: &Store, config: &Config) {
    let Some(source) = config.database.clone() else {
        return;
    };
    let (engine, store) = (engine.clone(), store.object_store());
    let key_prefix = config.engine.key_prefix.clone();
    let table = Arc::new(LogEntriesStaging::new(Database::connect_lazy(source)));
    // Until the marker says whether database staging left rows, reads merge them: a step
    // switched with lines in flight reads complete from the first call on.
    engine.read_table_too(Some(table.clone()));
    tokio::spawn(async move {
        let mut wait = MOVE_RETRY_FIRST;
        loop {
            if engine.ready().await.is_err() {
                return;
            }
            let drained = match read_since_marker(&*store, &key_prefix).await {
                Ok(None) => {
                    engine.read_table_too(None);
                    return;
                }
                Ok(Some(since)) => drain_table(&*table, since, &engine).await,
                Err(e) => Err(e),
            };
            match drained {
                Ok(moved) => {
                    engine.read_table_too(None);
                    if !moved.steps.is_empty() {
                        tracing::info!(
                            steps = moved.steps.len(),
                            entries = moved.entries,
                            "moved the lines staged in the database into the spool (staging switched from database to spool)"
                        );
                    }
                    return;
                }
                Err(error) => tracing::warn!(%error,
                    "cannot move the lines staged in the database into the spool yet; retrying (they stay in the database meanwhile)"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MOVE_RETRY_MAX);
        }
    });
}
