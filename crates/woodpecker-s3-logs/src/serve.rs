//! The addon mode: what runs when the Woodpecker server launches the binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;
use goplugin::{Handler, Limits, ServeConfig, hclog};
use logservice::LogService;
use logservice::addon::{HANDSHAKE, LogHandler, PLUGIN_NAME};
use settings::ProcessEnv;
use tracing::level_filters::LevelFilter;

use crate::config::{Config, Store};
use crate::legacy::{Legacy, StartCheck};
use crate::variables::{LOG_LEVEL_VARS, Staging};

/// The largest gob message accepted from the host. Woodpecker's agents send batches of at most
/// 1 MiB of lines (about 1.4 MiB as JSON); the limit bounds what hostile bytes can make the
/// decoder allocate.
const MAX_MESSAGE: usize = 64 << 20;

/// The spool's subdirectory for the plugin socket when no temporary or XDG directory is
/// writable, as in Woodpecker's official image (no `/tmp`; only the volume is writable).
pub(crate) const SOCKET_FALLBACK_SUBDIR: &str = "sockets";

/// Serves Woodpecker until the server goes away; never returns.
///
/// Order matters: the cookie check comes before anything touches the disk or stderr, logging
/// is hclog JSON from the first line on, and configuration errors end the start with one
/// line naming the variable, which Woodpecker shows in its log.
pub(crate) fn run() -> ! {
    if !HANDSHAKE.cookie_present() {
        goplugin::process::write_stderr(
            format!("{}\n", goplugin::handshake::COOKIE_MISMATCH_MESSAGE).as_bytes(),
        );
        std::process::exit(1);
    }
    let level = hclog::level_from_env(&LOG_LEVEL_VARS, LevelFilter::INFO);
    let _ = hclog::init(level.as_ref().copied().unwrap_or(LevelFilter::INFO));
    if let Err(e) = level {
        fail(&e.to_string());
    }
    let config = Config::from_source(&ProcessEnv).unwrap_or_else(|e| fail(&e.to_string()));
    match crate::limits::raise_open_files() {
        Ok(Some(before)) => {
            tracing::debug!(soft = ?before.current, hard = ?before.maximum,
                "raised the soft limit of open files to the hard limit");
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error,
            "cannot raise the soft limit of open files; a busy server may run out of them"),
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the async runtime: {e}")));
    runtime.block_on(async move {
        let store = config.open_store().await.unwrap_or_else(|e| fail(&e));
        match config.staging {
            Staging::Spool => serve_spool(config, store).await,
            Staging::Database => crate::staging::serve_database(config, store).await,
        }
    })
}

/// Serves with the spool staging (the default).
async fn serve_spool(config: Config, store: Store) -> ! {
    let engine = Engine::start(config.engine.clone(), store.object_store())
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    attach_legacy(&engine, &store, &config).await;
    spawn_store_check(&store, &engine.background().clone());
    let engine = Arc::new(engine);
    // The spool opens in the background, after the handshake, however large it is (go-plugin
    // kills a plugin that has not handshaken within a minute); a spool that cannot be
    // opened (another addon holds it) ends the addon as a bad setting does.
    tokio::spawn({
        let engine = engine.clone();
        async move {
            match engine.ready().await {
                Ok(()) => {}
                Err(e) if matches!(*e, engine::StartError::Stopped) => {}
                Err(e) => fail(&e.to_string()),
            }
        }
    });
    crate::staging::drain_database_staging(&engine, &store, &config);
    if let Some(addr) = config.metrics_addr {
        crate::metrics::start(engine.clone(), addr)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    let socket_fallback_dir = engine.spool_dir().join(SOCKET_FALLBACK_SUBDIR);
    let (code, sigterm) = serve_host(engine.clone(), socket_fallback_dir).await;
    if sigterm {
        // Serving has stopped (the connection is closed, later calls fail). Make the
        // spool durable, let archive uploads under way finish within the grace period,
        // abandon the rest (their lines stay in the spool; archived after the next start).
        let grace = engine.settings().shutdown_grace;
        if let Err(error) = engine.shutdown_within(grace).await {
            tracing::error!(%error, "flushing the spool before exit failed");
        }
        store.abort_unfinished_uploads().await;
        tracing::info!("stopped after SIGTERM");
        std::process::exit(0)
    }
    // The spool is already in the OS; make it durable before leaving. Archiving that
    // was under way resumes at the next start.
    if let Err(error) = engine.flush().await {
        tracing::error!(%error, "flushing the spool before exit failed");
    }
    store.abort_unfinished_uploads().await;
    std::process::exit(code)
}

/// Checks in the background that the archive answers, and says so when it does not.
pub(crate) fn spawn_store_check(store: &Store, runtime: &tokio::runtime::Handle) {
    let store = store.clone();
    runtime.spawn(async move {
        match store.check().await {
            Ok(()) => tracing::debug!("archive backend reachable"),
            Err(error) => tracing::warn!(
                archive = %store.object_store().describe(),
                %error,
                "archive backend not usable yet: staged lines wait and archiving retries"
            ),
        }
    });
}

/// Serves `service` to the host until it goes away or SIGTERM comes; returns go-plugin's
/// exit code and whether it was SIGTERM.
pub(crate) async fn serve_host<S: LogService>(
    service: Arc<S>,
    socket_fallback_dir: PathBuf,
) -> (i32, bool) {
    // goplugin's serve ends on SIGTERM too; this second listener tells us it was that.
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let code = goplugin::serve(ServeConfig {
        handshake: HANDSHAKE,
        plugins: vec![(
            PLUGIN_NAME.to_string(),
            Arc::new(LogHandler::new(service)) as Arc<dyn Handler>,
        )],
        limits: Limits {
            max_message_len: MAX_MESSAGE,
            ..Limits::default()
        },
        socket_fallback_dir: Some(socket_fallback_dir),
    })
    .await;
    let by_sigterm = match sigterm.as_mut() {
        Some(signal) => tokio::time::timeout(Duration::ZERO, signal.recv())
            .await
            .is_ok(),
        None => false,
    };
    (code, by_sigterm)
}

/// Read-through and `LogDelete` of the logs from before the switch, and the instance
/// marker. With no database and no file directory configured, nothing happens.
async fn attach_legacy(engine: &Engine, store: &Store, config: &Config) {
    let legacy = Legacy::open(config);
    let sources = legacy.sources();
    if sources.is_empty() {
        return;
    }
    tracing::info!(legacy = %sources.describe(), "logs from before the switch are read through");
    engine.set_legacy(sources);
    if let Some(db) = legacy.database {
        claim_prefix_at_start(db, store, config, engine.spool_dir().to_owned()).await;
    }
}

/// The instance marker check at start; retried in the background when the database or the
/// archive does not answer; a prefix of another instance stops the start.
pub(crate) async fn claim_prefix_at_start(
    db: woodpecker_db::Database,
    store: &Store,
    config: &Config,
    scratch: PathBuf,
) {
    match crate::legacy::check_at_start(&db, &*store.object_store(), config, &scratch).await {
        Ok(StartCheck::Done) => {}
        Ok(StartCheck::Retry {
            consequence,
            reason,
        }) => {
            tracing::warn!(error = %reason, "{consequence}");
            tokio::spawn(crate::legacy::retry_in_background(
                db,
                store.object_store(),
                config.clone(),
                scratch,
            ));
        }
        Err(e) => fail(&e.to_string()),
    }
}

pub(crate) fn fail(message: &str) -> ! {
    tracing::error!("woodpecker-s3-logs cannot start: {message}");
    std::process::exit(1);
}
