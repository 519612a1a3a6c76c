//! The net/rpc server read loop as the host's stream feeds it: arbitrary bytes go through
//! goplugin's `netrpc::serve` with Woodpecker's `Plugin` service (an in-memory log store
//! behind it, so JSON argument parsing is exercised too). Whatever the bytes, the loop must
//! end without panicking once the peer closes, and every reply must be well-formed gob.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use goplugin::netrpc::{Router, serve};
use goplugin::{Handler, Limits};
use libfuzzer_sys::fuzz_target;
use logservice::MemoryStore;
use logservice::addon::LogHandler;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut router = Router::new();
        let handler = LogHandler::new(Arc::new(MemoryStore::new()));
        router.register("Plugin", Arc::new(handler) as Arc<dyn Handler>);
        let limits = Limits {
            max_message_len: 1 << 20,
            ..Limits::default()
        };
        let (mut host, plugin) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(plugin, Arc::new(router), limits));
        let feed = async {
            // The server may stop reading early (bad bytes); a failed write is expected then.
            let _ = host.write_all(data).await;
            let _ = host.shutdown().await;
            let mut replies = Vec::new();
            let _ = host.read_to_end(&mut replies).await;
            replies
        };
        let replies = tokio::time::timeout(Duration::from_secs(5), feed)
            .await
            .expect("the server neither answered nor closed the stream");
        server.await.expect("serve panicked");
        // Every byte the server wrote must decode as gob from a fresh decoder.
        let mut decoder = gob::Decoder::new(gob::Limits::default());
        let mut rest = &replies[..];
        while !rest.is_empty() {
            let (prefix, len) = gob::message_len(rest, usize::MAX)
                .expect("reply framing")
                .expect("complete reply");
            decoder
                .decode_message(&rest[prefix..prefix + len])
                .expect("reply decodes");
            rest = &rest[prefix + len..];
        }
    });
});
