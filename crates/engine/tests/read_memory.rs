//! LogFind's memory: concurrent reads of a large step share a memory budget, and an object
//! that inflates beyond what its metadata says (a decompression bomb) fails only its own read.
//!
//! Its own test binary: a counting global allocator measures the peak of the bytes this
//! process has allocated, which other tests running at the same time would disturb.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use archive::{ObjectMeta, ObjectStore};
use common::*;
use engine::format::{self, ObjectWriter};
use logservice::{LogService, StepId};

/// Counts the bytes allocated now and the most allocated at once since [`reset_peak`].
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a copy (old and new block alive at once), the worst a realloc does.
        grew(new_size);
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        shrank(if new.is_null() {
            new_size
        } else {
            layout.size()
        });
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts a new peak measurement; returns the bytes allocated now (its baseline).
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

const MIB: usize = 1 << 20;

/// The tests of this binary run one at a time: the allocator's counters are the process's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes `object` (compressed bytes) under step `id`'s key with `meta`, as an archive run
/// would have.
async fn store_object(h: &Harness, id: i64, object: &[u8], meta: &ObjectMeta) {
    let file = h.dir.path().join(format!("object-{id}"));
    std::fs::write(&file, object).unwrap();
    let key = h.engine.object_key(StepId::new(id).unwrap());
    h.store.inner.put_file(&key, &file, meta).await.unwrap();
    std::fs::remove_file(&file).unwrap();
}

/// Go's JSON of one entry of step `id`, data given as its base64 text.
fn record(id: i64, line: i64, base64: &str) -> String {
    format!(
        "{{\"id\":0,\"step_id\":{id},\"time\":{},\"line\":{line},\"data\":\"{base64}\",\"type\":0}}\n",
        line / 100
    )
}

/// An archived step of about `size` bytes of NDJSON (about 1.4 KiB a line), built straight
/// into an object: the lines' text repeats with a period of 64, so it compresses the way
/// build logs do, and no per-line encoding work is needed.
async fn archive_large_step(h: &Harness, id: i64, size: usize) {
    let payloads: Vec<String> = (0..64u32)
        .map(|n| {
            let text: String = (0..1000u32)
                .map(|i| char::from(b' ' + ((i * 31 + n * 7) % 94) as u8))
                .collect();
            let mut json = Vec::new();
            logservice::push_entry(
                &logservice::LogEntry {
                    data: Some(text.into_bytes()),
                    ..Default::default()
                },
                &mut json,
            );
            let json = String::from_utf8(json).unwrap();
            let start = json.find("\"data\":\"").unwrap() + 8;
            let end = start + json[start..].find('"').unwrap();
            json[start..end].to_owned()
        })
        .collect();
    let mut writer = ObjectWriter::new(Vec::new(), 1).unwrap();
    let (mut line, mut written) = (0i64, 0usize);
    while written < size {
        let record = record(id, line, &payloads[line as usize % payloads.len()]);
        writer.push_raw(line, record.as_bytes()).unwrap();
        written += record.len();
        line += 1;
    }
    let (bytes, summary) = writer.finish().unwrap();
    store_object(h, id, &bytes, &summary.to_meta(StepId::new(id).unwrap())).await;
}

/// 16 LogFinds of a 150 MiB step at once: the reads wait for their share of the read
/// budget instead of all allocating an answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_reads_of_a_150_mib_step_stay_within_the_read_budget() {
    const BUDGET: usize = 512 * MIB;
    const STEP: usize = 150 * MIB;
    let _serial = SERIAL.lock().await;
    let h = Harness::real_time(|s| s.read_memory = BUDGET as u64).await;
    archive_large_step(&h, 1, STEP).await;
    let expected = Arc::new(h.engine.log_find_json(&step(1)).await.unwrap());
    assert!(expected.len() > STEP, "{} bytes", expected.len());
    let engine = Arc::new(h.engine);
    let baseline = reset_peak();
    let reads: Vec<_> = (0..16)
        .map(|_| {
            let (engine, expected) = (engine.clone(), expected.clone());
            tokio::spawn(async move {
                let answer = engine.log_find_json(&step(1)).await.unwrap();
                // Compared and dropped at once, as the RPC writer sends an answer on.
                assert!(answer == *expected, "a concurrent read differs");
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap();
    }
    let used = peak() - baseline;
    // Slack: one answer may still be alive (being compared, here; being sent, in the addon)
    // after its read returned its share of the budget, plus the runtime's own small change.
    let slack = expected.len() + 16 * MIB;
    eprintln!(
        "peak above baseline under 16 concurrent reads of a {} MiB answer: {} MiB (budget {} MiB + slack {} MiB)",
        expected.len() / MIB,
        used / MIB,
        BUDGET / MIB,
        slack / MIB
    );
    assert!(
        used <= BUDGET + slack,
        "16 concurrent reads allocated {} MiB at peak; the budget is {} MiB (+{} MiB slack)",
        used / MIB,
        BUDGET / MIB,
        slack / MIB
    );
}

/// A valid zstd frame whose records inflate to far more than the object's
/// `uncompressed-size` says: its read fails, naming the key, without allocating what it
/// inflates to; another step reads fine at the same time and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_fails_only_its_own_read() {
    const BOMB_LINES: i64 = 32;
    const DATA: usize = 12 * MIB; // base64 text of each line, inside the 16 MiB record limit
    let _serial = SERIAL.lock().await;
    let h = Harness::real_time(|_| {}).await;
    // Step 1: an ordinary archived step.
    archive_large_step(&h, 1, MIB).await;
    let good = h.engine.log_find_json(&step(1)).await.unwrap();
    // Step 2: 32 canonical records of 12 MiB each (384 MiB of text, a few KiB compressed),
    // recorded as 200 bytes.
    let filler = vec![b'A'; DATA];
    let mut encoder = zstd::Encoder::new(Vec::new(), 1).unwrap();
    for line in 0..BOMB_LINES {
        let head = format!("{{\"id\":0,\"step_id\":2,\"time\":0,\"line\":{line},\"data\":\"");
        encoder.write_all(head.as_bytes()).unwrap();
        encoder.write_all(&filler).unwrap();
        encoder.write_all(b"\",\"type\":0}\n").unwrap();
    }
    let bomb = encoder.finish().unwrap();
    drop(filler);
    assert!(
        bomb.len() < MIB,
        "the bomb is {} bytes compressed",
        bomb.len()
    );
    let mut meta = format::Summary {
        lines: BOMB_LINES as u64,
        first_line: Some(0),
        last_line: Some(BOMB_LINES - 1),
        uncompressed_size: 200,
    }
    .to_meta(StepId::new(2).unwrap());
    meta.user
        .insert(format::META_UNCOMPRESSED_SIZE.into(), "200".into());
    store_object(&h, 2, &bomb, &meta).await;

    let engine = Arc::new(h.engine);
    let baseline = reset_peak();
    let (bomb_step, good_step) = (step(2), step(1));
    let (bombed, fine) = tokio::join!(
        engine.log_find_json(&bomb_step),
        engine.log_find_json(&good_step)
    );
    let used = peak() - baseline;
    eprintln!(
        "peak above baseline while reading the bomb: {} MiB",
        used / MIB
    );
    let error = match bombed {
        Ok(answer) => panic!(
            "the bomb's read must fail; it answered {} bytes",
            answer.len()
        ),
        Err(e) => e.to_string(),
    };
    let key = engine.object_key(StepId::new(2).unwrap());
    assert!(error.contains(&key), "the error names the key: {error}");
    assert!(
        error.contains("uncompressed-size"),
        "the error says what is wrong: {error}"
    );
    assert!(fine.unwrap() == good, "the other step reads fine beside it");
    assert!(
        used < 64 * MIB,
        "reading the bomb allocated {} MiB at peak",
        used / MIB
    );
    // The engine goes on serving.
    assert!(engine.log_find_json(&step(1)).await.unwrap() == good);
    assert!(engine.log_find_json(&step(2)).await.is_err());
}

/// A log over `MAX_LOG_SIZE` gets an RPC error that tells the admin what to do, whether the
/// object's metadata says its size up front or only its decompression finds out; smaller
/// logs still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_over_the_maximum_get_an_error_saying_what_to_do() {
    let _serial = SERIAL.lock().await;
    let h = Harness::real_time(|s| s.max_log_size = 2 * MIB as u64).await;
    archive_large_step(&h, 1, 3 * MIB).await;
    archive_large_step(&h, 2, MIB).await;
    // Step 3: the same 3 MiB, without metadata (an object written by another tool).
    let key = h.engine.object_key(StepId::new(1).unwrap());
    let (bytes, _) = h.store.inner.get(&key).await.unwrap().unwrap();
    let foreign = ObjectMeta {
        content_encoding: "zstd".into(),
        ..ObjectMeta::default()
    };
    let rewritten = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap())
        .unwrap()
        .replace("\"step_id\":1,", "\"step_id\":3,");
    store_object(
        &h,
        3,
        &zstd::encode_all(rewritten.as_bytes(), 1).unwrap(),
        &foreign,
    )
    .await;

    for id in [1, 3] {
        let error = h
            .engine
            .log_find_json(&step(id))
            .await
            .unwrap_err()
            .to_string();
        for needed in [
            engine::MAX_LOG_SIZE.name,
            &format!("woodpecker-s3-logs get {id}"),
            &format!("step {id}"),
        ] {
            assert!(
                error.contains(needed),
                "step {id}: {needed:?} missing in: {error}"
            );
        }
    }
    let answer = h.engine.log_find_json(&step(2)).await.unwrap();
    assert!(answer.len() > MIB && answer.len() < 2 * MIB);
}
