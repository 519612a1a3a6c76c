//! The yamux session both sides run over the plugin connection (PROTOCOL.md §Yamux).
//!
//! `tokio-yamux` is a port of hashicorp/yamux and was measured against v0.1.2 (PROTOCOL.md §Yamux):
//! it
//! ACKs a stream when it is accepted, answers pings from the session task, and caps windows
//! at 256 KiB like Go. Its one requirement is that the session is polled all the time, so it
//! runs in its own task that does nothing else: a stalled driver would miss Go's keepalive
//! pings and Go would kill the session after 10 s.

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_yamux::{Config, Control, Session, StreamHandle};

use crate::listener::Io;

pub use tokio_yamux::session::SessionType;

/// A running yamux session: `control` opens streams, `inbound` yields the streams the peer
/// opens, in the order it opened them, and `driver` ends when the session does.
pub struct Mux {
    /// Opens streams (the host side's only way to get one).
    pub control: Control,
    /// The streams the peer opened, in its order: stream 1 first (PROTOCOL.md §Yamux).
    pub inbound: mpsc::UnboundedReceiver<StreamHandle>,
    /// The task polling the session; its result is why the session ended.
    pub driver: JoinHandle<std::io::Result<()>>,
}

/// How much a peer may send on one stream before we have read it. hashicorp/yamux starts
/// every stream at 256 KiB and grows a sender's window by whatever the receiver grants, so a
/// larger receive window lets the host write a 1 MiB LogAppend batch without stopping for
/// four window-update round trips. It is not memory held: data arrives only as fast as the
/// stream's reader (which always reads) takes it.
const STREAM_WINDOW: u32 = 16 << 20;

/// Starts a session over `io` with hashicorp/yamux's defaults (the ones go-plugin uses on
/// both sides: 30 s keepalive, 10 s write timeout, backlog 256), except for a larger receive
/// window (16 MiB, PROTOCOL.md §Yamux).
pub fn start(io: Box<dyn Io>, ty: SessionType) -> Mux {
    let config = Config {
        max_stream_window_size: STREAM_WINDOW,
        ..Config::default()
    };
    let mut session = Session::new(io, config, ty);
    let control = session.control();
    let (tx, inbound) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(next) = session.next().await {
            // A stream nobody waits for any more is dropped, which resets it: correct for a
            // peer opening streams we have no use for.
            let _ = tx.send(next?);
        }
        Ok(())
    });
    Mux {
        control,
        inbound,
        driver,
    }
}
