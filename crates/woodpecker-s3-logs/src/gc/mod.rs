//! `gc`: removes archived logs nobody can reach any more (their step was deleted from
//! Woodpecker, which never tells a log store), and with `--keep-days`/`--keep-last` those
//! beyond retention. A dry run (the default) only reports; `--apply` deletes.
//!
//! The archive is listed page by page (a thousand keys at a time, so millions of objects
//! take bounded memory); each page costs one database query and, with `--apply`, one
//! `DeleteObjects` request. Before an object goes, the step's legacy copy (rows or file)
//! goes, so a removed log can never be read through again (invariant 6); a step with lines
//! still in the addon's spool is left alone.

mod report;
mod rules;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use archive::{MAX_BATCH, ObjectStore};
use engine::format;
use engine::legacy::{LegacyLogs, LegacySources};
use logservice::StepId;
use settings::ProcessEnv;
use woodpecker_db::{Database, FileStoreLogs};

use crate::config::Config;
use crate::progress::{Counters, Progress};
use report::{Report, Tally};
pub(crate) use rules::{Retention, Verdict};

/// The options of `gc`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct GcArgs {
    /// Delete what the report lists (without it, nothing is deleted).
    #[arg(long)]
    pub(crate) apply: bool,
    /// Retention: keep the logs of pipelines created in the last N days.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) keep_days: Option<u32>,
    /// Retention: keep the logs of the newest N pipelines of each repository.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) keep_last: Option<u32>,
}

/// Runs `gc`; prints the report on stdout.
pub(crate) async fn run(args: GcArgs) -> Result<(), String> {
    let config = Config::from_source(&ProcessEnv).map_err(|e| e.to_string())?;
    let store = config.open_store().await?;
    store
        .check()
        .await
        .map_err(|e| format!("the archive is not usable: {e}"))?;
    let Some(source) = config.database.clone() else {
        return Err(
            "gc needs Woodpecker's database to know which steps exist: set WOODPECKER_DATABASE_DRIVER and WOODPECKER_DATABASE_DATASOURCE as the Woodpecker server has them"
                .to_owned(),
        );
    };
    let database = Database::connect(source)
        .await
        .map_err(|e| format!("cannot read Woodpecker's database: {e}"))?;
    crate::prefix::ensure_ours(&database, &*store.object_store(), &config, args.apply).await?;
    let mut legacy: Vec<Arc<dyn LegacyLogs>> = vec![Arc::new(database.clone())];
    if let Some(dir) = &config.legacy_file_dir {
        legacy.push(Arc::new(FileStoreLogs::new(dir)));
    }
    let collector = Collector {
        store: store.object_store(),
        database,
        legacy: LegacySources::new(legacy),
        retention: Retention {
            keep_days: args.keep_days,
            keep_last: args.keep_last,
        },
        apply: args.apply,
        key_prefix: config.engine.key_prefix.clone(),
        staged: staged_steps(&config.engine.spool_dir),
        counters: Arc::new(Counters::default()),
    };
    let started = Instant::now();
    let progress = Progress::start(
        if args.apply { "gc --apply" } else { "gc" },
        "objects",
        collector.counters.clone(),
    );
    let result = collector.collect().await;
    progress.finish();
    let mut report = result?;
    report.elapsed = started.elapsed();
    print!("{}", report.text());
    if report.failed.objects > 0 {
        return Err(format!(
            "{} objects could not be deleted (listed above); run gc --apply again",
            report.failed.objects
        ));
    }
    Ok(())
}

/// One `gc` run.
pub(crate) struct Collector {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) database: Database,
    pub(crate) legacy: LegacySources,
    pub(crate) retention: Retention,
    pub(crate) apply: bool,
    pub(crate) key_prefix: String,
    /// Steps with lines in the spool right now.
    pub(crate) staged: HashSet<i64>,
    pub(crate) counters: Arc<Counters>,
}

impl Collector {
    /// Lists the archive and judges (and with `apply` deletes) every object.
    pub(crate) async fn collect(&self) -> Result<Report, String> {
        let prefix = format::objects_prefix(&self.key_prefix);
        let mut report = Report {
            apply: self.apply,
            retention: self.retention,
            store: format!("{} under {prefix}", self.store.describe()),
            ..Report::default()
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut start: Option<String> = None;
        loop {
            let page = self
                .store
                .list_page(&prefix, start.as_deref(), MAX_BATCH)
                .await
                .map_err(|e| format!("listing the archive: {e}"))?;
            self.judge_page(&page.objects, now, &mut report).await?;
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(report),
            }
        }
    }

    async fn judge_page(
        &self,
        objects: &[archive::ListedObject],
        now: i64,
        report: &mut Report,
    ) -> Result<(), String> {
        let mut steps = Vec::with_capacity(objects.len());
        for object in objects {
            report.listed.add(object.size);
            match format::step_of_key(&self.key_prefix, &object.key) {
                Some(id) => steps.push((id, object)),
                None => report.foreign.add(object.size),
            }
        }
        let ids: Vec<i64> = steps.iter().map(|(id, _)| id.get()).collect();
        let facts: HashMap<i64, _> = self
            .database
            .step_facts(&ids)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|facts| (facts.step_id, facts))
            .collect();
        let mut doomed: Vec<(StepId, &archive::ListedObject)> = Vec::new();
        for (id, object) in steps {
            let verdict = self.retention.judge(facts.get(&id.get()), now);
            let tally: &mut Tally = match verdict {
                Verdict::Orphan => &mut report.orphans,
                Verdict::Expired => &mut report.expired,
                Verdict::Keep => &mut report.kept,
                Verdict::Running => &mut report.running,
            };
            tally.add(object.size);
            if verdict.deletes() {
                if self.staged.contains(&id.get()) {
                    report.staged.add(object.size);
                } else {
                    doomed.push((id, object));
                }
            }
        }
        self.counters
            .done
            .fetch_add(objects.len() as u64, Ordering::Relaxed);
        self.counters.bytes.fetch_add(
            objects.iter().map(|o| o.size).sum::<u64>(),
            Ordering::Relaxed,
        );
        if self.apply && !doomed.is_empty() {
            self.delete(doomed, report).await;
        }
        Ok(())
    }

    /// Legacy copies first, then the objects in one batch: a failure leaves the log
    /// readable (from its object) rather than half gone.
    async fn delete(&self, doomed: Vec<(StepId, &archive::ListedObject)>, report: &mut Report) {
        let mut keys = Vec::with_capacity(doomed.len());
        let mut sizes = HashMap::with_capacity(doomed.len());
        for (id, object) in doomed {
            if let Err(e) = self.legacy.delete(id).await {
                report.fail(&object.key, object.size, format!("legacy copy: {e}"));
                continue;
            }
            sizes.insert(object.key.clone(), object.size);
            keys.push(object.key.clone());
        }
        let failures = self.store.delete_many(&keys).await;
        let mut failed = HashSet::new();
        for failure in failures {
            let size = sizes.get(&failure.key).copied().unwrap_or(0);
            report.fail(&failure.key, size, failure.error.to_string());
            failed.insert(failure.key);
        }
        for key in keys.iter().filter(|k| !failed.contains(*k)) {
            report.deleted.add(sizes[key]);
        }
    }
}

/// Steps with segments in the spool (`steps/<id>.<segment>.ndjson`): the addon has lines of
/// them it has not archived yet, so their objects are not complete logs.
fn staged_steps(spool: &Path) -> HashSet<i64> {
    let Ok(entries) = std::fs::read_dir(spool.join("steps")) else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let name = name.to_str()?;
            name.split('.').next()?.parse().ok()
        })
        .collect()
}
