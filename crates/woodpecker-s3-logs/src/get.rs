//! `get <step-id>`: a step's log from the command line, as Woodpecker's download gives it.

use std::io::Write;

use logservice::{LogEntry, StepId};
use settings::ProcessEnv;

use crate::config::Config;
use crate::legacy::Legacy;
use crate::variables::Staging;
use woodpecker_db::staging::LogEntriesStaging;

pub(crate) async fn run(step_id: i64, json: bool) -> Result<(), String> {
    let id = StepId::new(step_id).map_err(|e| e.to_string())?;
    let config = Config::from_source(&ProcessEnv).map_err(|e| e.to_string())?;
    let store = config.open_store().await?;
    let legacy = Legacy::open(&config);
    // Reads beside a running addon: no spool lock, no recovery, nothing changed.
    let log = match (config.staging, &legacy.database) {
        (Staging::Database, Some(db)) => {
            let table = LogEntriesStaging::new(db.clone());
            engine::table::read_table_step_log(&config.engine, &*store.object_store(), &table, id)
                .await
        }
        _ => {
            engine::read_step_log_with_legacy(
                &config.engine,
                &*store.object_store(),
                Some(&legacy.sources()),
                id,
            )
            .await
        }
    }
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        out.write_all(&log).and_then(|()| out.write_all(b"\n"))
    } else {
        let entries: Vec<LogEntry> =
            serde_json::from_slice(&log).map_err(|e| format!("decoding the log: {e}"))?;
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
