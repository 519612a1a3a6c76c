//! The net/rpc server loop of one stream: requests from a [`RequestDecoder`] in, each call in
//! its own task, replies out through the stream's single writer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use gob::{Encoder, Limits, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::READ_CHUNK;
use super::codec::{RequestDecoder, encode_reply};
use super::registry::Router;

/// Replies up to this size are copied behind their header and sent in one write.
const SMALL_REPLY: usize = 64 << 10;

/// One finished call, on its way to the writer.
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
    let mut requests =
        FramedRead::with_capacity(read_half, RequestDecoder::new(limits), READ_CHUNK);
    while let Some(next) = requests.next().await {
        let request = match next {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "closing an rpc stream after unreadable input");
                // Close our side so the peer's client fails its calls instead of waiting,
                // and keep draining its side: a peer blocked on flow control in the middle
                // of a write would otherwise hang forever (a Go net/rpc client holds its
                // send lock while writing, so every later call would hang behind it).
                drop(tx);
                let (mut rest, mut sink) = (requests.into_inner(), tokio::io::sink());
                let drain = tokio::io::copy(&mut rest, &mut sink);
                let _ = tokio::join!(writer, drain);
                return;
            }
        };
        let (service_method, seq) = (request.service_method, request.seq);
        let arg = request
            .body
            .map_err(|refused| format!("{service_method}: {refused}"));
        match (router.resolve(&service_method), arg) {
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
                    let result = call
                        .await
                        .unwrap_or_else(|_| Err(format!("{service_method}: the plugin panicked")));
                    let _ = tx.send(Reply {
                        seq,
                        service_method,
                        result,
                    });
                });
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The one writer of a server stream; ends (closing the stream) when every sender is gone.
async fn write_replies<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Reply>) {
    let mut encoder = Encoder::new();
    let mut header = Vec::new();
    while let Some(reply) = rx.recv().await {
        header.clear();
        let body = encode_reply(
            &mut encoder,
            &reply.service_method,
            reply.seq,
            reply.result,
            &mut header,
        );
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
