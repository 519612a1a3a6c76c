//! Go's `net/rpc` with its default gob codec, both sides (PROTOCOL.md §net/rpc).
//!
//! One gob [`gob::Decoder`] and one gob [`gob::Encoder`] per stream and direction, as Go's
//! `rpc.NewClient` and `rpc.ServeConn` do: type definitions are per stream (PROTOCOL.md
//! §gob).
//!
//! * `registry`: [`Handler`], the services of a stream ([`Router`]) and how a
//!   `Service.Method` name finds its handler.
//! * `codec`: the wire format without IO. [`RequestDecoder`] turns buffered bytes into
//!   [`Request`]s (its state table is in its module docs), and the reply and request
//!   encoders write Go's framing. Tests, fuzzing and benchmarks call it directly.
//! * `server`: [`serve`], a reader loop around the decoder that runs each call in its own
//!   task, so calls are concurrent like Go's `go service.call`, and a single writer task that
//!   owns the encoder and writes each `Response` header and body contiguously, so two
//!   replies can never interleave and no type definition can trail the value that uses it.
//! * `client`: [`RpcClient`], calls encoded under one lock and handed to one writer task in
//!   that order, and a reader task that matches replies to calls by `Seq` only, as Go's
//!   client does.

mod client;
mod codec;
mod registry;
mod server;

pub use client::{CallError, RpcClient};
pub use codec::{
    OversizeBody, ReadError, Request, RequestDecoder, read_requests, read_requests_in_pieces,
};
pub use registry::{BoxFuture, Handler, Router};
pub use server::serve;

/// How much a reader asks of its stream at a time, and what it buffers to begin with. A
/// larger message grows the buffer by what arrives, never by what the peer announced.
const READ_CHUNK: usize = 64 << 10;

#[cfg(test)]
mod tests;
