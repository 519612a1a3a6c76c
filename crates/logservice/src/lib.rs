//! Woodpecker's log-store contract, as the server's addon client speaks it.
//!
//! The server sends a [`Step`] and [`LogEntry`] values as JSON (see Woodpecker's
//! `server/services/log/addon`); this crate mirrors those types exactly, defines the
//! [`LogService`] trait every store implements, and ships [`MemoryStore`], the reference for
//! the read contract: entries ordered by `line`, one per line number, first write wins.
//! [`addon`] speaks Woodpecker's addon protocol on both sides over the go-plugin runtime.

#![forbid(unsafe_code)]

pub mod addon;
mod entry;
mod memory;
mod records;
mod service;

pub use entry::{EntryType, LogEntry, Step};
pub use memory::MemoryStore;
pub use records::{EntryRecords, canonical_line, push_canonical, push_entry};
pub use service::{LogError, LogService, StepId};
