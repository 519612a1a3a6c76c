//! `get <step-id>`: a step's log from the command line, as Woodpecker's download gives it.

use std::io::Write;

use archive::ProcessEnv;
use engine::Engine;
use logservice::{LogService, Step, StepId};

use crate::config::Config;

pub async fn run(step_id: i64, json: bool) -> Result<(), String> {
    let id = StepId::new(step_id).map_err(|e| e.to_string())?;
    let config = Config::from_source(&ProcessEnv).map_err(|e| e.to_string())?;
    let store = config.open_store().await?;
    let engine = Engine::start(config.engine.clone(), store.object_store())
        .await
        .map_err(|e| format!("{e} (is the addon running on this spool? stop it or run get where it cannot see the spool)"))?;
    let entries = engine
        .log_find(&Step {
            id: id.get(),
            ..Step::default()
        })
        .await
        .map_err(|e| e.to_string());
    engine.shutdown().await.map_err(|e| e.to_string())?;
    let entries = entries?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer(&mut out, &entries)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        entries.iter().try_for_each(|entry| {
            out.write_all(entry.data.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        })
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing the log: {e}"))
        }
        _ => Ok(()),
    }
}
