//! Go's `net/rpc` with its default gob codec, both sides (spec §5).
//!
//! One gob [`Decoder`] and one gob [`Encoder`] per stream and direction, as Go's
//! `rpc.NewClient` and `rpc.ServeConn` do: type definitions are per stream (spec §7.12).
//!
//! Server: a reader task decodes `Request` header + body pairs and runs each call in its own
//! task, so calls are concurrent like Go's `go service.call`; a single writer task owns the
//! encoder and writes each `Response` header and body contiguously, so two replies can never
//! interleave and no type definition can trail the value that uses it (spec §7.11).
//!
//! Client: calls are encoded under one lock and handed to one writer task in that order; a
//! reader task matches replies to calls by `Seq` only, as Go's client does.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use gob::{Decoder, Encoder, Limits, Struct, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// A boxed, sendable future, the return type of [`Handler::call`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One net/rpc service: what Go registers with `rpc.RegisterName`.
pub trait Handler: Send + Sync + 'static {
    /// The method names served, without the service prefix (e.g. `"LogFind"`). A call to any
    /// other name is answered `rpc: can't find method <Service.Method>` without reaching
    /// [`Handler::call`], exactly as Go answers it.
    fn methods(&self) -> &[&str];

    /// Runs one call. `arg` is the decoded request body. `Ok` is the reply body and must have
    /// the gob type the caller decodes into (for go-plugin's `Plugin.*`: [`Value::Bytes`]);
    /// `Err` is sent as the RPC error text, which the Go caller gets as `rpc.ServerError`.
    fn call<'a>(&'a self, method: &'a str, arg: Value) -> BoxFuture<'a, Result<Value, String>>;
}

/// Service name → handler, for one stream.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<String, Arc<dyn Handler>>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, service: impl Into<String>, handler: Arc<dyn Handler>) {
        self.services.insert(service.into(), handler);
    }

    /// Splits `Service.Method` at the last dot and finds the handler, with Go's error texts.
    fn resolve(&self, service_method: &str) -> Result<(Arc<dyn Handler>, String), String> {
        let Some((service, method)) = service_method.rsplit_once('.') else {
            return Err(format!(
                "rpc: service/method request ill-formed: {service_method}"
            ));
        };
        let Some(handler) = self.services.get(service) else {
            return Err(format!("rpc: can't find service {service_method}"));
        };
        if !handler.methods().contains(&method) {
            return Err(format!("rpc: can't find method {service_method}"));
        }
        Ok((handler.clone(), method.to_string()))
    }
}

/// Why reading gob values from a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Gob(#[from] gob::Error),
    #[error("unexpected EOF inside a gob message")]
    UnexpectedEof,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Reads gob values from a byte stream, reassembling messages across reads (yamux frames
/// and gob messages do not line up, spec §5.2).
pub struct GobReader<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    decoder: Decoder,
    limits: Limits,
}

impl<R: AsyncRead + Unpin> GobReader<R> {
    pub fn new(reader: R, limits: Limits) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            pos: 0,
            decoder: Decoder::new(limits),
            limits,
        }
    }

    /// The next value, skipping over type definitions. `Ok(None)` is a clean end of stream
    /// at a message boundary.
    pub async fn read_value(&mut self) -> Result<Option<Value>, ReadError> {
        loop {
            let Some(payload) = self.next_message().await? else {
                return Ok(None);
            };
            let (start, end) = payload;
            let decoded = self.decoder.decode_message(&self.buf[start..end]);
            self.pos = end;
            if let Some(value) = decoded? {
                return Ok(Some(value));
            }
        }
    }

    /// Skips the message at the read position whatever its size, without buffering it: how a
    /// request body over the limit is passed over so the stream stays in step.
    async fn skip_message(&mut self) -> Result<(), ReadError> {
        let avail = &self.buf[self.pos..];
        let Some((prefix, len)) = gob::message_len(avail, usize::MAX)? else {
            return Err(ReadError::UnexpectedEof);
        };
        let mut left = (prefix + len) as u64;
        let buffered = (avail.len() as u64).min(left);
        self.pos += buffered as usize;
        left -= buffered;
        let mut scratch = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = scratch
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.reader.read(&mut scratch[..want]).await?;
            if n == 0 {
                return Err(ReadError::UnexpectedEof);
            }
            left -= n as u64;
        }
        Ok(())
    }

    fn into_inner(self) -> R {
        self.reader
    }

    /// Reads until a whole message is buffered; returns its payload range in `buf`.
    async fn next_message(&mut self) -> Result<Option<(usize, usize)>, ReadError> {
        // Drop consumed bytes once they dominate the buffer, keeping copies amortised.
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        loop {
            let avail = &self.buf[self.pos..];
            if let Some((prefix, len)) = gob::message_len(avail, self.limits.max_message_len)? {
                if len == 0 {
                    return Err(gob::Error::EmptyMessage.into());
                }
                if avail.len() >= prefix + len {
                    let start = self.pos + prefix;
                    return Ok(Some((start, start + len)));
                }
            }
            // Grow by what arrives, not by what the peer announced: a hostile length prefix
            // alone never makes us allocate.
            self.buf.reserve(64 * 1024);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return if self.pos == self.buf.len() {
                    Ok(None)
                } else {
                    Err(ReadError::UnexpectedEof)
                };
            }
        }
    }
}

fn request_header(service_method: &str, seq: u64) -> Value {
    Value::Struct(Struct {
        name: "Request".into(),
        fields: vec![
            ("ServiceMethod".into(), Value::String(service_method.into())),
            ("Seq".into(), Value::Uint(seq)),
        ],
    })
}

fn response_header(service_method: &str, seq: u64, error: &str) -> Value {
    Value::Struct(Struct {
        name: "Response".into(),
        fields: vec![
            ("ServiceMethod".into(), Value::String(service_method.into())),
            ("Seq".into(), Value::Uint(seq)),
            ("Error".into(), Value::String(error.into())),
        ],
    })
}

/// `ServiceMethod` and `Seq` of a request or response header. Missing fields were zero on
/// the sender's side; a present field of the wrong type is a protocol error.
fn header_fields(header: &Value) -> Result<(String, u64, String), ReadError> {
    if !matches!(header, Value::Struct(_)) {
        return Err(ReadError::Malformed("header: not a struct"));
    }
    let text = |name| match header.field(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ReadError::Malformed(
            "header: a string field has another type",
        )),
    };
    let seq = match header.field("Seq") {
        None => 0,
        Some(Value::Uint(u)) => *u,
        Some(_) => {
            return Err(ReadError::Malformed(
                "header: Seq is not an unsigned integer",
            ));
        }
    };
    Ok((text("ServiceMethod")?, seq, text("Error")?))
}

struct Reply {
    seq: u64,
    service_method: String,
    result: Result<Value, String>,
}

/// Serves net/rpc on one stream until the peer closes it, the stream breaks, or it sends
/// bytes that are not a valid request.
///
/// A request body over the size limit is skipped unread and answered with an RPC error; the
/// stream goes on. On invalid bytes (bad gob, a header over the limit, a header that is not
/// a `Request`) this does what Go's `ServeCodec` does: stop reading, let the calls already
/// running finish and answer, then close the stream. The gob state of a stream is
/// unrecoverable after a decode error, so there is no way to keep serving it; other streams
/// are not affected.
pub async fn serve<S>(stream: S, router: Arc<Router>, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(write_replies(write_half, rx));
    let mut reader = GobReader::new(read_half, limits);
    loop {
        match read_request(&mut reader).await {
            Ok(None) => break,
            Ok(Some((service_method, seq, arg))) => match (router.resolve(&service_method), arg) {
                (Err(error), _) | (Ok(_), Err(error)) => {
                    tracing::debug!(%service_method, seq, %error, "rpc call refused");
                    let _ = tx.send(Reply {
                        seq,
                        service_method,
                        result: Err(error),
                    });
                }
                (Ok((handler, method)), Ok(arg)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let call = AssertUnwindSafe(handler.call(&method, arg)).catch_unwind();
                        // A panicking handler still answers, or the Go caller would wait
                        // forever (net/rpc calls have no timeout). The panic hook has
                        // logged the details.
                        let result = call.await.unwrap_or_else(|_| {
                            Err(format!("{service_method}: the plugin panicked"))
                        });
                        let _ = tx.send(Reply {
                            seq,
                            service_method,
                            result,
                        });
                    });
                }
            },
            Err(error) => {
                tracing::warn!(%error, "closing an rpc stream after unreadable input");
                // Close our side so the peer's client fails its calls instead of waiting,
                // and keep draining its side: a peer blocked on flow control in the middle
                // of a write would otherwise hang forever (a Go net/rpc client holds its
                // send lock while writing, so every later call would hang behind it).
                drop(tx);
                let (mut rest, mut sink) = (reader.into_inner(), tokio::io::sink());
                let drain = tokio::io::copy(&mut rest, &mut sink);
                let _ = tokio::join!(writer, drain);
                return;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A request as the server reads it: `ServiceMethod`, `Seq` and the decoded body, or why the
/// body was refused unread (it was over the size limit).
pub type Request = (String, u64, Result<Value, String>);

/// Reads every request in `data` with the server's own reader, stopping at the first error:
/// the net/rpc reader on a plain byte slice, for fuzzing and golden tests. Never panics and
/// never allocates more than `limits` and the input justify.
pub fn read_requests(data: &[u8], limits: Limits) -> (Vec<Request>, Option<ReadError>) {
    let mut reader = GobReader::new(data, limits);
    let mut requests = Vec::new();
    // A slice never returns Pending, so this future completes in one poll.
    futures::executor::block_on(async {
        loop {
            match read_request(&mut reader).await {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => return (requests, None),
                Err(e) => return (requests, Some(e)),
            }
        }
    })
}

async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut GobReader<R>,
) -> Result<Option<Request>, ReadError> {
    let Some(header) = reader.read_value().await? else {
        return Ok(None);
    };
    let (service_method, seq, _) = header_fields(&header)?;
    let body = match reader.read_value().await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => return Err(ReadError::UnexpectedEof),
        Err(ReadError::Gob(gob::Error::MessageTooLong { len, limit })) => {
            reader.skip_message().await?;
            Err(format!(
                "{service_method}: the request of {len} bytes is over the plugin's limit of {limit} bytes"
            ))
        }
        Err(e) => return Err(e),
    };
    Ok(Some((service_method, seq, body)))
}

/// Replies up to this size are copied behind their header and sent in one write.
const SMALL_REPLY: usize = 64 << 10;

/// The one writer of a server stream; ends (closing the stream) when every sender is gone.
async fn write_replies<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Reply>) {
    let mut encoder = Encoder::new();
    let mut header = Vec::new();
    while let Some(reply) = rx.recv().await {
        header.clear();
        let body = encode_reply(&mut encoder, reply, &mut header);
        // A small reply goes out in one write, so the peer gets it in one yamux frame; a
        // large body is written from its own buffer, not copied: this task is the stream's
        // only writer, so nothing can come between the two writes.
        let written = if body.len() <= SMALL_REPLY {
            header.extend_from_slice(&body);
            w.write_all(&header).await
        } else {
            match w.write_all(&header).await {
                Ok(()) => w.write_all(&body).await,
                Err(e) => Err(e),
            }
        };
        if let Err(error) = written {
            tracing::debug!(%error, "rpc stream closed while replying");
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Appends the `Response` header for `reply` to `out` and returns the encoded body.
///
/// The body is encoded first, into its own buffer: gob's encoder changes nothing when it
/// refuses a value, so a handler result gob cannot express (say, a map) turns into a normal
/// RPC error instead of a broken stream. The header still goes first on the wire. This
/// order would misplace a definition only if a body were a struct of exactly the header's
/// shape (`Response{ServiceMethod, Seq, Error}`) on a stream's first reply, which no
/// go-plugin method returns.
///
/// A `[]byte` reply (every reply of a Woodpecker addon: LogFind's answer can be hundreds of
/// MiB) is not copied: `out` gets the header and the body message's prefix, and the bytes
/// themselves are returned as they are.
fn encode_reply(encoder: &mut Encoder, reply: Reply, out: &mut Vec<u8>) -> Vec<u8> {
    let reply = match reply.result {
        Ok(Value::Bytes(bytes)) => {
            encoder
                .encode(&response_header(&reply.service_method, reply.seq, ""), out)
                .expect("a Response header is always encodable");
            gob::bytes_message_prefix(bytes.len(), out);
            return bytes;
        }
        _ => reply,
    };
    let mut body = Vec::new();
    let error = match reply.result {
        Ok(value) => match encoder.encode(&value, &mut body) {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!(service_method = %reply.service_method, error = %e, "a handler returned a reply gob cannot encode");
                format!("{}: cannot encode the reply: {e}", reply.service_method)
            }
        },
        Err(e) if e.is_empty() => "unknown error".to_string(),
        Err(e) => e,
    };
    if !error.is_empty() {
        // Go always sends a body after an error header (an empty struct); without it the
        // client would read the next header as this body (spec §7.10).
        body.clear();
        encoder
            .encode(&Value::empty_struct(), &mut body)
            .expect("the empty struct is always encodable");
    }
    encoder
        .encode(
            &response_header(&reply.service_method, reply.seq, &error),
            out,
        )
        .expect("a Response header is always encodable");
    body
}

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CallError {
    /// The server answered with an error: Go's `rpc.ServerError`.
    #[error("{0}")]
    Server(String),
    /// The stream is gone; this and every later call fails (Go's `rpc.ErrShutdown`).
    #[error("connection is shut down: {0}")]
    Shutdown(String),
    /// The argument could not be gob-encoded.
    #[error("cannot encode the rpc request: {0}")]
    Encode(gob::Error),
}

type Pending = oneshot::Sender<Result<Value, CallError>>;

struct ClientState {
    pending: HashMap<u64, Pending>,
    /// Set once the stream is dead, with the reason.
    shutdown: Option<String>,
}

struct WriteState {
    encoder: Encoder,
    next_seq: u64,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

/// A net/rpc client over one stream: cheap to clone, any number of calls in flight.
#[derive(Clone)]
pub struct RpcClient {
    write: Arc<Mutex<WriteState>>,
    state: Arc<Mutex<ClientState>>,
}

impl RpcClient {
    /// Starts the reader and writer tasks on `stream`.
    pub fn new<S>(stream: S, limits: Limits) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, mut write_half) = tokio::io::split(stream);
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let state = Arc::new(Mutex::new(ClientState {
            pending: HashMap::new(),
            shutdown: None,
        }));
        let write_state = state.clone();
        tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                if let Err(e) = write_half.write_all(&buf).await {
                    fail_all(&write_state, format!("write: {e}"));
                    return;
                }
            }
            // Every client handle is gone: close our side like Go's `Client.Close`.
            let _ = write_half.shutdown().await;
        });
        let read_state = state.clone();
        tokio::spawn(async move {
            let mut reader = GobReader::new(read_half, limits);
            let reason = loop {
                match read_response(&mut reader).await {
                    Ok(Some((seq, error, body))) => {
                        let waiter = read_state.lock().unwrap().pending.remove(&seq);
                        // An unknown Seq is read and dropped, as Go does.
                        if let Some(waiter) = waiter {
                            let result = if error.is_empty() {
                                Ok(body)
                            } else {
                                Err(CallError::Server(error))
                            };
                            let _ = waiter.send(result);
                        }
                    }
                    Ok(None) => break "EOF".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            fail_all(&read_state, reason);
        });
        Self {
            write: Arc::new(Mutex::new(WriteState {
                encoder: Encoder::new(),
                next_seq: 0,
                out,
            })),
            state,
        }
    }

    /// Calls `service_method` (e.g. `"Plugin.LogFind"`) with `arg` and waits for the reply.
    /// Dropping the future abandons the wait but never corrupts the stream: the request is
    /// already queued whole.
    pub async fn call(&self, service_method: &str, arg: Value) -> Result<Value, CallError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.write.lock().unwrap();
            let seq = w.next_seq;
            {
                let mut state = self.state.lock().unwrap();
                if let Some(reason) = &state.shutdown {
                    return Err(CallError::Shutdown(reason.clone()));
                }
                state.pending.insert(seq, tx);
            }
            // Body first, header second, then sent header first: a refused argument leaves
            // the encoder untouched (see `encode_reply` for the one shape this cannot cover).
            let mut body = Vec::new();
            if let Err(e) = w.encoder.encode(&arg, &mut body) {
                self.state.lock().unwrap().pending.remove(&seq);
                return Err(CallError::Encode(e));
            }
            let mut buf = Vec::new();
            w.encoder
                .encode(&request_header(service_method, seq), &mut buf)
                .expect("a Request header is always encodable");
            buf.extend_from_slice(&body);
            w.next_seq += 1;
            if w.out.send(buf).is_err() {
                self.state.lock().unwrap().pending.remove(&seq);
                return Err(CallError::Shutdown("writer stopped".into()));
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(CallError::Shutdown("reader stopped".into())))
    }
}

fn fail_all(state: &Mutex<ClientState>, reason: String) {
    let mut state = state.lock().unwrap();
    state.shutdown.get_or_insert(reason.clone());
    for (_, waiter) in state.pending.drain() {
        let _ = waiter.send(Err(CallError::Shutdown(reason.clone())));
    }
}

async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut GobReader<R>,
) -> Result<Option<(u64, String, Value)>, ReadError> {
    let Some(header) = reader.read_value().await? else {
        return Ok(None);
    };
    let (_, seq, error) = header_fields(&header)?;
    let body = reader.read_value().await?.ok_or(ReadError::UnexpectedEof)?;
    Ok(Some((seq, error, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// Spec §6.11(c): Woodpecker's first `Plugin.LogFind` on a broker stream.
    const FIRST_LOGFIND: &str = "2e 7f 03 01 01 07 52 65 71 75 65 73 74 01 ff 80 00 01 02 01 0d 53 65 72 76 69 63 65 4d 65 74 68 6f 64 01 0c 00 01 03 53 65 71 01 06 00 00 00
         13 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 00
         0b 0a 00 08 7b 22 69 64 22 3a 35 7d";

    #[test]
    fn reads_go_requests_split_anywhere() {
        let mut data = hex(FIRST_LOGFIND);
        // A second call, Seq 1, reusing the definition.
        data.extend(hex(
            "15 ff 80 01 0e 50 6c 75 67 69 6e 2e 4c 6f 67 46 69 6e 64 01 01 00 0b 0a 00 08 7b 22 69 64 22 3a 35 7d",
        ));
        let (requests, error) = read_requests(&data, Limits::default());
        assert!(error.is_none(), "{error:?}");
        let body = Value::Bytes(br#"{"id":5}"#.to_vec());
        assert_eq!(
            requests,
            vec![
                ("Plugin.LogFind".to_string(), 0, Ok(body.clone())),
                ("Plugin.LogFind".to_string(), 1, Ok(body))
            ]
        );
        // Every truncation is an error or a clean prefix, never a panic or a wrong request.
        for cut in 0..data.len() {
            let (got, _) = read_requests(&data[..cut], Limits::default());
            assert!(got.len() <= 2 && got.iter().all(|r| r.0 == "Plugin.LogFind"));
        }
    }

    #[test]
    fn hostile_input_is_an_error() {
        let small = Limits {
            max_message_len: 16,
            ..Limits::default()
        };
        let (_, error) = read_requests(&hex(FIRST_LOGFIND), small);
        assert!(matches!(
            error,
            Some(ReadError::Gob(gob::Error::MessageTooLong { .. }))
        ));
        // A header that is a string, not a struct.
        let (_, error) = read_requests(&hex("06 0c 00 03 6c 6f 67 03 02 00 01"), Limits::default());
        assert!(matches!(error, Some(ReadError::Malformed(_))), "{error:?}");
        // A zero-length message.
        let (_, error) = read_requests(&[0], Limits::default());
        assert!(matches!(
            error,
            Some(ReadError::Gob(gob::Error::EmptyMessage))
        ));
        // Ends in the middle of a message.
        let (_, error) = read_requests(&[0x05, 0x01], Limits::default());
        assert!(matches!(error, Some(ReadError::UnexpectedEof)));
    }
}
