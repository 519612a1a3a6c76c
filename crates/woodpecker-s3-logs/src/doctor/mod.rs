//! `doctor`: what an admin runs first, where the addon runs
//! (`docker exec woodpecker-server /opt/addons/woodpecker-s3-logs doctor`). It reads the same
//! environment as the addon and checks, in order: the settings, the S3 side (credentials,
//! endpoint, bucket, region, clock, a probe object), the local directories, and a round
//! trip through the addon launched as Woodpecker launches it. Each failure comes with its
//! fix; checks that cannot run after a failure are reported as skipped with the reason.
//!
//! Exit code 0 when nothing failed (warnings allowed), 1 otherwise; `--json` prints the
//! report as one JSON document (`ok`, and `checks` with `id`, `title`, `status`, `detail`,
//! `fix`).

mod configuration;
mod database;
mod disk;
mod report;
mod round_trip;
mod s3;

use std::collections::HashMap;

use archive::{LocalDirStore, ObjectStore, S3Store, StoreError};

use woodpecker_db::Database;

use crate::config::{Backend, Config};
use crate::variables::{STAGING, Staging};
use report::{CheckId, Report, Status};

/// The S3 checks, skipped for the embedded default.
const S3_CHECKS: [CheckId; 13] = [
    CheckId::Credentials,
    CheckId::EndpointDns,
    CheckId::EndpointTls,
    CheckId::Bucket,
    CheckId::BucketRegion,
    CheckId::ClockSkew,
    CheckId::ObjectPut,
    CheckId::ObjectHead,
    CheckId::ObjectGet,
    CheckId::ConditionalWrite,
    CheckId::ObjectDelete,
    CheckId::Multipart,
    CheckId::RoundTrip,
];

/// Runs every check, prints the report, and returns the exit code.
pub(crate) async fn run(json: bool) -> i32 {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut report = Report::default();
    let heading = check_all(&mut report, &env).await;
    let report = report.finish();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot write the report as JSON: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", report.render(&heading));
    }
    if report.ok { 0 } else { 1 }
}

/// Fills `report` and returns the heading naming what was checked.
async fn check_all(report: &mut Report, env: &HashMap<String, String>) -> String {
    let config = match Config::from_source(env) {
        Ok(config) => config,
        Err(e) => {
            let no_database =
                e.variable == STAGING.name && e.value.trim().eq_ignore_ascii_case("database");
            if no_database {
                // The addon refuses to start with this same line.
                report.fail(
                    CheckId::Settings,
                    e.to_string(),
                    format!(
                        "set WOODPECKER_DATABASE_DRIVER and WOODPECKER_DATABASE_DATASOURCE (or _FILE) as the Woodpecker server has them (the addon inherits the server's environment: run doctor where the server runs), or set {}=spool to stage on a persistent volume",
                        STAGING.name
                    ),
                );
                report.skip_rest(
                    &CheckId::ALL,
                    &format!("{}=database, but no database is configured", STAGING.name),
                );
            } else {
                report.fail(
                    CheckId::Settings,
                    e.to_string(),
                    format!("set {} to a valid value: {}", e.variable, e.reason),
                );
                report.skip_rest(&CheckId::ALL, "the settings do not parse");
            }
            return "the addon's settings".into();
        }
    };
    let described = configuration::describe(env, &config);
    match &config.backend {
        Backend::S3(settings) => {
            let heading = format!(
                "the addon's settings, archiving to s3://{}/{}{}",
                settings.bucket,
                settings.folder,
                staged_in(&config)
            );
            let store = match S3Store::connect((**settings).clone()).await {
                Ok(store) => store,
                Err(e) => {
                    let fix = connect_fix(&e);
                    report.fail(CheckId::Settings, format!("{described}\n{e}"), fix);
                    report.skip_rest(&CheckId::ALL, "the S3 client cannot be set up");
                    return heading;
                }
            };
            report.pass(CheckId::Settings, described);
            let usable = s3::check(report, &store).await;
            report.skip(CheckId::ArchiveDir, "archives go to the bucket");
            let db = local_checks(report, &config).await;
            let archive_works = report.status(CheckId::ObjectPut) == Some(Status::Pass);
            match usable {
                Ok(()) => round_trip_if_ready(report, &config, &store, archive_works, db).await,
                Err(reason) => report.skip(CheckId::RoundTrip, reason),
            }
            heading
        }
        Backend::LocalDir(dir) => {
            report.pass(CheckId::Settings, described);
            report.skip_rest(
                &S3_CHECKS[..S3_CHECKS.len() - 1],
                &format!(
                    "no bucket set ({}): archives go to the local directory",
                    archive::variables::BUCKET.name
                ),
            );
            disk::archive_dir(report, dir);
            if config.staging == Staging::Database {
                report.warn_if_passed(
                    CheckId::ArchiveDir,
                    "database staging keeps no local state, but this archive directory holds every finished log: it still needs a persistent volume",
                    format!(
                        "set {} (with its endpoint and credentials) to archive to a bucket, or keep {} on a persistent volume",
                        archive::variables::BUCKET.name,
                        dir.display()
                    ),
                );
            }
            let db = local_checks(report, &config).await;
            match LocalDirStore::new(dir) {
                Ok(store) => {
                    let archive_works = report.status(CheckId::ArchiveDir) != Some(Status::Fail);
                    round_trip_if_ready(report, &config, &store, archive_works, db).await;
                }
                Err(e) => report.skip(CheckId::RoundTrip, format!("no archive directory: {e}")),
            }
            format!(
                "the embedded default, archiving to the local directory {}{}",
                dir.display(),
                staged_in(&config)
            )
        }
    }
}

/// `, staging in Woodpecker's database` for the heading, or nothing.
fn staged_in(config: &Config) -> &'static str {
    match config.staging {
        Staging::Database => ", staging running steps in Woodpecker's database",
        Staging::Spool => "",
    }
}

/// The staging checks and the socket directory. With database staging: the database, its
/// `log_entries` and unique index, and the scratch directory (returns the database when
/// usable); the spool is not used, and not created.
async fn local_checks(report: &mut Report, config: &Config) -> Option<Database> {
    match (config.staging, &config.database) {
        (Staging::Database, Some(source)) => {
            let db = database::check(report, source).await;
            report.skip(
                CheckId::SpoolDir,
                format!(
                    "not used: {}=database stages running steps' lines in log_entries",
                    STAGING.name
                ),
            );
            match disk::scratch_dir(report) {
                Some(scratch) => disk::socket_dir(report, scratch.path()),
                None => disk::socket_dir(report, &std::env::temp_dir()),
            }
            db
        }
        _ => {
            let reason = format!("spool staging ({} is not database)", STAGING.name);
            report.skip_rest(
                &[CheckId::Database, CheckId::LogEntries, CheckId::UniqueLines],
                &reason,
            );
            disk::spool_dir(report, &config.engine.spool_dir);
            disk::socket_dir(
                report,
                &disk::spool_socket_fallback(&config.engine.spool_dir),
            );
            report.skip(
                CheckId::ScratchDir,
                "spool staging builds archives in the spool directory",
            );
            None
        }
    }
}

async fn round_trip_if_ready(
    report: &mut Report,
    config: &Config,
    store: &dyn ObjectStore,
    archive_works: bool,
    db: Option<Database>,
) {
    if config.staging == Staging::Database {
        let blocker = [
            (CheckId::Database, "the database does not answer"),
            (CheckId::LogEntries, "the database has no log_entries table"),
            (CheckId::UniqueLines, "log_entries cannot be used"),
            (
                CheckId::ScratchDir,
                "no scratch directory for archive builds",
            ),
            (
                CheckId::SocketDir,
                "the addon has no directory for its socket",
            ),
        ]
        .into_iter()
        .find(|(id, _)| report.status(*id) == Some(Status::Fail));
        match (blocker, db) {
            (Some((_, reason)), _) => report.skip(CheckId::RoundTrip, reason),
            (None, None) => report.skip(CheckId::RoundTrip, "the database cannot be used"),
            (None, Some(db)) => {
                round_trip::check(report, config, store, archive_works, Some(&db)).await;
                db.close().await;
            }
        }
    } else if report.status(CheckId::SpoolDir) == Some(Status::Fail) {
        report.skip(CheckId::RoundTrip, "the spool directory is not usable");
    } else if report.status(CheckId::SocketDir) == Some(Status::Fail) {
        report.skip(
            CheckId::RoundTrip,
            "the addon has no directory for its socket",
        );
    } else {
        round_trip::check(report, config, store, archive_works, None).await;
    }
}

/// The fix for an S3 client that cannot be built.
fn connect_fix(error: &StoreError) -> String {
    use archive::variables::{CA_BUNDLE, REGION};
    match error {
        StoreError::NoRegion { .. } => {
            format!("set {} (or AWS_REGION) to the bucket's region", REGION.name)
        }
        StoreError::CaBundle { .. } => {
            format!("point {} at a PEM file of CA certificates", CA_BUNDLE.name)
        }
        _ => "see the error above".into(),
    }
}
