//! An HTTP proxy between a test's S3 client and a real S3 server (SeaweedFS, moto, s3s-fs)
//! that injects, on the requests a test names, the faults a real server does not produce on
//! demand: a 404 for an object that exists (read-after-write lag), a byte flipped in a body
//! on the way, another writer's write just before ours. Everything else passes unchanged,
//! headers and signature included, and every request is recorded with its answer's status.
//!
//! Shared by the archive's and the engine's tests (the engine includes this file by path).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Something run before a request is passed on (another writer's write, say).
pub(crate) type Hook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What to do to a matching request.
#[derive(Clone)]
pub(crate) enum Fault {
    /// Answer `404 NoSuchKey` without asking the server, as a lagging replica does.
    NotFound,
    /// Flip the bits of one byte in the middle of the request body, as a broken link does.
    FlipByte,
    /// Run the hook, then pass the request on.
    Before(Hook),
}

struct Rule {
    method: Method,
    /// Matched against the path and query, e.g. `/bucket/v1/001/1.ndjson.zst`.
    path_contains: String,
    /// Requests whose query contains this are not matched (e.g. `partNumber`).
    unless_query: Option<String>,
    left: u32,
    fault: Fault,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) status: u16,
    /// Whether a fault was injected into it.
    pub(crate) faulted: bool,
}

/// The running proxy; stops when dropped.
pub(crate) struct FaultProxy {
    /// `http://127.0.0.1:port`: the endpoint to give the client.
    pub(crate) endpoint: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let (task_rules, task_seen) = (rules.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (rules, seen, client, upstream) = (
                    task_rules.clone(),
                    task_seen.clone(),
                    client.clone(),
                    upstream.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (rules, seen, client, upstream) = (
                            rules.clone(),
                            seen.clone(),
                            client.clone(),
                            upstream.clone(),
                        );
                        async move {
                            Ok::<_, hyper::Error>(
                                handle(request, &rules, &seen, &client, &upstream).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            rules,
            seen,
            task,
        }
    }

    /// Injects `fault` into the next `times` requests with `method` whose path and query
    /// contain `path_contains`.
    pub(crate) fn inject(&self, method: Method, path_contains: &str, times: u32, fault: Fault) {
        self.add(method, path_contains, None, times, fault);
    }

    /// As [`inject`](Self::inject), skipping requests whose query contains `unless_query`.
    pub(crate) fn inject_unless(
        &self,
        method: Method,
        path_contains: &str,
        unless_query: &str,
        times: u32,
        fault: Fault,
    ) {
        self.add(
            method,
            path_contains,
            Some(unless_query.to_owned()),
            times,
            fault,
        );
    }

    fn add(
        &self,
        method: Method,
        path_contains: &str,
        unless_query: Option<String>,
        times: u32,
        fault: Fault,
    ) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_owned(),
            unless_query,
            left: times,
            fault,
        });
    }

    /// Faults injected so far.
    pub(crate) fn faulted(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.faulted)
            .count()
    }

    /// Every request so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The fault of the first matching rule with uses left, used up by one.
fn take_fault(rules: &Mutex<Vec<Rule>>, method: &Method, path: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let rule = rules.iter_mut().find(|r| {
        r.left > 0
            && r.method == method
            && path.contains(&r.path_contains)
            && !r.unless_query.as_ref().is_some_and(|u| query.contains(u))
    })?;
    rule.left -= 1;
    Some(rule.fault.clone())
}

async fn handle(
    request: Request<Incoming>,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let fault = take_fault(rules, &parts.method, &path);
    let mut record = Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        status: 0,
        faulted: fault.is_some(),
    };
    let mut body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return respond(seen, record, StatusCode::BAD_REQUEST, Vec::new()),
    };
    match fault {
        Some(Fault::NotFound) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist (injected by the test proxy).</Message><Key>{path}</Key></Error>"
            );
            return respond(seen, record, StatusCode::NOT_FOUND, xml.into_bytes());
        }
        Some(Fault::FlipByte) if !body.is_empty() => {
            let middle = body.len() / 2;
            body[middle] ^= 0xff;
        }
        Some(Fault::Before(hook)) => hook().await,
        _ => {}
    }
    parts.uri = format!("{upstream}{path}").parse().unwrap();
    let forwarded = Request::from_parts(parts, Full::new(Bytes::from(body)));
    match client.request(forwarded).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            record.status = parts.status.as_u16();
            seen.lock().unwrap().push(record);
            Response::from_parts(parts, Full::new(bytes))
        }
        Err(e) => respond(
            seen,
            record,
            StatusCode::BAD_GATEWAY,
            format!("proxy: {e}").into_bytes(),
        ),
    }
}

fn respond(
    seen: &Mutex<Vec<Seen>>,
    mut record: Seen,
    status: StatusCode,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    record.status = status.as_u16();
    seen.lock().unwrap().push(record);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
