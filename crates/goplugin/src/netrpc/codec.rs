//! net/rpc's framing over gob without any IO: decoders that take whatever bytes have arrived
//! and say what they make up, and the encoders of requests and replies.
//!
//! The split follows tokio-util's `codec`: [`RequestDecoder`] and [`ResponseDecoder`]
//! implement [`tokio_util::codec::Decoder`], the server and client wrap them in a
//! `FramedRead`, and tests and fuzzing feed them byte buffers directly. A decoder reads gob
//! messages in place from the buffer (yamux frames and gob messages do not line up, so a
//! message is decoded once it is whole, PROTOCOL.md §net/rpc) and never allocates for a
//! length the peer only announced.

use bytes::{Buf, BytesMut};
use gob::{Encoder, Limits, Struct, Value};
use tokio_util::codec::Decoder;

/// Why reading gob values from a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not gob, or break a [`Limits`] bound.
    #[error("{0}")]
    Gob(#[from] gob::Error),
    /// The stream ended inside a message, or between a header and its body.
    #[error("unexpected EOF inside a gob message")]
    UnexpectedEof,
    /// Valid gob, but not a net/rpc header.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// A request body that was skipped unread because it is over the size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request of {len} bytes is over the plugin's limit of {limit} bytes")]
pub struct OversizeBody {
    /// The size the peer announced (or, for a value split over several messages, the size
    /// gathered so far).
    pub len: u64,
    /// [`Limits::max_message_len`].
    pub limit: usize,
}

/// One request as the server reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `Service.Method`, e.g. `"Plugin.LogAppend"`; empty if the peer did not send one.
    pub service_method: String,
    /// The caller's sequence number, echoed in the reply.
    pub seq: u64,
    /// The decoded argument, or why it was refused unread.
    pub body: Result<Value, OversizeBody>,
}

/// One reply as the client reads it.
#[derive(Debug)]
pub(crate) struct Response {
    /// The `Seq` of the call this answers.
    pub(crate) seq: u64,
    /// The server's error text; empty on success.
    pub(crate) error: String,
    /// The reply value (an empty struct after an error).
    pub(crate) body: Value,
}

/// The most buffer space reserved ahead of the bytes of a message: more than a Woodpecker
/// batch (1 MiB of lines, about 1.4 MiB as JSON); larger messages grow as they arrive.
const MAX_UPFRONT_RESERVE: usize = 4 << 20;

/// Gob values from a byte buffer: frames messages, keeps type definitions, yields values.
struct ValueDecoder {
    gob: gob::Decoder,
    max_message_len: usize,
}

impl ValueDecoder {
    fn new(limits: Limits) -> Self {
        Self {
            gob: gob::Decoder::new(limits),
            max_message_len: limits.max_message_len,
        }
    }

    /// The next value, consuming the messages it is made of and any type definitions before
    /// it. `Ok(None)`: no whole value buffered yet. A message is decoded from the buffer in
    /// place and consumed even when it fails to decode.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Value>, ReadError> {
        loop {
            let Some((prefix, len)) = gob::message_len(buf, self.max_message_len)? else {
                return Ok(None);
            };
            if len == 0 {
                return Err(gob::Error::EmptyMessage.into());
            }
            if buf.len() < prefix + len {
                // Room for the whole message now: the reader then fills it in large reads
                // (FramedRead only guarantees one free byte per read) and the buffer grows
                // once instead of doubling through a 1 MiB batch. Capped, so that a length
                // prefix alone cannot make a stream allocate up to the message limit.
                buf.reserve((prefix + len - buf.len()).min(MAX_UPFRONT_RESERVE));
                return Ok(None);
            }
            let decoded = self.gob.decode_message(&buf[prefix..prefix + len]);
            buf.advance(prefix + len);
            if let Some(value) = decoded? {
                return Ok(Some(value));
            }
        }
    }
}

/// Where a [`RequestDecoder`] is in the request stream; see the table in its docs.
enum RequestState {
    Header,
    Body {
        service_method: String,
        seq: u64,
    },
    Skip {
        service_method: String,
        seq: u64,
        refused: OversizeBody,
        /// Bytes of the skipped message still to come; `None` until its length prefix is in.
        left: Option<u64>,
    },
}

/// The server's request decoder: a net/rpc request stream, one [`Request`] at a time.
///
/// # States
///
/// A request is a header value (`rpc.Request{ServiceMethod, Seq}`) followed by a body
/// value, each possibly preceded by type definitions.
///
/// | state    | what the buffer holds                                      | `decode` returns                          | next state |
/// |----------|------------------------------------------------------------|-------------------------------------------|------------|
/// | `Header` | less than one whole gob message                            | `Ok(None)`: read more                     | `Header`   |
/// | `Header` | a type definition                                          | (stored in the gob decoder, goes on)      | `Header`   |
/// | `Header` | a `Request` header                                         | (goes on)                                 | `Body`     |
/// | `Header` | bad gob, a message over the limit, a header of wrong shape | `Err`: the stream is out of step          | —          |
/// | `Body`   | less than one whole gob message                            | `Ok(None)`: read more                     | `Body`     |
/// | `Body`   | a type definition                                          | (stored, goes on)                         | `Body`     |
/// | `Body`   | a value                                                    | `Ok(Some(request))`                       | `Header`   |
/// | `Body`   | a message over the limit                                   | (starts skipping it)                      | `Skip`     |
/// | `Body`   | bad gob                                                    | `Err`                                     | —          |
/// | `Skip`   | less than the rest of the skipped message                  | `Ok(None)`, all of it discarded           | `Skip`     |
/// | `Skip`   | the rest of the skipped message                            | `Ok(Some(request))`, body `Err(OversizeBody)` | `Header` |
///
/// At the end of input (`decode_eof`), `Header` with nothing buffered is a clean end
/// (`Ok(None)`); anything else is [`ReadError::UnexpectedEof`]. After an `Err` the gob state
/// of the stream is unrecoverable and the decoder must not be used again.
///
/// Skipping is what keeps an oversize request answerable: its header (and so its `Seq`) is
/// known, the body is passed over without being buffered, and the caller gets an RPC error
/// instead of a closed stream. A header over the limit cannot be answered, so it is an
/// error. The client's `ResponseDecoder` has the `Header` and `Body` states only: a
/// reply over the limit is an error.
pub struct RequestDecoder {
    values: ValueDecoder,
    state: RequestState,
}

impl RequestDecoder {
    /// A decoder for a fresh stream: no type definitions known yet, bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            values: ValueDecoder::new(limits),
            state: RequestState::Header,
        }
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = ReadError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ReadError> {
        loop {
            match &mut self.state {
                RequestState::Header => {
                    let Some(header) = self.values.decode(buf)? else {
                        return Ok(None);
                    };
                    let (service_method, seq, _) = header_fields(&header)?;
                    self.state = RequestState::Body {
                        service_method,
                        seq,
                    };
                }
                RequestState::Body {
                    service_method,
                    seq,
                } => match self.values.decode(buf) {
                    Ok(None) => return Ok(None),
                    Ok(Some(value)) => {
                        let request = Request {
                            service_method: std::mem::take(service_method),
                            seq: *seq,
                            body: Ok(value),
                        };
                        self.state = RequestState::Header;
                        return Ok(Some(request));
                    }
                    Err(ReadError::Gob(gob::Error::MessageTooLong { len, limit })) => {
                        self.state = RequestState::Skip {
                            service_method: std::mem::take(service_method),
                            seq: *seq,
                            refused: OversizeBody { len, limit },
                            left: None,
                        };
                    }
                    Err(e) => return Err(e),
                },
                RequestState::Skip {
                    service_method,
                    seq,
                    refused,
                    left,
                } => {
                    let remaining = match *left {
                        Some(n) => n,
                        // The message at the read position, prefix included, whatever its
                        // size: it is passed over, never buffered whole. A length near 2^64
                        // saturates: such a message never ends before the stream does.
                        None => match gob::message_len(buf, usize::MAX)? {
                            Some((prefix, len)) => (prefix as u64).saturating_add(len as u64),
                            None => return Ok(None),
                        },
                    };
                    let skipped = remaining.min(buf.len() as u64);
                    buf.advance(skipped as usize);
                    if skipped < remaining {
                        *left = Some(remaining - skipped);
                        return Ok(None);
                    }
                    let request = Request {
                        service_method: std::mem::take(service_method),
                        seq: *seq,
                        body: Err(*refused),
                    };
                    self.state = RequestState::Header;
                    return Ok(Some(request));
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ReadError> {
        let request = self.decode(buf)?;
        if request.is_none() && !(matches!(self.state, RequestState::Header) && buf.is_empty()) {
            return Err(ReadError::UnexpectedEof);
        }
        Ok(request)
    }
}

/// The client's response decoder: a net/rpc reply stream, one [`Response`] at a time.
pub(crate) struct ResponseDecoder {
    values: ValueDecoder,
    /// `Seq` and `Error` of a header whose body has not arrived yet.
    header: Option<(u64, String)>,
}

impl ResponseDecoder {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            values: ValueDecoder::new(limits),
            header: None,
        }
    }
}

impl Decoder for ResponseDecoder {
    type Item = Response;
    type Error = ReadError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, ReadError> {
        if self.header.is_none() {
            let Some(header) = self.values.decode(buf)? else {
                return Ok(None);
            };
            let (_, seq, error) = header_fields(&header)?;
            self.header = Some((seq, error));
        }
        let Some(body) = self.values.decode(buf)? else {
            return Ok(None);
        };
        let (seq, error) = self.header.take().expect("a header was read above");
        Ok(Some(Response { seq, error, body }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, ReadError> {
        let response = self.decode(buf)?;
        if response.is_none() && (self.header.is_some() || !buf.is_empty()) {
            return Err(ReadError::UnexpectedEof);
        }
        Ok(response)
    }
}

/// Reads every request in `data` with the server's own decoder, stopping at the first error:
/// the decoder on a buffer holding the whole input, for fuzzing, golden tests and benchmarks.
/// Never panics and never allocates more than `limits` and the input justify.
pub fn read_requests(data: &[u8], limits: Limits) -> (Vec<Request>, Option<ReadError>) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    let mut requests = Vec::new();
    loop {
        // Everything there is has arrived, so each call may treat the input's end as EOF.
        match decoder.decode_eof(&mut buf) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, None),
            Err(e) => return (requests, Some(e)),
        }
    }
}

/// Like [`read_requests`], but the input arrives `piece` bytes at a time (at least one), as
/// the server's read loop meets it, and the end-of-input check comes last. Tests and fuzzing
/// compare the two: however the bytes arrive, the decoder must read the same.
pub fn read_requests_in_pieces(
    data: &[u8],
    limits: Limits,
    piece: usize,
) -> (Vec<Request>, Option<ReadError>) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in data.chunks(piece.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(request)) => requests.push(request),
            Ok(None) => return (requests, None),
            Err(e) => return (requests, Some(e)),
        }
    }
}

/// `ServiceMethod`, `Seq` and `Error` of a request or response header. Missing fields were
/// zero on the sender's side; a present field of the wrong type is a protocol error.
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

/// The bytes of one call: `Request` header, then `arg`.
///
/// The body is encoded first and the header second, then sent header first: gob's encoder
/// changes nothing when it refuses a value, so a refused argument leaves the stream's
/// encoder untouched (see [`encode_reply`] for the one shape this cannot cover).
pub(crate) fn encode_request(
    encoder: &mut Encoder,
    service_method: &str,
    seq: u64,
    arg: &Value,
) -> Result<Vec<u8>, gob::Error> {
    let mut body = Vec::new();
    encoder.encode(arg, &mut body)?;
    let mut buf = Vec::new();
    encoder
        .encode(&request_header(service_method, seq), &mut buf)
        .expect("a Request header is always encodable");
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Appends the `Response` header for a reply to `out` and returns the encoded body.
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
pub(crate) fn encode_reply(
    encoder: &mut Encoder,
    service_method: &str,
    seq: u64,
    result: Result<Value, String>,
    out: &mut Vec<u8>,
) -> Vec<u8> {
    let result = match result {
        Ok(Value::Bytes(bytes)) => {
            encoder
                .encode(&response_header(service_method, seq, ""), out)
                .expect("a Response header is always encodable");
            gob::bytes_message_prefix(bytes.len(), out);
            return bytes;
        }
        other => other,
    };
    let mut body = Vec::new();
    let error = match result {
        Ok(value) => match encoder.encode(&value, &mut body) {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!(%service_method, error = %e, "a handler returned a reply gob cannot encode");
                format!("{service_method}: cannot encode the reply: {e}")
            }
        },
        Err(e) if e.is_empty() => "unknown error".to_string(),
        Err(e) => e,
    };
    if !error.is_empty() {
        // Go always sends a body after an error header (an empty struct); without it the
        // client would read the next header as this body (PROTOCOL.md §net/rpc).
        body.clear();
        encoder
            .encode(&Value::empty_struct(), &mut body)
            .expect("the empty struct is always encodable");
    }
    encoder
        .encode(&response_header(service_method, seq, &error), out)
        .expect("a Response header is always encodable");
    body
}
