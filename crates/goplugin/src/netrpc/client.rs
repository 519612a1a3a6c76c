//! The net/rpc client of one stream: calls are encoded under one lock and handed to one
//! writer task in that order; a reader task matches replies to calls by `Seq` only, as Go's
//! client does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use gob::{Encoder, Limits, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use super::READ_CHUNK;
use super::codec::{ResponseDecoder, encode_request};

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
            let mut responses =
                FramedRead::with_capacity(read_half, ResponseDecoder::new(limits), READ_CHUNK);
            let reason = loop {
                match responses.next().await {
                    Some(Ok(response)) => {
                        let waiter = read_state.lock().unwrap().pending.remove(&response.seq);
                        // An unknown Seq is read and dropped, as Go does.
                        if let Some(waiter) = waiter {
                            let result = if response.error.is_empty() {
                                Ok(response.body)
                            } else {
                                Err(CallError::Server(response.error))
                            };
                            let _ = waiter.send(result);
                        }
                    }
                    None => break "EOF".to_string(),
                    Some(Err(e)) => break e.to_string(),
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
            let buf = match encode_request(&mut w.encoder, service_method, seq, &arg) {
                Ok(buf) => buf,
                Err(e) => {
                    self.state.lock().unwrap().pending.remove(&seq);
                    return Err(CallError::Encode(e));
                }
            };
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

/// Marks the client dead with `reason` and fails every call still waiting.
fn fail_all(state: &Mutex<ClientState>, reason: String) {
    let mut state = state.lock().unwrap();
    state.shutdown.get_or_insert(reason.clone());
    for (_, waiter) in state.pending.drain() {
        let _ = waiter.send(Err(CallError::Shutdown(reason.clone())));
    }
}
