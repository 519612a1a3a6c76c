//! README.md's configuration table is checked against the settings' declarations, row by
//! row: same variables in the same order, same defaults, same one-line docs. On a mismatch the
//! test prints the table as the declarations render it, ready to paste.

use archive::S3Settings;
use engine::EngineSettings;
use settings::SettingDoc;

#[path = "../src/variables.rs"]
#[allow(dead_code)] // `LOG_LEVEL_VARS` is the binary's, not needed here
mod variables;

/// The header row that starts the table under "## Configuration".
const HEADER: &str = "| variable | default | meaning |";

/// Every declaration in the README's order: the S3 backend's (with the AWS chain), then the
/// binary's archive directory and staging mode, the engine's, the binary's log level, Woodpecker's database
/// (and the legacy file store), the prefix takeover and the metrics address.
fn declared() -> Vec<SettingDoc> {
    let mut rows = S3Settings::VARIABLES.to_vec();
    rows.push(variables::ARCHIVE_DIR.documented());
    rows.push(variables::STAGING.documented());
    rows.extend_from_slice(EngineSettings::VARIABLES);
    rows.push(variables::LOG_LEVEL.documented());
    rows.extend_from_slice(woodpecker_db::settings::VARIABLES);
    rows.push(variables::ADOPT_PREFIX.documented());
    rows.push(variables::METRICS_ADDR.documented());
    rows
}

/// The body rows of the README's configuration table.
fn readme_rows() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let configuration = readme
        .split_once("\n## Configuration\n")
        .expect("README.md has a \"## Configuration\" section")
        .1;
    let table = configuration
        .split_once(&format!("{HEADER}\n"))
        .expect("the configuration section has the variable | default | meaning table")
        .1;
    table
        .lines()
        .skip(1) // |---|---|---|
        .take_while(|line| line.starts_with('|'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_configuration_table_matches_the_declarations() {
    let expected: Vec<String> = declared().iter().map(SettingDoc::markdown_row).collect();
    assert_eq!(
        readme_rows(),
        expected,
        "README.md's configuration table differs from the declarations; it should read:\n\n\
         {HEADER}\n|---|---|---|\n{}\n",
        expected.join("\n")
    );
}

#[test]
fn every_variable_is_declared_once() {
    let mut names: Vec<&str> = declared().iter().map(|row| row.name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "a variable is declared twice");
}
