//! Micro-benchmarks of the addon's hot paths, on real corpus text:
//!
//! * `gob_decode/log_append_1MiB`: the net/rpc server's reader on the bytes of one full
//!   agent batch (`goplugin::netrpc::RequestDecoder`, as the server loop runs it);
//! * `entry_parsing/log_append_1MiB`: `LogHandler` taking that request's JSON apart (the
//!   step decoded, the entries checked and kept as text) and handing them to a store that
//!   keeps nothing, i.e. the plugin side minus storage;
//! * `archive_encode/100k_lines`: `engine::format::ObjectWriter` at the default zstd level;
//! * `find_reply/100k_lines`: the JSON of a 100k-line `LogFind` answer, spliced from an
//!   archived object as the engine does (`engine::read::log_json`).
//!
//! Run with `CARGO_TARGET_DIR=/work/target-bench cargo bench -p benches` after
//! `bench/corpus.sh`. Throughput is reported per byte of the input each path reads.

// `criterion_group!` generates a public function it gives no doc comment.
#![allow(missing_docs)]

use std::sync::Arc;

use bytes::BytesMut;

use benches::{agent_batch, append_json, corpus_lines, entries, rpc_request, step};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use engine::format::ObjectWriter;
use goplugin::netrpc::RequestDecoder;
use goplugin::{Handler, Limits, Value};
use logservice::addon::LogHandler;
use logservice::{EntryRecords, LogEntry, LogError, LogService, Step};
use tokio_util::codec::Decoder;

/// A store that drops what it gets, so that only the protocol binding is measured.
struct Discard;

impl LogService for Discard {
    async fn log_find(&self, _: &Step) -> Result<Vec<LogEntry>, LogError> {
        Ok(Vec::new())
    }
    async fn log_append(&self, _: &Step, entries: Vec<LogEntry>) -> Result<(), LogError> {
        std::hint::black_box(entries);
        Ok(())
    }
    async fn log_append_records(&self, _: &Step, records: EntryRecords) -> Result<(), LogError> {
        std::hint::black_box(records);
        Ok(())
    }
    async fn log_delete(&self, _: &Step) -> Result<(), LogError> {
        Ok(())
    }
    async fn step_finished(&self, _: &Step) {}
}

fn hot_paths(c: &mut Criterion) {
    let lines = corpus_lines();
    let step = step(4242);
    let batch = agent_batch(&lines, step.id);
    let json = append_json(&step, &batch);
    let request = rpc_request("Plugin.LogAppend", 7, json.clone());

    let mut g = c.benchmark_group("gob_decode");
    g.throughput(Throughput::Bytes(request.len() as u64));
    // As the server's read loop runs it: the bytes land in a buffer that lives as long as the
    // stream (so its memory is reused), and the decoder takes the request out of it. A fresh
    // buffer per call (`read_requests`) would mostly measure the allocator: glibc returns a
    // freed 1 MiB to the kernel and faults it in again on the next call.
    let mut buf = BytesMut::with_capacity(request.len());
    g.bench_function("log_append_1MiB", |b| {
        b.iter(|| {
            buf.extend_from_slice(&request);
            let mut decoder = RequestDecoder::new(Limits::default());
            let decoded = decoder.decode_eof(&mut buf).expect("decodes");
            assert!(decoded.is_some() && buf.is_empty());
            decoded
        })
    });
    g.finish();

    let handler = LogHandler::new(Arc::new(Discard));
    // The handler parses a batch this large on a Tokio blocking thread, as in the addon.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut g = c.benchmark_group("entry_parsing");
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("log_append_1MiB", |b| {
        b.iter_batched(
            || Value::Bytes(json.clone()),
            |arg| {
                runtime
                    .block_on(handler.call("LogAppend", arg))
                    .expect("parses")
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let many = entries(&lines, step.id, 100_000);
    let raw: u64 = many
        .iter()
        .map(|e| e.data.as_ref().map_or(0, Vec::len) as u64)
        .sum();
    let mut g = c.benchmark_group("archive_encode");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("100k_lines", |b| {
        b.iter(|| {
            let mut w = ObjectWriter::new(Vec::new(), 3).expect("zstd encoder");
            for e in &many {
                w.push(e).expect("in order");
            }
            w.finish().expect("finish").0
        })
    });
    g.finish();

    let (object, summary) = {
        let mut w = ObjectWriter::new(Vec::new(), 3).expect("zstd encoder");
        for e in &many {
            w.push(e).expect("in order");
        }
        w.finish().expect("finish")
    };
    let info = archive::ObjectInfo {
        size: object.len() as u64,
        meta: summary.to_meta(logservice::StepId::new(step.id).expect("valid id")),
        etag: None,
    };
    let staged = engine::read::Staged::default();
    let mut g = c.benchmark_group("find_reply");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("100k_lines", |b| {
        b.iter(|| engine::read::log_json(Some((&object, &info)), &staged).expect("splices"))
    });
    g.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
