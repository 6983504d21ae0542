//! Colony's durable storage.
//!
//! - [`SegmentLog`]: an append-only log of checksummed records in segment files, with
//!   group commit (many appends, one `fsync`), torn-tail repair and corruption
//!   detection. Both logs below are segment logs.
//! - The **command log** (`commands/`): every [`colony_kernel::Command`], encoded with
//!   postcard. It is the single source of truth.
//! - The **decision log** (`audit/`): every [`colony_kernel::Event`] as a JSON
//!   [`AuditRecord`], each holding the SHA-256 of the one before ([`audit`]).
//! - The **task archive** (`archive/tasks/`): finished task trees that left the
//!   live state by the retention rule, readable by address ([`archive`]).
//! - **Snapshots** (`snapshots/`): the kernel state at a sequence number, so a restart
//!   replays only the tail ([`snapshot`]).
//!
//! [`Store`] ties them together: [`Store::open`] recovers the state after any stop,
//! `kill -9` included, and [`Store::append`] + [`Store::sync`] make a batch durable.
//!
//! ```no_run
//! # fn main() -> Result<(), colony_log::Error> {
//! let (mut store, state, report) = colony_log::Store::open("colony-data".as_ref(), colony_log::StoreOptions::default())?;
//! println!("recovered to command {} ({} replayed)", state.last_seq, report.replayed);
//! # Ok(()) }
//! ```

pub mod archive;
pub mod audit;
mod error;
pub mod heads;
pub mod prune;
mod segment;
pub mod snapshot;
mod store;

pub use archive::TaskArchive;
pub use audit::{verify_audit, verify_audit_against, AuditRecord, VerifyReport};
pub use error::Error;
pub use segment::{LogReader, OpenReport, SegmentLog, SegmentOptions, RECORD_BYTES_MAX};
pub use store::{
    check_format, verify_replay, EncodedRecords, LogWriter, RecordEncoder, RecoveryReport, Store,
    StoreOptions, DATA_FORMAT, FORMAT_FILE,
};
