//! Colony's durable pipeline: every change of state goes through it, in one order.
//!
//! - [`sequencer`]: the [`Submitter`] callers hold (a bounded queue, or a decision on
//!   the caller's own thread), the decider that stamps each command with its sequence
//!   number and the time from an injected [`Clock`] and applies it to the kernel, and
//!   the flusher that makes each group durable with one sync before anyone is answered,
//!   then tells a [`DecisionSink`] (the bus, in a node) and writes snapshots.
//! - [`outbox`]: commands submitted in the background that carry money or state,
//!   sent again until decided, never dropped.
//! - [`fatal`]: a panic on the decide or flush thread stops the pipeline loudly.
//! - [`metrics`]: the counters the node shows on `/metrics`.
//!
//! It owns the order of commands and their durability; it never serves HTTP, never
//! names the bus, and never reads a clock except through [`Clock`].

pub mod fatal;
pub mod metrics;
pub mod outbox;
pub mod sequencer;

pub use metrics::Metrics;
pub use outbox::Answered;
pub use sequencer::{
    spawn, Clock, DecisionSink, EventTap, Outcome, Proposal, Replicator, SequencerConfig, Stamp,
    Stamped, SubmitError, Submitter, SystemClock,
};
