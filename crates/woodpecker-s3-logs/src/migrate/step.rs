//! One step of `migrate`: look, skip or write, verify, and delete the legacy copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::legacy::LegacyError;
use logservice::StepId;

use super::Context;
use super::source::{Source, StepState};
use super::writer::Outcome;

/// What happened to one step, for the summary.
#[derive(Debug)]
pub(crate) struct Report {
    /// The step.
    pub(crate) id: i64,
    /// What was done.
    pub(crate) kind: Kind,
    /// Legacy rows removed (`--delete-source`).
    pub(crate) rows_deleted: u64,
    /// Legacy files removed (`--delete-source` on the file store).
    pub(crate) files_deleted: u64,
    /// The longest delete statement of this step.
    pub(crate) longest_delete: Duration,
}

/// What was done with a step.
#[derive(Debug)]
pub(crate) enum Kind {
    /// An object was written and verified (or, in a dry run, would be).
    Migrated {
        lines: u64,
        bytes: u64,
        merged: bool,
    },
    /// Its object already held the legacy lines.
    AlreadyArchived { lines: u64 },
    /// Woodpecker may still write to it: left alone.
    Running,
    /// No longer in `steps`: left alone.
    Deleted { lines: u64 },
    /// No legacy line after all.
    Empty,
    /// Something failed; the text says what.
    Failed(String),
}

/// Migrates step `id` of `source`. Never fails the run: a failure is reported.
pub(crate) async fn migrate(
    context: Arc<Context>,
    source: Source,
    id: i64,
) -> Result<Report, LegacyError> {
    let mut report = Report {
        id,
        kind: Kind::Empty,
        rows_deleted: 0,
        files_deleted: 0,
        longest_delete: Duration::ZERO,
    };
    let Ok(step) = StepId::new(id) else {
        report.kind = Kind::Failed(format!(
            "step id {id} is not one Woodpecker gives out (below 1): left alone"
        ));
        return Ok(report);
    };
    report.kind = match run(&context, &source, step, &mut report).await {
        Ok(kind) => kind,
        Err(text) => Kind::Failed(text),
    };
    Ok(report)
}

async fn run(
    context: &Context,
    source: &Source,
    id: StepId,
    report: &mut Report,
) -> Result<Kind, String> {
    let counters = &context.counters;
    let state = source
        .state(context.database.as_ref(), id)
        .await
        .map_err(|e| e.to_string())?;
    let shape = source.shape(id).await.map_err(|e| e.to_string())?;
    let Some(shape) = shape else {
        return Ok(Kind::Empty);
    };
    match state {
        StepState::Running => return Ok(Kind::Running),
        StepState::Deleted => return Ok(Kind::Deleted { lines: shape.lines }),
        StepState::Settled => {}
    }
    let writer = &context.writer;
    if context.args.dry_run {
        let archived = writer
            .already_archived(id, &shape)
            .await
            .map_err(|e| e.to_string())?;
        counters.lines.fetch_add(shape.lines, Ordering::Relaxed);
        return Ok(match archived {
            Some(_) => Kind::AlreadyArchived { lines: shape.lines },
            None => Kind::Migrated {
                lines: shape.lines,
                bytes: 0,
                merged: false,
            },
        });
    }
    let outcome = writer
        .migrate_step(id, &shape, source.entries(id))
        .await
        .map_err(|e| e.to_string())?;
    counters.lines.fetch_add(shape.lines, Ordering::Relaxed);
    let kind = match outcome {
        Outcome::Empty => return Ok(Kind::Empty),
        Outcome::AlreadyArchived { .. } => {
            if context.args.delete_source {
                // Only metadata was compared: read the object before the copy goes.
                writer
                    .holds_every_line(id, source.entries(id))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|problem| {
                        format!(
                            "{} does not hold the legacy log ({problem}); its legacy copy was kept",
                            writer.key(id)
                        )
                    })?;
            }
            Kind::AlreadyArchived { lines: shape.lines }
        }
        Outcome::Written {
            legacy_lines,
            bytes,
            merged,
            ..
        } => {
            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            Kind::Migrated {
                lines: legacy_lines,
                bytes,
                merged,
            }
        }
    };
    if context.args.delete_source {
        let (rows, longest) = source
            .delete(id, context.args.delete_batch)
            .await
            .map_err(|e| {
                format!(
                    "the object is stored and verified, but deleting the legacy copy failed: {e}"
                )
            })?;
        report.longest_delete = longest;
        match source {
            Source::Database(_) => report.rows_deleted = rows,
            Source::Files(_) => report.files_deleted = 1,
        }
    }
    Ok(kind)
}
