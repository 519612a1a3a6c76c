//! `woodpecker-s3-logs`: with no arguments, the Woodpecker log-store addon (what the server
//! runs); with a subcommand, tools for the people who run it.

mod config;
mod demo;
mod doctor;
mod gc;
mod get;
mod launch;
mod legacy;
mod limits;
mod metrics;
mod migrate;
mod prefix;
mod progress;
mod serve;
mod staging;
mod variables;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Woodpecker CI log store keeping step logs in S3-compatible storage", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Launch the addon as Woodpecker does, stream a small real pipeline through it, read it
    /// back and show where the logs went (a local directory unless S3 is configured).
    Demo,
    /// Print a step's log as Woodpecker's download does (or as JSON), from the configured
    /// archive and spool, or Woodpecker's own database or file store for a step from before
    /// the switch.
    Get {
        step_id: i64,
        /// Print the entries as Woodpecker's JSON instead of plain text.
        #[arg(long)]
        json: bool,
    },
    /// Check everything the addon needs with the addon's settings (bucket, permissions,
    /// clock, directories, a round trip through the addon) and say how to fix what fails.
    /// Exit code 0 when nothing failed.
    Doctor {
        /// Print the report as one JSON document instead of the checklist.
        #[arg(long)]
        json: bool,
    },
    /// Move every log Woodpecker wrote before the switch (its database's log_entries, its
    /// file store directory) into the archive; resumable, safe while Woodpecker runs.
    Migrate(migrate::MigrateArgs),
    /// Delete archived logs of steps Woodpecker deleted, and with --keep-days/--keep-last
    /// those beyond retention (a dry run unless --apply).
    Gc(gc::GcArgs),
}

fn main() {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        serve::run();
    };
    // `get` prints a log on stdout: only warnings and errors belong on stderr then.
    let level = match command {
        Cmd::Get { .. } => tracing::Level::WARN,
        Cmd::Demo => tracing::Level::INFO,
        // The report says it all; the launched addon's warnings are in its round-trip line.
        Cmd::Doctor { .. } => tracing::Level::ERROR,
        // Their progress and report are their output; the log says only what went wrong.
        Cmd::Migrate(_) | Cmd::Gc(_) => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match command {
            Cmd::Demo => demo::run().await,
            Cmd::Get { step_id, json } => get::run(step_id, json).await,
            Cmd::Doctor { json } => std::process::exit(doctor::run(json).await),
            Cmd::Migrate(args) => migrate::run(args).await,
            Cmd::Gc(args) => gc::run(args).await,
        }
    });
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
