//! The sequencer: the single writer that turns requests into durable decisions.
//!
//! Requests arrive on a bounded queue ([`SequencerConfig::submit_queue_max`]).
//! The sequencer thread takes every request waiting (up to `batch_commands_max`) and
//! hands them to the [`Decider`], which for each stamps the next sequence number and
//! the time (never earlier than the last), applies it to the kernel, and encodes the
//! command and its decision records. The decided group goes to the flusher thread,
//! which writes whatever has accumulated, makes it durable with one sync of each log,
//! and only then answers the callers (and publishes the decisions on the bus).
//!
//! Nothing that decides waits for a disk: while one group is being synced the next
//! is decided. A command answered once decided ([`Submitter::submit_decided`], the
//! LLM gateway's reservations) is decided on the caller's own thread when the decider
//! is free, without a hop through the queue; otherwise it is queued like any other.
//! At most `unsynced_commands_max` commands wait for the flusher; then deciding waits.
//! When a reservation's time is due, the decider logs a tick first.
//!
//! In a cluster ([`Replicator`], `replicated.rs`), an outside log orders the commands
//! instead: callers' commands are proposed to it, and the commands it ordered come
//! back stamped with their sequence number and proposed time, to be decided here in
//! that order on every node alike.
//!
//! One file a part: `submitter.rs` (what callers hold), `decider.rs`, `handoff.rs`
//! (between the decider and the flusher), `batcher.rs` (the sequencer thread),
//! `flusher.rs`, `sink.rs` (where durable decisions go), `replicated.rs` (commands
//! ordered by a cluster's log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony_kernel::{Command, CommandBody, Decision, Effect, Event, PrincipalId, State};
use colony_log::{snapshot, EncodedRecords, LogWriter, RecordEncoder, Store};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

mod batcher;
mod decider;
mod flusher;
mod handoff;
mod replicated;
mod sink;
mod submitter;

use batcher::Sequencer;
use decider::Decider;
use flusher::Flusher;
use handoff::{Group, Handoff};
pub use replicated::{Proposal, Replicator, Stamp, Stamped};
pub use sink::{DecisionSink, EventTap};
#[cfg(any(test, feature = "test-support"))]
pub use submitter::DecisionsHeld;
pub use submitter::Submitter;

/// Why a command was not decided: the caller gets no decision, and may retry.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct SubmitError {
    /// `overloaded`, `shutting_down`, `node_failed`, `cluster_unavailable`, ...
    pub code: &'static str,
    pub message: String,
    /// Certainly not decided, now or later (the command never reached the log), so
    /// that what it carried may be sent again; false when it may have been or will
    /// be decided.
    pub nothing_decided: bool,
}

impl SubmitError {
    /// The queue is full (`submit_queue_max`): retry shortly.
    pub fn overloaded() -> SubmitError {
        SubmitError {
            code: "overloaded",
            message: "the node's command queue is full; retry shortly".into(),
            nothing_decided: true,
        }
    }

    pub fn shutting_down() -> SubmitError {
        SubmitError {
            code: "shutting_down",
            message: "the node is shutting down".into(),
            nothing_decided: false,
        }
    }

    /// The cluster's log cannot be reached: nothing was decided (see [`Replicator`]).
    pub fn cluster_unavailable(message: impl Into<String>) -> SubmitError {
        SubmitError {
            code: "cluster_unavailable",
            message: message.into(),
            nothing_decided: true,
        }
    }

    /// The cluster's log may have the command, or has it and this node has not
    /// applied it yet: it may be (or will be) decided.
    pub fn cluster_uncertain(message: impl Into<String>) -> SubmitError {
        SubmitError {
            nothing_decided: false,
            ..SubmitError::cluster_unavailable(message)
        }
    }

    /// A refusal before the command went anywhere (`code`, `message`).
    pub fn refused(code: &'static str, message: impl Into<String>) -> SubmitError {
        SubmitError {
            code,
            message: message.into(),
            nothing_decided: true,
        }
    }

    /// The pipeline cannot go on (see [`crate::fatal`]).
    pub fn node_failed(reason: &str) -> SubmitError {
        SubmitError {
            code: "node_failed",
            message: format!("the node cannot go on and is stopping: {reason}"),
            nothing_decided: false,
        }
    }
}

/// What the caller of a command gets back once it is durable.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seq: u64,
    pub at_ms: u64,
    /// The decision on the command itself.
    pub primary: Event,
}

// Nearly every request is a command; boxing it would cost an allocation each to
// shrink the rare shutdown.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Request {
    /// Boxed: the queue is an array of `submit_queue_max` requests made at start, so
    /// a request's size is paid `submit_queue_max` times (65 536 by default: 19 MB
    /// when a command was held inline, 1.5 MB boxed).
    Command(Box<CommandRequest>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct CommandRequest {
    pub(crate) actor: PrincipalId,
    pub(crate) justification: String,
    pub(crate) body: CommandBody,
    pub(crate) reply: oneshot::Sender<Outcome>,
    /// Answer once decided, before the sync.
    pub(crate) early: bool,
    /// Ordered by a cluster's log: its sequence number and proposed time.
    pub(crate) stamp: Option<Stamp>,
    /// Proposed by this node of a cluster (its signature verified).
    pub(crate) origin: Option<colony_kernel::cluster::Origin>,
}

#[derive(Clone, Debug)]
pub struct SequencerConfig {
    pub submit_queue_max: usize,
    pub batch_commands_max: usize,
    /// Commands decided but not yet taken by the flusher, at most; beyond, deciding
    /// waits for the flusher.
    pub unsynced_commands_max: usize,
    /// Commands answered once decided ([`Submitter::submit_decided`]) are synced
    /// within this many milliseconds (sooner when a command that waits for
    /// durability comes): a crash loses at most this window of them.
    pub decided_sync_within_ms: u64,
    /// Write a snapshot after this many commands since the last one.
    pub snapshot_every_commands: u64,
    /// Fault injection for tests: the decider panics on a command with exactly this
    /// justification. Test support only: not in a build without the
    /// `test-support` feature (see [`SequencerConfig::fault_from_env`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fault_panic_on_justification: Option<String>,
    /// What stamps commands with their time ([`SystemClock`] in a node).
    pub clock: Arc<dyn Clock>,
    /// Commands are ordered by a cluster's log (see [`replicated`]): from the start
    /// the decider logs no ticks of its own, and callers' commands are refused until
    /// a [`Replicator`] is attached. A node that is restarting has things due (its
    /// leases, reservations) before it has caught up with the log: a tick logged
    /// here then would take the place of the log's next command.
    pub replicated: bool,
    /// Prunes the command and decision logs after each snapshot (`retention.toml`'s
    /// `[logs]`); `None` keeps every record.
    pub pruning: Option<colony_log::prune::Pruning>,
}

impl Default for SequencerConfig {
    /// A node's defaults: group commit of up to 8 192 commands, decided-early
    /// commands synced within 5 ms, a snapshot every 100 000 commands, the system
    /// clock, no cluster, no pruning.
    fn default() -> Self {
        SequencerConfig {
            submit_queue_max: 65_536,
            batch_commands_max: 8_192,
            unsynced_commands_max: 65_536,
            decided_sync_within_ms: 5,
            snapshot_every_commands: 100_000,
            #[cfg(any(test, feature = "test-support"))]
            fault_panic_on_justification: None,
            clock: Arc::new(SystemClock),
            replicated: false,
            pruning: None,
        }
    }
}

impl SequencerConfig {
    /// Fault injection for the tests of a failing node: with the `test-support`
    /// feature (which the test builds turn on), the decider panics on a command
    /// whose justification is `COLONY_FAULT_PANIC_ON_JUSTIFICATION`; without it (a
    /// release build), nothing.
    pub fn fault_from_env(&mut self) {
        #[cfg(feature = "test-support")]
        {
            self.fault_panic_on_justification =
                std::env::var("COLONY_FAULT_PANIC_ON_JUSTIFICATION").ok();
        }
    }
}

/// The time commands are stamped with, in Unix milliseconds. Injected, so that the
/// pipeline can run on a controlled clock; the kernel never reads a clock itself.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Starts the sequencer and flusher threads over an opened store.
pub fn spawn(
    config: SequencerConfig,
    store: Store,
    state: Arc<RwLock<State>>,
    metrics: Arc<Metrics>,
    events: Arc<EventTap>,
    fatal: Arc<crate::fatal::Fatal>,
) -> (Submitter, std::thread::JoinHandle<()>) {
    let (sender, receiver) = std::sync::mpsc::sync_channel(config.submit_queue_max);
    let snapshots_dir = store.snapshots_dir();
    let (encoder, writer) = store.split();
    let snapshot_busy = Arc::new(AtomicBool::new(false));
    let snapshot_seq = state.read().expect("state lock").last_seq;
    let (durable, durable_receiver) = tokio::sync::watch::channel(snapshot_seq);
    let core = Arc::new(Core {
        decider: Mutex::new(Decider {
            encoder,
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            events: Arc::clone(&events),
            snapshot_seq,
            snapshot_busy: Arc::clone(&snapshot_busy),
            stopped: false,
            own_ticks: !config.replicated,
            fatal: Arc::clone(&fatal),
            clock: Arc::clone(&config.clock),
            #[cfg(any(test, feature = "test-support"))]
            fault_panic_on: config.fault_panic_on_justification.clone(),
        }),
        handoff: Handoff::default(),
        replicator: std::sync::OnceLock::new(),
        config: config.clone(),
        durable: durable_receiver,
        outbox: Default::default(),
    });
    let flusher = {
        let core = Arc::clone(&core);
        let flusher = Flusher {
            writer,
            decided_sync_within: Duration::from_millis(config.decided_sync_within_ms),
            urgent_commands: config.batch_commands_max,
            metrics: Arc::clone(&metrics),
            events,
            snapshots_dir,
            snapshot_busy,
            snapshot_writer: None,
            durable,
            pruning: config.pruning.clone(),
            clock: Arc::clone(&config.clock),
        };
        let fatal = Arc::clone(&fatal);
        std::thread::Builder::new()
            .name("colony-flusher".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    flusher.run(&core.handoff)
                }));
                if let Err(payload) = ran {
                    fatal.fail(format!(
                        "the flusher thread panicked: {}",
                        crate::fatal::panic_message(payload.as_ref())
                    ));
                }
            })
            .expect("spawn the flusher thread")
    };
    let sequencer = Sequencer {
        config,
        core: Arc::clone(&core),
        state,
        flusher: Some(flusher),
    };
    let handle = std::thread::Builder::new()
        .name("colony-sequencer".into())
        .spawn(move || sequencer.run(receiver))
        .expect("spawn the sequencer thread");
    (
        Submitter {
            sender,
            core,
            fatal,
        },
        handle,
    )
}

/// What deciding shares between the sequencer thread and callers deciding in place.
pub(crate) struct Core {
    decider: Mutex<Decider>,
    handoff: Handoff,
    /// Set in a cluster: callers' commands are proposed to its log.
    replicator: std::sync::OnceLock<Arc<dyn Replicator>>,
    config: SequencerConfig,
    /// The last command known durable.
    durable: tokio::sync::watch::Receiver<u64>,
    /// Background commands sent until decided (`crate::outbox`).
    pub(crate) outbox: crate::outbox::OutboxFigures,
}

impl Core {
    /// Decides all of `requests` on this thread, as one group, if the decider is free
    /// and the flusher has room (taking them); leaves them otherwise, to be queued.
    fn decide_all_now(&self, requests: &mut Vec<Request>) -> bool {
        let Ok(mut decider) = self.decider.try_lock() else {
            return false;
        };
        if decider.stopped || self.handoff.waiting_commands() >= self.config.unsynced_commands_max {
            return false;
        }
        let mut shutdown = None;
        let group = decider.decide(requests.drain(..), &mut shutdown);
        self.handoff.hand_over(group, &self.config);
        true
    }

    /// Decides one request on this thread if the decider is free and the flusher has
    /// room (taking it); leaves it otherwise, to be queued.
    fn decide_now(&self, request: &mut Option<Request>) {
        let Ok(mut decider) = self.decider.try_lock() else {
            return;
        };
        if decider.stopped || self.handoff.waiting_commands() >= self.config.unsynced_commands_max {
            return;
        }
        let mut shutdown = None;
        // Snapshots are left to the sequencer thread (it wakes at least every second).
        let group = decider.decide(request.take().into_iter(), &mut shutdown);
        self.handoff.hand_over(group, &self.config);
    }
}

/// A sweep over principals or sessions outside the sequencer (the bus meters'
/// refresh, the liveness round, the alert watcher) reads the kernel's state this
/// many at a time, releasing it between: a node with tens of thousands never holds
/// the state, and so the sequencer's next write and every reader queued behind it
/// (std's `RwLock` lets no reader in while a writer waits), for a whole sweep.
pub const ENTRIES_PER_STATE_READ: usize = 256;

/// The node's clock, in Unix milliseconds. Only the sequencer reads it for commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
