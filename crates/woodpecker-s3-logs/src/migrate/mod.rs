//! `migrate`: every log Woodpecker wrote before the switch (its `log_entries` table and/or
//! its file store directory) into archive objects of the current format.
//!
//! One step at a time per job (`--jobs` at once), in step id order; each step's memory is
//! bounded by the engine's sort budget, whatever the size of the database. Resumable: a
//! step whose object already holds its legacy lines is skipped, and an upload replaces an
//! object atomically, so a run killed at any point and started again neither loses nor
//! duplicates a line. Steps Woodpecker may still write to are left alone and reported.
//!
//! `mod.rs` runs the whole; `step.rs` one step; `source.rs` reads the legacy stores;
//! `writer.rs` builds, uploads and verifies an object; `summary.rs` counts and reports.

mod source;
mod step;
mod summary;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engine::legacy::LegacyError;
use futures::TryStreamExt;
use settings::ProcessEnv;
use woodpecker_db::{Database, FileStoreLogs};

use crate::config::Config;
use crate::progress::{Counters, Progress};
use source::Source;
use summary::Summary;
use writer::Writer;

/// Rows deleted per statement with `--delete-source`. Measured on 300,000-row tables
/// (`measure_delete_batch_sizes` in tests/migrate.rs, a loaded 2-core machine): a statement
/// takes time in proportion to its rows (mean 54 ms on SQLite, 20 ms on PostgreSQL, 116 ms
/// on MariaDB at 5,000 rows; four times that at 20,000), while throughput stops growing at
/// about 5,000 (MariaDB deletes 40 % fewer rows per second at 1,000). So 5,000: Woodpecker's
/// own writes wait a tenth of a second at most, and the deletes run near full speed.
pub(crate) const DEFAULT_DELETE_BATCH: u64 = 5_000;

/// Step ids asked of a source at once.
const ID_PAGE: usize = 500;

/// The options of `migrate`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MigrateArgs {
    /// Steps migrated at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// Read and compare only: show what would be migrated; write and delete nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Once a step's object is verified, delete the step's rows from log_entries (or its
    /// file from the file store directory).
    #[arg(long)]
    pub(crate) delete_source: bool,
    /// Rows deleted per statement with --delete-source (short statements keep the table
    /// usable for Woodpecker meanwhile).
    #[arg(long, default_value_t = DEFAULT_DELETE_BATCH,
          value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub(crate) delete_batch: u64,
    /// Directory for objects being built (default: woodpecker-s3-logs-migrate beside the
    /// spool directory). Its files are removed at start.
    #[arg(long)]
    pub(crate) tmp_dir: Option<PathBuf>,
}

/// What every step job shares.
pub(crate) struct Context {
    pub(crate) writer: Writer,
    pub(crate) database: Option<Database>,
    pub(crate) args: MigrateArgs,
    pub(crate) counters: Arc<Counters>,
}

/// Runs `migrate`; the error is one line for the admin. Prints the summary on stdout.
pub(crate) async fn run(args: MigrateArgs) -> Result<(), String> {
    let config = Config::from_source(&ProcessEnv).map_err(|e| e.to_string())?;
    let store = config.open_store().await?;
    store
        .check()
        .await
        .map_err(|e| format!("the archive is not usable: {e}"))?;
    let object_store = store.object_store();

    let database = match &config.database {
        Some(source) => {
            let db = Database::connect(source.clone())
                .await
                .map_err(|e| format!("cannot read Woodpecker's database: {e}"))?;
            crate::prefix::ensure_ours(&db, &*object_store, &config, !args.dry_run).await?;
            Some(db)
        }
        None => None,
    };
    let mut sources = Vec::new();
    if let Some(db) = &database {
        sources.push(Source::Database(Box::new(db.clone())));
    }
    if let Some(dir) = &config.legacy_file_dir {
        if !dir.is_dir() {
            return Err(format!(
                "{}={}: not a directory",
                woodpecker_db::settings::LEGACY_FILE_DIR.name,
                dir.display()
            ));
        }
        sources.push(Source::Files(FileStoreLogs::new(dir)));
    }
    if sources.is_empty() {
        return Err(format!(
            "nothing to migrate from: set WOODPECKER_DATABASE_DRIVER and WOODPECKER_DATABASE_DATASOURCE as the Woodpecker server has them, and/or {} to Woodpecker's file log store directory",
            woodpecker_db::settings::LEGACY_FILE_DIR.name
        ));
    }

    let tmp = args
        .tmp_dir
        .clone()
        .unwrap_or_else(|| default_tmp_dir(&config.engine.spool_dir));
    prepare_tmp_dir(&tmp)?;

    let counters = Arc::new(Counters::default());
    if let Some(db) = &database {
        // For the progress bar only: a failure here costs the ETA, nothing else.
        if let Ok(totals) = db.log_totals().await {
            counters.total.store(totals.steps, Ordering::Relaxed);
            counters.lines_total.store(totals.rows, Ordering::Relaxed);
        }
    }
    let context = Arc::new(Context {
        writer: Writer {
            store: object_store.clone(),
            key_prefix: config.engine.key_prefix.clone(),
            tmp: tmp.clone(),
            level: config.engine.compression_level,
            sort_budget: config.engine.sort_budget_bytes,
        },
        database: database.clone(),
        args: args.clone(),
        counters: counters.clone(),
    });

    let started = Instant::now();
    let mut summary = Summary::new(args.dry_run, args.delete_source);
    let what = if args.dry_run {
        "migrate --dry-run"
    } else {
        "migrate"
    };
    let progress = Progress::start(what, "steps", counters.clone());
    for source in &sources {
        eprintln!(
            "{what}: from {} to {}",
            source.describe(),
            object_store.describe()
        );
        let result = migrate_source(&context, source, &mut summary).await;
        if let Err(e) = result {
            progress.finish();
            return Err(format!("listing the steps of {}: {e}", source.describe()));
        }
    }
    progress.finish();
    summary.elapsed = started.elapsed();
    print!("{}", summary.report(database.as_ref()));
    if summary.failed > 0 {
        return Err(format!(
            "{} steps failed (listed above); run migrate again to retry them",
            summary.failed
        ));
    }
    Ok(())
}

/// Every step of one source through `--jobs` workers.
async fn migrate_source(
    context: &Arc<Context>,
    source: &Source,
    summary: &mut Summary,
) -> Result<(), LegacyError> {
    let ids = futures::stream::try_unfold(Some(0i64), |after| async move {
        let Some(after) = after else {
            return Ok(None);
        };
        let page = source.logs().step_ids(after, ID_PAGE).await?;
        let next = (page.len() == ID_PAGE)
            .then(|| page.last().copied())
            .flatten();
        Ok::<_, LegacyError>(Some((
            futures::stream::iter(page.into_iter().map(Ok::<_, LegacyError>)),
            next,
        )))
    })
    .try_flatten();
    let mut reports = std::pin::pin!(
        ids.map_ok(|id| step::migrate(context.clone(), source.clone(), id))
            .try_buffer_unordered(usize::from(context.args.jobs))
    );
    while let Some(report) = reports.try_next().await? {
        context.counters.done.fetch_add(1, Ordering::Relaxed);
        summary.add(report);
    }
    Ok(())
}

/// Beside the spool, on the same volume: `<spool>/../woodpecker-s3-logs-migrate`.
fn default_tmp_dir(spool: &std::path::Path) -> PathBuf {
    spool
        .parent()
        .unwrap_or(spool)
        .join("woodpecker-s3-logs-migrate")
}

/// Creates the directory (0700: logs can hold secrets) and removes what a killed run left.
fn prepare_tmp_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |doing: &str, e: std::io::Error| {
        format!(
            "--tmp-dir {}: {doing}: {e} (choose another with --tmp-dir)",
            dir.display()
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create", e))?;
    for entry in std::fs::read_dir(dir).map_err(|e| fail("list", e))? {
        let entry = entry.map_err(|e| fail("list", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only what this tool and the engine's builder create there.
        if name.starts_with("object-") || name.starts_with("run-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
