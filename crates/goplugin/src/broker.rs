//! go-plugin's MuxBroker, plugin side (PROTOCOL.md §Broker): `Dispenser.Dispense` hands out an id,
//! the host opens a fresh stream and writes that id as 4 little-endian bytes, the plugin
//! echoes the same 4 bytes, and from then on the stream carries net/rpc for the dispensed
//! plugin under the service name `Plugin`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a dispensed id waits for its stream, and how long a new stream may take to send
/// its id: go-plugin's `Accept`/`timeoutWait` use 5 s for both.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Ids handed out by `Dispense` and not yet claimed by a stream. Per connection.
pub struct Broker {
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u32,
    pending: HashMap<u32, (String, Instant)>,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_id: 1,
                pending: HashMap::new(),
            }),
        }
    }
}

/// Why a broker stream was refused. The stream is then closed, as Go's broker closes it.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The stream sent no id within [`BROKER_TIMEOUT`].
    #[error("timed out waiting for the broker stream id")]
    Timeout,
    /// Reading the id or writing the echo failed.
    #[error("broker stream: {0}")]
    Io(#[from] std::io::Error),
    /// The id was never handed out, was claimed already, or waited too long.
    #[error("broker stream for id {0}, which was never dispensed or has expired")]
    UnknownId(u32),
}

impl Broker {
    /// Registers a new id for `plugin`. Called before the Dispense reply is written, so the
    /// host's stream can never arrive before its id is known.
    pub fn register(&self, plugin: &str) -> u32 {
        let mut inner = self.inner.lock().unwrap();
        inner
            .pending
            .retain(|_, (_, at)| at.elapsed() <= BROKER_TIMEOUT);
        let id = inner.next_id;
        // Go's counter is a uint32 that wraps; 0 stays unused so it never looks like a
        // missing value.
        inner.next_id = inner.next_id.checked_add(1).unwrap_or(1);
        inner
            .pending
            .insert(id, (plugin.to_string(), Instant::now()));
        id
    }

    /// Claims `id`, returning the plugin name it was dispensed for.
    fn claim(&self, id: u32) -> Option<String> {
        let mut inner = self.inner.lock().unwrap();
        match inner.pending.remove(&id) {
            Some((name, at)) if at.elapsed() <= BROKER_TIMEOUT => Some(name),
            _ => None,
        }
    }

    /// Runs the broker handshake on a freshly accepted stream: read the 4-byte id (5 s),
    /// claim it, echo it. Returns the plugin name; the stream is then ready for net/rpc.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> Result<String, BrokerError> {
        let mut id = [0u8; 4];
        tokio::time::timeout(BROKER_TIMEOUT, stream.read_exact(&mut id))
            .await
            .map_err(|_| BrokerError::Timeout)??;
        let value = u32::from_le_bytes(id);
        let name = self.claim(value).ok_or(BrokerError::UnknownId(value))?;
        stream.write_all(&id).await?;
        stream.flush().await?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_the_id_once() {
        let broker = Broker::default();
        assert_eq!(broker.register("log"), 1);
        assert_eq!(broker.register("log"), 2);
        let (mut host, mut plugin) = tokio::io::duplex(64);
        host.write_all(&2u32.to_le_bytes()).await.unwrap();
        assert_eq!(broker.accept(&mut plugin).await.unwrap(), "log");
        let mut ack = [0u8; 4];
        host.read_exact(&mut ack).await.unwrap();
        assert_eq!(ack, [2, 0, 0, 0]);
        // An id is claimed only once.
        host.write_all(&2u32.to_le_bytes()).await.unwrap();
        assert!(matches!(
            broker.accept(&mut plugin).await,
            Err(BrokerError::UnknownId(2))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_streams_time_out() {
        let broker = Broker::default();
        let (_host, mut plugin) = tokio::io::duplex(64);
        assert!(matches!(
            broker.accept(&mut plugin).await,
            Err(BrokerError::Timeout)
        ));
    }
}
