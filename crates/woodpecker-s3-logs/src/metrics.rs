//! Prometheus metrics (`WOODPECKER_LOG_STORE_S3_METRICS_ADDR`): the engine's
//! [`EngineStats`] rendered with `prometheus-client` at each scrape, served over HTTP/1.1 by
//! hyper (already in the tree for the S3 client) on the engine's background runtime.
//!
//! The listener must never disturb the addon: connections are few and short (bounded count,
//! a deadline for the request head and one for the whole exchange, a bounded request head,
//! no keep-alive), and a failure of one connection is only logged.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use engine::{Engine, EngineStats};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::variables::{ListenAddr, METRICS_ADDR};

/// Every metric's name starts with this.
const PREFIX: &str = "woodpecker_s3_logs";

/// The one path served.
const METRICS_PATH: &str = "/metrics";

/// The OpenMetrics text format's `Content-Type`, for scrapers that ask for it.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; more are closed at once. A scraper needs one.
const MAX_CONNECTIONS: usize = 16;

/// Time allowed for a client to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for a whole connection, request to response.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest request head read (hyper's smallest buffer): a scrape needs a few hundred
/// bytes; a larger head is refused with 431.
const MAX_HEAD: usize = 8192;

/// How long a start waits for a previous addon to free the port (it exits within a second
/// of losing its host), like the spool lock's wait.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("invalid {}={addr}: cannot listen there: {source}", METRICS_ADDR.name)]
pub(crate) struct BindError {
    /// The configured address.
    addr: ListenAddr,
    /// The OS's refusal.
    source: io::Error,
}

/// Opens the listener on the engine's background runtime and serves there, away from the
/// host's calls. Called before the handshake, so an address that cannot be bound stops the
/// start with one error naming the variable.
pub(crate) async fn start(engine: Arc<Engine>, addr: ListenAddr) -> Result<(), BindError> {
    let runtime = engine.background().clone();
    let listener = match runtime.spawn(bind(addr)).await {
        Ok(bound) => bound?,
        Err(join) => {
            return Err(BindError {
                addr,
                source: io::Error::other(join),
            });
        }
    };
    match listener.local_addr() {
        Ok(local) => tracing::info!("serving metrics at http://{local}{METRICS_PATH}"),
        Err(_) => tracing::info!("serving metrics at {addr}"),
    }
    // Weak: the engine owns the runtime this task runs on.
    runtime.spawn(serve(listener, Arc::downgrade(&engine)));
    Ok(())
}

/// Opens the listening socket, waiting up to [`BIND_WAIT`] while the port is in use.
async fn bind(addr: ListenAddr) -> Result<TcpListener, BindError> {
    let deadline = Instant::now() + BIND_WAIT;
    loop {
        match bind_once(addr).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result.map_err(|source| BindError { addr, source }),
        }
    }
}

async fn bind_once(addr: ListenAddr) -> io::Result<TcpListener> {
    match addr {
        ListenAddr::Socket(addr) => TcpListener::bind(addr).await,
        // As Go does for `:port`: both stacks where the host has IPv6, else IPv4 alone.
        ListenAddr::AllInterfaces(port) => {
            match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await {
                Err(e) if e.kind() != io::ErrorKind::AddrInUse => {
                    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await
                }
                result => result,
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
async fn serve(listener: TcpListener, engine: Weak<Engine>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pass, and do not spin meanwhile.
                tracing::warn!(%error, "metrics listener: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics listener: too many connections, closing one");
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(respond(&request, engine).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics request failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
            }
            drop(slot);
        });
    }
}

/// The answer to one request: the metrics, 404 elsewhere, 405 for other methods.
async fn respond(request: &Request<Incoming>, engine: Weak<Engine>) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let openmetrics = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let Some(engine) = engine.upgrade() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log store is stopping\n",
        );
    };
    // Counting the steps takes each one's lock in turn, and an append with
    // `SPOOL_SYNC=always` holds its step's across an fsync: not on the archive thread.
    let rendered =
        match tokio::task::spawn_blocking(move || render(engine.stats(), openmetrics)).await {
            Ok(rendered) => rendered.map_err(|e| e.to_string()),
            Err(join) => Err(join.to_string()),
        };
    match rendered {
        Ok((body, content_type)) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot render the metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The metrics of `stats` in Prometheus's text format (0.0.4), or OpenMetrics text when the
/// scraper asks for it; with the body's `Content-Type`.
pub(crate) fn render(
    stats: EngineStats,
    openmetrics: bool,
) -> Result<(String, &'static str), std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Snapshot(stats)));
    let mut body = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut body, &registry)?;
        Ok((body, OPENMETRICS_CONTENT_TYPE))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, &registry)?;
        Ok((
            body,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ))
    }
}

/// One scrape's figures, encoded as metrics.
#[derive(Debug)]
struct Snapshot(EngineStats);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &mut encoder;
        counter(
            e,
            "appends",
            "LogAppend calls that stored lines.",
            s.appends,
        )?;
        counter(
            e,
            "appended_entries",
            "Log entries (lines) stored by LogAppend calls.",
            s.entries_appended,
        )?;
        counter(
            e,
            "appended_bytes",
            "Bytes of log entries written to the spool.",
            s.spool_bytes_written,
        )?;
        counter(e, "finds", "LogFind calls (log reads).", s.finds)?;
        counter(e, "deletes", "LogDelete calls.", s.deletes)?;
        gauge(
            e,
            "spool_bytes",
            "Bytes of log lines in the spool that are not archived yet.",
            s.spool_bytes,
        )?;
        gauge(
            e,
            "spool_steps",
            "Steps with log lines in the spool that are not archived yet.",
            s.steps_pending,
        )?;
        gauge(
            e,
            "archive_queue_steps",
            "Steps waiting to be archived: due, being archived, or waiting to retry after a failure.",
            s.archive_queue,
        )?;
        let oldest = s.oldest_unarchived.unwrap_or_default().as_secs_f64();
        gauge(
            e,
            "oldest_unarchived_line_age_seconds",
            "How long the oldest log line not archived yet has waited (0 when all are archived).",
            oldest,
        )?;
        counter(
            e,
            "archive_uploads",
            "Archive objects uploaded and verified.",
            s.archive_uploads,
        )?;
        counter(
            e,
            "archive_uploaded_bytes",
            "Compressed bytes of the archive objects uploaded.",
            s.archive_bytes_uploaded,
        )?;
        let help = "Archive runs that failed (each is retried), by cause: the S3 error code (AccessDenied, NoSuchBucket, SlowDown, ...), timeout or dispatch for network failures, io or corrupt for local ones.";
        let mut family =
            e.encode_descriptor("archive_failures", help, None, MetricType::Counter)?;
        for (code, count) in &s.archive_failures_by_code {
            let labels = [("code", *code)];
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let latency = &s.upload_latency;
        let buckets: Vec<(f64, u64)> = latency
            .bounds
            .iter()
            .map(Duration::as_secs_f64)
            .zip(latency.counts.iter().copied())
            .collect();
        e.encode_descriptor(
            "archive_upload_duration",
            "Time per archive upload attempt, from the request to the end of its verification, successful or not.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            latency.sum.as_secs_f64(),
            latency.count(),
            &buckets,
            None,
        )
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use engine::Histogram;

    use super::*;

    fn stats() -> EngineStats {
        let mut latency = Histogram::default();
        latency.counts[0] = 2; // <= 10 ms
        latency.counts[6] = 1; // (500 ms, 1 s]
        latency.counts[latency.bounds.len()] = 1; // above 120 s
        latency.sum = Duration::from_millis(130_815);
        EngineStats {
            appends: 7,
            entries_appended: 700,
            spool_bytes_written: 65_536,
            finds: 3,
            deletes: 1,
            archive_uploads: 4,
            archive_bytes_uploaded: 9_000,
            archive_failures: 3,
            archive_failures_by_code: BTreeMap::from([("NoSuchBucket", 2), ("timeout", 1)]),
            upload_latency: latency,
            steps_pending: 2,
            archive_queue: 1,
            spool_bytes: 4_096,
            oldest_unarchived: Some(Duration::from_millis(90_500)),
            ..EngineStats::default()
        }
    }

    /// The value of the sample line `name` (with its labels, as written) in `text`.
    fn sample(text: &str, name: &str) -> String {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
            .to_owned()
    }

    #[test]
    fn every_figure_is_rendered_with_help_and_type() {
        let (text, content_type) = render(stats(), false).unwrap();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        for (name, value) in [
            ("woodpecker_s3_logs_appends_total", "7"),
            ("woodpecker_s3_logs_appended_entries_total", "700"),
            ("woodpecker_s3_logs_appended_bytes_total", "65536"),
            ("woodpecker_s3_logs_finds_total", "3"),
            ("woodpecker_s3_logs_deletes_total", "1"),
            ("woodpecker_s3_logs_spool_bytes", "4096"),
            ("woodpecker_s3_logs_spool_steps", "2"),
            ("woodpecker_s3_logs_archive_queue_steps", "1"),
            (
                "woodpecker_s3_logs_oldest_unarchived_line_age_seconds",
                "90.5",
            ),
            ("woodpecker_s3_logs_archive_uploads_total", "4"),
            ("woodpecker_s3_logs_archive_uploaded_bytes_total", "9000"),
            (
                "woodpecker_s3_logs_archive_failures_total{code=\"NoSuchBucket\"}",
                "2",
            ),
            (
                "woodpecker_s3_logs_archive_failures_total{code=\"timeout\"}",
                "1",
            ),
        ] {
            assert_eq!(sample(&text, name), value, "{name}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!((families, helps), (13, 13), "{text}");
    }

    #[test]
    fn upload_latency_is_a_cumulative_histogram_in_seconds() {
        let (text, _) = render(stats(), false).unwrap();
        let name = "woodpecker_s3_logs_archive_upload_duration_seconds";
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{text}"
        );
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.01\"}}")), "2");
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.5\"}}")), "2");
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"1\"}}")), "3");
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"120\"}}")), "3");
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"+Inf\"}}")), "4");
        assert_eq!(sample(&text, &format!("{name}_count")), "4");
        assert_eq!(sample(&text, &format!("{name}_sum")), "130.815");
    }

    #[test]
    fn openmetrics_is_served_to_scrapers_that_ask() {
        let (text, content_type) = render(stats(), true).unwrap();
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE woodpecker_s3_logs_appends counter\n"));
        assert_eq!(sample(&text, "woodpecker_s3_logs_appends_total"), "7");
    }

    #[test]
    fn a_fresh_engine_renders_zeros_and_no_failure_series() {
        let (text, _) = render(EngineStats::default(), false).unwrap();
        assert_eq!(sample(&text, "woodpecker_s3_logs_appends_total"), "0");
        assert_eq!(
            sample(
                &text,
                "woodpecker_s3_logs_oldest_unarchived_line_age_seconds"
            ),
            "0.0"
        );
        assert!(!text.contains("archive_failures_total{"), "{text}");
    }

    #[test]
    fn listen_addresses_parse_as_documented() {
        let parse = |value| METRICS_ADDR.parse_value(value);
        assert_eq!(
            parse("127.0.0.1:9464"),
            Ok(ListenAddr::Socket("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            parse(" [::1]:9464 "),
            Ok(ListenAddr::Socket("[::1]:9464".parse().unwrap()))
        );
        assert_eq!(parse(":9464"), Ok(ListenAddr::AllInterfaces(9464)));
        assert_eq!(
            parse("localhost:9464"),
            Ok(ListenAddr::Socket("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(parse(":9464").unwrap().to_string(), ":9464");
        for bad in [
            "9464",
            "metrics.internal:9464",
            ":",
            ":http",
            "127.0.0.1",
            "1.2.3.4:70000",
            ":0",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.variable, METRICS_ADDR.name, "{bad}");
            assert_eq!(err.value, bad);
            assert!(
                err.to_string()
                    .starts_with("invalid WOODPECKER_LOG_STORE_S3_METRICS_ADDR="),
                "{err}"
            );
        }
        assert!(parse(":0").unwrap_err().reason.contains("random port"));
    }

    /// `:PORT` listens on every interface, loopback included (IPv4 too where IPv6 is on).
    #[tokio::test]
    async fn all_interfaces_include_ipv4_loopback() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = bind(ListenAddr::AllInterfaces(port)).await.unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        accepted.await.unwrap().unwrap();
    }

    /// A port held by another process: after the wait for a previous addon, one error that
    /// names the variable and its value.
    #[tokio::test]
    async fn bound_addresses_in_use_are_one_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ListenAddr::Socket(taken.local_addr().unwrap());
        let started = Instant::now();
        let err = tokio::time::timeout(BIND_WAIT * 2, bind(addr))
            .await
            .unwrap()
            .unwrap_err();
        assert!(started.elapsed() >= BIND_WAIT, "waits for a previous addon");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "invalid WOODPECKER_LOG_STORE_S3_METRICS_ADDR={addr}: cannot listen there: "
            )),
            "{text}"
        );
    }
}
