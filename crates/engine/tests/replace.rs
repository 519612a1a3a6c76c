//! Issue 12, finding 3: a re-archive (late lines merged into the step's object) must never
//! replace the whole log with the late lines alone, nor overwrite a version someone else
//! wrote meanwhile. The engine on real S3 servers behind the archive's fault proxy
//! (crates/archive/tests/common/fault_proxy.rs): SeaweedFS, which honours conditional
//! writes, and s3s-fs told to ignore them (as Garage does) for the fallback.

#[path = "../../archive/tests/common/mod.rs"]
mod archive_common;
mod common;

use std::sync::Arc;
use std::time::Duration;

use archive::{ConditionalWrites, ObjectStore, S3Settings, S3Store};
use archive_common::fault_proxy::{Fault, FaultProxy, Hook};
use archive_common::{connect, external, test_settings, unique_prefix};
use common::{entry, fast_settings, step, texts};
use engine::format::{ObjectWriter, decode_object};
use engine::{Clock, Engine, ManualClock};
use hyper::Method;
use logservice::{LogEntry, LogService};

/// An engine on a manual clock archiving into `store`.
struct Rig {
    dir: tempfile::TempDir,
    engine: Engine,
    clock: ManualClock,
    /// The same bucket and folder, not through the proxy: what is really stored.
    direct: Arc<S3Store>,
}

impl Rig {
    async fn start(store: Arc<S3Store>, direct: Arc<S3Store>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let engine = Engine::start_with_clock(
            fast_settings(dir.path().join("spool")),
            store,
            Clock::Manual(clock.clone()),
        )
        .await
        .unwrap();
        engine.ready().await.unwrap();
        Self {
            dir,
            engine,
            clock,
            direct,
        }
    }

    /// Moves time on past the grace period and any retry backoff, `times` times, waiting
    /// for the archive runs due each time.
    async fn run_archives(&self, times: u32) {
        for _ in 0..times {
            self.clock.advance(Duration::from_secs(1));
            self.clock.settle().await;
        }
    }

    fn key(&self, id: i64) -> String {
        self.engine.object_key(logservice::StepId::new(id).unwrap())
    }

    /// The step's object as stored.
    async fn object(&self, id: i64) -> Vec<(i64, String)> {
        let (bytes, _) = self.direct.get(&self.key(id)).await.unwrap().unwrap();
        texts(&decode_object(&bytes).unwrap())
    }

    /// The step's segment files in the spool.
    fn segments(&self, id: i64) -> usize {
        std::fs::read_dir(self.dir.path().join("spool").join("steps"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(&format!("{id}.")) && name.ends_with(".ndjson")
            })
            .count()
    }

    async fn append(&self, id: i64, lines: &[(i64, &str)]) {
        let entries: Vec<LogEntry> = lines.iter().map(|(l, t)| entry(id, *l, t)).collect();
        self.engine.log_append(&step(id), entries).await.unwrap();
    }
}

fn lines(range: std::ops::Range<i64>) -> Vec<(i64, String)> {
    range.map(|l| (l, format!("line {l}"))).collect()
}

async fn archive_first_lines(rig: &Rig, id: i64) {
    let first = lines(0..3);
    let first: Vec<(i64, &str)> = first.iter().map(|(l, t)| (*l, t.as_str())).collect();
    rig.append(id, &first).await;
    rig.engine.step_finished(&step(id)).await;
    rig.run_archives(1).await;
    assert_eq!(rig.object(id).await, lines(0..3), "first archive");
    assert_eq!(rig.engine.stats().archive_uploads, 1);
}

fn folder_settings(endpoint: &str, bucket: &str, name: &str) -> S3Settings {
    let mut settings = test_settings(endpoint, bucket);
    settings.folder = unique_prefix(name);
    settings
}

/// A read of the archived object answers 404 once (a lagging replica) just before late
/// lines are merged into it: the object must still hold every line afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_404_before_a_re_archive_loses_no_line() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let proxy = FaultProxy::start(&server.endpoint).await;
    let settings = folder_settings(&proxy.endpoint, &server.bucket, "lagging-404");
    let mut direct_settings = settings.clone();
    direct_settings.endpoint = Some(server.endpoint.clone());
    let store = Arc::new(connect(settings, &server.access_key, &server.secret_key).await);
    let direct = Arc::new(connect(direct_settings, &server.access_key, &server.secret_key).await);
    let rig = Rig::start(store.clone(), direct).await;

    archive_first_lines(&rig, 1).await;
    proxy.inject(Method::GET, &rig.key(1), 1, Fault::NotFound);
    rig.append(1, &[(3, "line 3")]).await;
    rig.run_archives(4).await;

    assert_eq!(proxy.faulted(), 1, "the 404 was served");
    assert_eq!(rig.object(1).await, lines(0..4), "no line lost");
    assert_eq!(
        texts(&rig.engine.log_find(&step(1)).await.unwrap()),
        lines(0..4)
    );
    assert_eq!(
        store.conditional_writes().await.unwrap(),
        ConditionalWrites::Honoured
    );
    rig.engine.shutdown().await.unwrap();
}

/// Another writer replaces the object between the engine's read and its write: the
/// conditional write is refused (412), the engine reads again and merges, and the object
/// ends with the other writer's lines and the late ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_replacement_is_detected_and_merged() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let proxy = FaultProxy::start(&server.endpoint).await;
    let settings = folder_settings(&proxy.endpoint, &server.bucket, "concurrent");
    let mut direct_settings = settings.clone();
    direct_settings.endpoint = Some(server.endpoint.clone());
    let store = Arc::new(connect(settings, &server.access_key, &server.secret_key).await);
    let direct = Arc::new(connect(direct_settings, &server.access_key, &server.secret_key).await);
    let rig = Rig::start(store, direct.clone()).await;
    archive_first_lines(&rig, 2).await;

    // The other writer: lines 0..3 and its own line 10, written straight to the server.
    let key = rig.key(2);
    let scratch = tempfile::tempdir().unwrap();
    let theirs = scratch.path().join("theirs");
    let mut writer = ObjectWriter::new(Vec::new(), 3).unwrap();
    for (line, text) in lines(0..3).into_iter().chain([(10, "theirs".to_owned())]) {
        writer.push(&entry(2, line, &text)).unwrap();
    }
    let (bytes, summary) = writer.finish().unwrap();
    std::fs::write(&theirs, bytes).unwrap();
    let meta = summary.to_meta(logservice::StepId::new(2).unwrap());
    let (hook_store, hook_key) = (direct.clone(), key.clone());
    let hook: Hook = Arc::new(move || {
        let (store, key, path, meta) = (
            hook_store.clone(),
            hook_key.clone(),
            theirs.clone(),
            meta.clone(),
        );
        Box::pin(async move {
            store.put_file(&key, &path, &meta).await.unwrap();
        })
    });
    proxy.inject_unless(Method::PUT, &key, "partNumber", 1, Fault::Before(hook));

    rig.append(2, &[(3, "line 3")]).await;
    rig.run_archives(4).await;

    assert_eq!(proxy.faulted(), 1, "the other writer wrote");
    let refused = proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::PUT && s.path.contains(&key) && s.status == 412)
        .count();
    assert_eq!(
        refused, 1,
        "the write over the other writer's version was refused"
    );
    let mut expected = lines(0..4);
    expected.push((10, "theirs".into()));
    assert_eq!(rig.object(2).await, expected, "both writers' lines kept");
    rig.engine.shutdown().await.unwrap();
}

/// s3s-fs (a real S3 server on the local file system) that forgets `If-None-Match` and
/// `If-Match` before writing, as servers that ignore conditional writes do (Garage): the
/// headers are signed, so a proxy cannot strip them, and no server here ignores them.
struct IgnoresConditions(s3s_fs::FileSystem);

#[async_trait::async_trait]
impl s3s::S3 for IgnoresConditions {
    async fn put_object(
        &self,
        mut req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        req.input.if_none_match = None;
        req.input.if_match = None;
        self.0.put_object(req).await
    }
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(req).await
    }
    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(req).await
    }
    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.0.delete_object(req).await
    }
    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.0.list_objects_v2(req).await
    }
}

/// s3s-fs on plain http on 127.0.0.1; returns the endpoint.
async fn start_s3s(root: &std::path::Path) -> (String, tokio::task::JoinHandle<()>) {
    const KEY: &str = "s3s-wire-key";
    const SECRET: &str = "s3s-wire-secret";
    std::fs::create_dir_all(root.join("ci-logs")).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(IgnoresConditions(
        s3s_fs::FileSystem::new(root).unwrap(),
    ));
    builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (endpoint, task)
}

/// On a server that ignores conditional writes the store says so, and the engine falls back
/// to its own record: the object it archived reads as missing once, the run is retried
/// instead of writing the late lines alone, and no line is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_conditional_writes_gets_the_fallback_and_loses_no_line() {
    let root = tempfile::tempdir().unwrap();
    let (endpoint, server) = start_s3s(root.path()).await;
    let proxy = FaultProxy::start(&endpoint).await;
    let settings = folder_settings(&proxy.endpoint, "ci-logs", "ignores-conditions");
    let mut direct_settings = settings.clone();
    direct_settings.endpoint = Some(endpoint.clone());
    let store = Arc::new(connect(settings, "s3s-wire-key", "s3s-wire-secret").await);
    let direct = Arc::new(connect(direct_settings, "s3s-wire-key", "s3s-wire-secret").await);
    assert_eq!(
        store.conditional_writes().await.unwrap(),
        ConditionalWrites::Ignored
    );
    let rig = Rig::start(store, direct).await;

    archive_first_lines(&rig, 3).await;
    proxy.inject(Method::GET, &rig.key(3), 1, Fault::NotFound);
    rig.append(3, &[(3, "line 3")]).await;
    rig.run_archives(4).await;

    assert_eq!(proxy.faulted(), 1, "the 404 was served");
    assert_eq!(rig.object(3).await, lines(0..4), "no line lost");
    let failures = rig.engine.stats().archive_failures_by_code;
    assert_eq!(failures.get("missing_previous"), Some(&1), "{failures:?}");
    rig.engine.shutdown().await.unwrap();
    server.abort();
}

/// Finding 7 seen from the engine: while every attempt's body arrives damaged (SeaweedFS
/// refuses it for its Content-MD5), the run fails and the spool keeps the lines, reads stay
/// whole; once a body arrives intact, the object reads back right and the spool is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_uploads_keep_the_spool_until_one_arrives_intact() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let proxy = FaultProxy::start(&server.endpoint).await;
    let settings = folder_settings(&proxy.endpoint, &server.bucket, "damaged-uploads");
    let mut direct_settings = settings.clone();
    direct_settings.endpoint = Some(server.endpoint.clone());
    let store = Arc::new(connect(settings, &server.access_key, &server.secret_key).await);
    let direct = Arc::new(connect(direct_settings, &server.access_key, &server.secret_key).await);
    let rig = Rig::start(store, direct).await;

    // Every attempt of the first run (three sends of the same file) arrives damaged.
    proxy.inject_unless(Method::PUT, &rig.key(4), "partNumber", 3, Fault::FlipByte);
    let first = lines(0..3);
    let first: Vec<(i64, &str)> = first.iter().map(|(l, t)| (*l, t.as_str())).collect();
    rig.append(4, &first).await;
    rig.engine.step_finished(&step(4)).await;
    rig.run_archives(1).await;
    assert_eq!(proxy.faulted(), 3);
    assert_eq!(
        rig.engine.stats().archive_uploads,
        0,
        "nothing counts as stored"
    );
    assert!(rig.segments(4) > 0, "the spool keeps the lines");
    assert_eq!(
        texts(&rig.engine.log_find(&step(4)).await.unwrap()),
        lines(0..3)
    );

    rig.run_archives(2).await;
    assert_eq!(rig.object(4).await, lines(0..3));
    assert_eq!(
        rig.segments(4),
        0,
        "the spool is emptied once the object is verified"
    );
    let failures = rig.engine.stats().archive_failures_by_code;
    assert_eq!(failures.get("BadDigest"), Some(&1), "{failures:?}");
    rig.engine.shutdown().await.unwrap();
}

/// Without any record of the earlier archive (a new spool, as after a restart that lost it),
/// the lagging 404 is met by the conditional write: `If-None-Match: *` is refused (412), the
/// object is read again and merged, and no line is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_record_a_lagging_404_is_caught_by_if_none_match() {
    let Some(server) = external("SEAWEEDFS") else {
        return;
    };
    let proxy = FaultProxy::start(&server.endpoint).await;
    let settings = folder_settings(&proxy.endpoint, &server.bucket, "no-record");
    let mut direct_settings = settings.clone();
    direct_settings.endpoint = Some(server.endpoint.clone());
    let store = Arc::new(connect(settings, &server.access_key, &server.secret_key).await);
    let direct = Arc::new(connect(direct_settings, &server.access_key, &server.secret_key).await);
    let earlier = Rig::start(store.clone(), direct.clone()).await;
    archive_first_lines(&earlier, 5).await;
    earlier.engine.shutdown().await.unwrap();

    let rig = Rig::start(store, direct).await;
    let key = rig.key(5);
    proxy.inject(Method::GET, &key, 1, Fault::NotFound);
    rig.append(5, &[(3, "line 3")]).await;
    rig.engine.step_finished(&step(5)).await;
    rig.run_archives(2).await;

    assert_eq!(proxy.faulted(), 1, "the 404 was served");
    let refused = proxy
        .seen()
        .iter()
        .filter(|s| {
            s.method == Method::PUT
                && s.path.contains(&key)
                && s.status == 412
                && s.headers.get("if-none-match").is_some_and(|v| v == "*")
        })
        .count();
    assert_eq!(refused, 1, "If-None-Match: * refused the blind write");
    assert_eq!(rig.object(5).await, lines(0..4), "no line lost");
    rig.engine.shutdown().await.unwrap();
}
