//! Inputs for the Criterion micro-benchmarks in `benches/`: real log lines from the
//! benchmark corpus (`bench/corpus.sh`) turned into the requests and entries the addon's hot
//! paths handle. Kept in a library so every benchmark builds its input the same way, from
//! real tool output (compression and JSON escaping costs depend on the text).

use std::path::PathBuf;

use gob::{Encoder, Struct, Value};
use logservice::{LogEntry, Step};
use serde::Serialize;

/// The Woodpecker agent's `maxLogBatchSize`: it sends a batch once its entries weigh 1 MiB.
pub const AGENT_BATCH_BYTES: usize = 1 << 20;

/// Protobuf bytes of an entry besides its data, as the agent counts them.
const PROTO_OVERHEAD: usize = 48;

/// The corpus directory: `$BENCH_CORPUS`, else `bench/corpus` in the workspace.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/corpus"))
}

/// Every line of the corpus files, in file-name order, without the trailing newline (as the
/// agent sends them).
///
/// # Panics
/// When the corpus has not been generated: the benchmarks measure real text only.
pub fn corpus_lines() -> Vec<Vec<u8>> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "corpus directory {}: {e} (run bench/corpus.sh)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.log in {} (run bench/corpus.sh)",
        dir.display()
    );
    let mut lines = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        lines.extend(raw.split(|b| *b == b'\n').map(<[u8]>::to_vec));
    }
    lines
}

/// `n` entries of step `step_id` with lines 0..n, cycling through the corpus.
pub fn entries(lines: &[Vec<u8>], step_id: i64, n: usize) -> Vec<LogEntry> {
    (0..n)
        .map(|i| LogEntry {
            id: 0,
            step_id,
            time: (i / 2000) as i64,
            line: i as i64,
            data: Some(lines[i % lines.len()].clone()),
            entry_type: 0,
        })
        .collect()
}

/// The entries of one full agent batch: lines until their protobuf weight reaches 1 MiB.
pub fn agent_batch(lines: &[Vec<u8>], step_id: i64) -> Vec<LogEntry> {
    let mut weight = 0;
    let n = lines
        .iter()
        .cycle()
        .take_while(|l| {
            let more = weight < AGENT_BATCH_BYTES;
            weight += l.len() + PROTO_OVERHEAD;
            more
        })
        .count();
    entries(lines, step_id, n)
}

/// The step Woodpecker sends along with every call.
pub fn step(id: i64) -> Step {
    Step {
        id,
        uuid: format!("01BENCH{id:019}"),
        pipeline_id: 1,
        name: "build".into(),
        state: "running".into(),
        started: 1_718_000_000,
        step_type: "commands".into(),
        ..Step::default()
    }
}

/// Woodpecker's `argumentsAppend`, as its addon client marshals it.
#[derive(Serialize)]
struct AppendArgs<'a> {
    step: &'a Step,
    log_entries: &'a [LogEntry],
}

/// The JSON argument of a `LogAppend` call.
pub fn append_json(step: &Step, entries: &[LogEntry]) -> Vec<u8> {
    serde_json::to_vec(&AppendArgs {
        step,
        log_entries: entries,
    })
    .expect("entries serialize")
}

/// The bytes a Go net/rpc client writes for one call: the gob `Request` header (with its
/// type definition, as on a fresh stream) and the `[]byte` argument.
pub fn rpc_request(method: &str, seq: u64, arg: Vec<u8>) -> Vec<u8> {
    let mut encoder = Encoder::new();
    let mut out = Vec::new();
    let header = Value::Struct(Struct {
        name: "Request".into(),
        fields: vec![
            ("ServiceMethod".into(), Value::String(method.into())),
            ("Seq".into(), Value::Uint(seq)),
        ],
    });
    encoder.encode(&header, &mut out).expect("header encodes");
    encoder
        .encode(&Value::Bytes(arg), &mut out)
        .expect("body encodes");
    out
}
