//! `woodpecker-s3-logs`: with no arguments, the Woodpecker log-store addon (what the server
//! runs); with a subcommand, tools for the people who run it.

mod config;
mod demo;
mod get;
mod legacy;
mod serve;
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
    /// archive and spool.
    Get {
        step_id: i64,
        /// Print the entries as Woodpecker's JSON instead of plain text.
        #[arg(long)]
        json: bool,
    },
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
        }
    });
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
