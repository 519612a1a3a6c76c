//! `demo`: launches this binary the way Woodpecker does, streams a realistic pipeline into
//! it, finishes the steps, reads them back and shows where the logs went.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::{FINALIZE_DELAY, SPOOL_DIR, format::object_key};
use logservice::{LogEntry, LogService, Step, StepId};
use settings::Source;

use crate::config::{Backend, Config};
use crate::launch::{launch, wait_for_object};
use crate::progress::human_bytes;
use crate::variables::{ARCHIVE_DIR, LOG_LEVEL_VARS};

/// The pipeline: each step runs real commands on this machine, so the log is real tool
/// output, not generated text.
const PIPELINE: &[(&str, &[&str])] = &[
    (
        "clone",
        &[
            "git --version",
            "git init -q demo-repo && git -C demo-repo status",
        ],
    ),
    (
        "toolchain",
        &[
            "uname -a",
            "rustc -vV",
            "cargo --version",
            "go version",
            "python3 --version",
        ],
    ),
    (
        "build",
        &[
            "ls -la /usr/bin",
            "env -i PATH=/usr/bin:/bin sh -c 'command -v ls cat sh'",
        ],
    ),
    (
        "test",
        &[
            "python3 -c \"import sys; [print(f'test_{i} ... ok') for i in range(300)]; print('FAILED: none', file=sys.stderr)\"",
        ],
    ),
];

/// The start of the name of the demo's directory, made in the first writable base directory.
const DEMO_DIR_PREFIX: &str = "woodpecker-s3-logs-demo-";

/// How long each step may take to be archived after its grace period.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

/// Lines per LogAppend call, about what an agent sends per second for a chatty step.
const BATCH: usize = 100;

pub(crate) async fn run() -> Result<(), String> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let demo_dir = demo_dir(&env)?;
    let mut overrides: Vec<(String, String)> = Vec::new();
    if Source::get(&env, SPOOL_DIR.name).is_none() {
        overrides.push((
            SPOOL_DIR.name.into(),
            demo_dir.join("spool").display().to_string(),
        ));
    }
    if Source::get(&env, ARCHIVE_DIR.name).is_none() {
        overrides.push((
            ARCHIVE_DIR.name.into(),
            demo_dir.join("archive").display().to_string(),
        ));
    }
    if Source::get(&env, FINALIZE_DELAY.name).is_none() {
        overrides.push((FINALIZE_DELAY.name.into(), "1s".into()));
    }
    // The addon's info lines would interleave with the report; warnings still show.
    if LOG_LEVEL_VARS
        .iter()
        .all(|var| Source::get(&env, var).is_none())
    {
        overrides.push((LOG_LEVEL_VARS[0].into(), "warn".into()));
    }
    let mut effective = env.clone();
    effective.extend(overrides.iter().cloned());
    let config = Config::from_source(&effective).map_err(|e| e.to_string())?;
    let store = config.open_store().await?.object_store();

    println!(
        "launching {} as Woodpecker does (go-plugin net/rpc)…",
        std::env::current_exe()
            .map(|exe| exe.display().to_string())
            .unwrap_or_else(|_| "this binary".into())
    );
    let addon = launch(&overrides, false).await?;
    let log = addon.log.clone();

    let work = work_dir_for_commands(&demo_dir)?;
    let base_id = unique_base_id();
    let mut steps = Vec::new();
    for (index, (name, commands)) in PIPELINE.iter().enumerate() {
        let step = Step {
            id: base_id + index as i64,
            pipeline_id: base_id,
            pid: index as i64 + 2,
            name: (*name).to_string(),
            state: "running".into(),
            ..Step::default()
        };
        let entries = run_step(&step, commands, &work);
        steps.push((step, entries));
    }

    println!(
        "streaming {} steps concurrently in batches of {BATCH} lines…",
        steps.len()
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (step, entries) in &steps {
        let (log, step, entries) = (log.clone(), step.clone(), entries.clone());
        tasks.push(tokio::spawn(async move {
            for batch in entries.chunks(BATCH) {
                log.log_append(&step, batch.to_vec()).await?;
            }
            // An agent retry: the first batch again. It must not show up twice.
            if let Some(first) = entries.chunks(BATCH).next() {
                log.log_append(&step, first.to_vec()).await?;
            }
            log.step_finished(&step).await;
            Ok::<_, logservice::LogError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    println!(
        "  done in {:.0?}; steps finished, archiving after the grace period",
        started.elapsed()
    );

    println!();
    println!(
        "{:<10} {:>6} {:>12} {:>12} {:>6}  where",
        "step", "lines", "file store", "archived", "ratio"
    );
    let mut all_ok = true;
    for (step, sent) in &steps {
        let id = StepId::of(step).map_err(|e| e.to_string())?;
        let key = object_key(&config.engine.key_prefix, id);
        let size = wait_for_object(&*store, &key, ARCHIVE_WAIT).await?;
        let read = log.log_find(step).await.map_err(|e| e.to_string())?;
        let exact = read == *sent;
        all_ok &= exact;
        let file_store_bytes: usize = sent
            .iter()
            .map(|e| serde_json::to_vec(e).map(|v| v.len() + 1).unwrap_or(0))
            .sum();
        println!(
            "{:<10} {:>6} {:>12} {:>12} {:>5.1}x  {} {}",
            step.name,
            read.len(),
            human_bytes(file_store_bytes as u64),
            human_bytes(size),
            file_store_bytes as f64 / size.max(1) as f64,
            key,
            if exact { "" } else { "(READ BACK DIFFERS!)" },
        );
    }
    println!();
    println!("archive: {}", store.describe());
    println!("spool:   {}", config.engine.spool_dir.display());
    let settings: String = overrides
        .iter()
        .filter(|(name, _)| {
            name == SPOOL_DIR.name
                || (name == ARCHIVE_DIR.name && matches!(config.backend, Backend::LocalDir(_)))
        })
        .map(|(name, value)| format!("{name}={value} "))
        .collect();
    let s3_note = match config.backend {
        Backend::S3(_) => "  (with your S3 settings exported)",
        Backend::LocalDir(_) => "",
    };
    println!(
        "read one back: {settings}{} get {base_id}{s3_note}",
        addon.exe.display()
    );
    addon.stop().await;
    let _ = std::fs::remove_dir_all(&work);
    if all_ok {
        println!("every step read back exactly as sent (ordered, deduplicated).");
        Ok(())
    } else {
        Err("some steps did not read back as sent".into())
    }
}

/// Runs each command with `sh -c`, turning its output into log entries like an agent does:
/// stdout lines type 0, stderr lines type 1, and the exit code as a type 2 entry.
fn run_step(step: &Step, commands: &[&str], work: &Path) -> Vec<LogEntry> {
    let started = Instant::now();
    let mut entries = Vec::new();
    let push = |entries: &mut Vec<LogEntry>, data: Vec<u8>, entry_type| {
        entries.push(LogEntry {
            step_id: step.id,
            time: started.elapsed().as_secs() as i64,
            line: entries.len() as i64,
            data: Some(data),
            entry_type,
            ..LogEntry::default()
        });
    };
    let mut code = 0;
    for command in commands {
        push(&mut entries, format!("+ {command}").into_bytes(), 0);
        match Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(work)
            .output()
        {
            Ok(output) => {
                for line in output
                    .stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                {
                    push(&mut entries, line.to_vec(), 0);
                }
                for line in output
                    .stderr
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                {
                    push(&mut entries, line.to_vec(), 1);
                }
                code = output.status.code().unwrap_or(1);
            }
            Err(e) => push(&mut entries, format!("cannot run sh: {e}").into_bytes(), 1),
        }
    }
    push(&mut entries, code.to_string().into_bytes(), 2);
    entries
}

/// The demo's own directory (spool, archive, the commands' working directory): a fresh one
/// named `woodpecker-s3-logs-demo-*`, private (0700) and kept after the run, in the first
/// writable of the temporary directory (`TMPDIR`, else `/tmp`), `XDG_CACHE_HOME` and
/// `~/.cache`, so that it also runs where there is no `/tmp`. Fresh, because a fixed name in
/// a shared directory could be made in advance by another user (or be a link to elsewhere).
fn demo_dir(env: &HashMap<String, String>) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for candidate in demo_dir_candidates(env) {
        match make_private_dir(&candidate) {
            Ok(dir) => {
                if let Some(first) = tried.first() {
                    println!(
                        "({first}; using {} from {})",
                        dir.display(),
                        candidate.source
                    );
                }
                return Ok(dir);
            }
            Err(e) => tried.push(format!(
                "{} ({}) is not writable: {e}",
                candidate.base.display(),
                candidate.source
            )),
        }
    }
    Err(format!(
        "no writable directory for the demo; tried {}. Set TMPDIR to a writable directory",
        tried.join("; ")
    ))
}

/// A base directory the demo may use.
#[derive(Debug, PartialEq, Eq)]
struct DemoBase {
    base: PathBuf,
    /// The variable it came from.
    source: &'static str,
    /// Whether a missing base is created: a cache directory is (XDG base directory spec), a
    /// temporary directory is not (it belongs to the system).
    create: bool,
}

/// What [`demo_dir`] tries, in order.
fn demo_dir_candidates(env: &HashMap<String, String>) -> Vec<DemoBase> {
    let absolute = |var: &str| {
        Source::get(env, var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let mut candidates = vec![match absolute("TMPDIR") {
        Some(base) => DemoBase {
            base,
            source: "TMPDIR",
            create: false,
        },
        None => DemoBase {
            base: PathBuf::from("/tmp"),
            source: "the default /tmp",
            create: false,
        },
    }];
    if let Some(base) = absolute("XDG_CACHE_HOME") {
        candidates.push(DemoBase {
            base,
            source: "XDG_CACHE_HOME",
            create: true,
        });
    }
    if let Some(home) = absolute("HOME") {
        candidates.push(DemoBase {
            base: home.join(".cache"),
            source: "HOME",
            create: true,
        });
    }
    candidates
}

/// Makes a fresh private directory in `candidate` (creating a missing cache base first).
fn make_private_dir(candidate: &DemoBase) -> std::io::Result<PathBuf> {
    if candidate.create {
        std::fs::create_dir_all(&candidate.base)?;
    }
    let dir = tempfile::Builder::new()
        .prefix(DEMO_DIR_PREFIX)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&candidate.base)?;
    Ok(dir.keep())
}

fn work_dir_for_commands(demo_dir: &Path) -> Result<PathBuf, String> {
    let dir = demo_dir.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Step ids unique per run, so repeated demos never mix with an earlier run's logs.
fn unique_base_id() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    (secs as i64 % 100_000_000) * 100 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn demo_dir_candidates_in_fallback_order() {
        let bases = |env: &HashMap<String, String>| -> Vec<(PathBuf, &'static str, bool)> {
            demo_dir_candidates(env)
                .into_iter()
                .map(|c| (c.base, c.source, c.create))
                .collect()
        };
        let all = env(&[
            ("TMPDIR", "/scratch"),
            ("XDG_CACHE_HOME", "/var/lib/woodpecker"),
            ("HOME", "/home/ci"),
        ]);
        assert_eq!(
            bases(&all),
            [
                (PathBuf::from("/scratch"), "TMPDIR", false),
                (PathBuf::from("/var/lib/woodpecker"), "XDG_CACHE_HOME", true),
                (PathBuf::from("/home/ci/.cache"), "HOME", true),
            ]
        );
        // Relative values do not count (XDG base directory spec).
        let bare = env(&[("TMPDIR", "rel"), ("XDG_CACHE_HOME", "rel")]);
        assert_eq!(
            bases(&bare),
            [(PathBuf::from("/tmp"), "the default /tmp", false)]
        );
    }

    /// A demo directory just made by [`demo_dir`] in `base`.
    fn assert_fresh_in(dir: &Path, base: &Path) {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(dir.parent(), Some(base), "{}", dir.display());
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(DEMO_DIR_PREFIX), "{name}");
        let meta = std::fs::symlink_metadata(dir).unwrap();
        assert!(meta.is_dir(), "a real directory, not a link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }

    #[test]
    fn demo_dir_skips_what_cannot_be_written() {
        let base = tempfile::tempdir().unwrap();
        // A file where the temporary directory should be: unusable even for root.
        let file = base.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let cache = base.path().join("cache");
        let chosen = demo_dir(&env(&[
            ("TMPDIR", file.to_str().unwrap()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ]))
        .unwrap();
        assert_fresh_in(&chosen, &cache);

        // A missing temporary directory is not created (even by root, who could).
        let missing = base.path().join("missing-tmp");
        let chosen = demo_dir(&env(&[
            ("TMPDIR", missing.to_str().unwrap()),
            ("HOME", base.path().to_str().unwrap()),
        ]))
        .unwrap();
        assert_fresh_in(&chosen, &base.path().join(".cache"));
        assert!(!missing.exists());

        let err = demo_dir(&env(&[("TMPDIR", file.to_str().unwrap())])).unwrap_err();
        assert!(err.contains("(TMPDIR) is not writable"), "{err}");
    }

    /// Issue 12, finding 6: another user of a shared temporary directory cannot prepare the
    /// demo's directory (or a link to elsewhere) in advance: each run makes a fresh private
    /// one.
    #[test]
    fn demo_dir_is_fresh_private_and_never_a_prepared_one() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.path().join("woodpecker-s3-logs-demo"))
            .unwrap();
        let tmp = env(&[("TMPDIR", base.path().to_str().unwrap())]);
        let first = demo_dir(&tmp).unwrap();
        let second = demo_dir(&tmp).unwrap();
        assert_ne!(first, second);
        for dir in [&first, &second] {
            assert_fresh_in(dir, base.path());
        }
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
