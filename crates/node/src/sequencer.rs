//! The sequencer: the single writer that turns requests into durable decisions.
//!
//! Requests arrive on a bounded queue ([`NodeConfig::submit_queue_max`](crate::NodeConfig)).
//! The thread takes every request waiting (up to `batch_commands_max`), and for each:
//! stamps the next sequence number and the time (never earlier than the last), applies
//! it to the kernel, and appends the command and its decision records to the store.
//! Then one sync makes the whole batch durable, and only then is each caller answered.
//! When a reservation's time is due, the sequencer logs a tick by itself.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony_kernel::{Command, CommandBody, Event, PrincipalId, State};
use colony_log::{snapshot, Store};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::ApiError;

/// What the caller of a command gets back once it is durable.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seq: u64,
    pub at_ms: u64,
    /// The decision on the command itself.
    pub primary: Event,
}

pub(crate) enum Request {
    Command {
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        reply: oneshot::Sender<Outcome>,
        /// Answer once decided, before the sync.
        early: bool,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The sending side, shared by every request handler.
#[derive(Clone)]
pub struct Submitter {
    sender: SyncSender<Request>,
}

impl Submitter {
    /// Queues a command and waits until it is durable. A full queue is answered at
    /// once with `overloaded` (503) rather than by waiting.
    pub async fn submit(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, ApiError> {
        self.send(actor, justification, body, false).await
    }

    /// Like [`Submitter::submit`], but answered as soon as the kernel has decided,
    /// before the batch holding the command is synced (it is synced right after,
    /// with its batch). For callers that need the decision on a hot path and whose
    /// own effects follow it (the LLM gateway's reservations): if the node stops in
    /// between, the command is lost with the call it guarded.
    pub async fn submit_decided(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, ApiError> {
        self.send(actor, justification, body, true).await
    }

    async fn send(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        early: bool,
    ) -> Result<Outcome, ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.sender.try_send(Request::Command {
            actor,
            justification,
            body,
            reply,
            early,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ApiError::overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::shutting_down()),
        }
        answer.await.map_err(|_| ApiError::shutting_down())
    }

    pub(crate) async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        // A blocking send: shutdown waits for room in the queue like anyone else.
        let sender = self.sender.clone();
        let sent =
            tokio::task::spawn_blocking(move || sender.send(Request::Shutdown { reply }).is_ok())
                .await;
        if matches!(sent, Ok(true)) {
            let _ = done.await;
        }
    }
}

#[derive(Clone, Debug)]
pub struct SequencerConfig {
    pub submit_queue_max: usize,
    pub batch_commands_max: usize,
    /// Write a snapshot after this many commands since the last one.
    pub snapshot_every_commands: u64,
}

/// Starts the sequencer thread over an opened store.
pub(crate) fn spawn(
    config: SequencerConfig,
    store: Store,
    state: Arc<RwLock<State>>,
    metrics: Arc<Metrics>,
    events: Arc<EventTap>,
) -> (Submitter, std::thread::JoinHandle<()>) {
    let (sender, receiver) = std::sync::mpsc::sync_channel(config.submit_queue_max);
    let handle = std::thread::Builder::new()
        .name("colony-sequencer".into())
        .spawn(move || {
            Sequencer {
                config,
                store,
                state,
                metrics,
                snapshot_seq: 0,
                snapshot_writer: None,
                events,
                published: Vec::new(),
                offered: Vec::new(),
            }
            .run(receiver)
        })
        .expect("spawn the sequencer thread");
    (Submitter { sender }, handle)
}

struct Sequencer {
    config: SequencerConfig,
    store: Store,
    state: Arc<RwLock<State>>,
    metrics: Arc<Metrics>,
    snapshot_seq: u64,
    snapshot_writer: Option<std::thread::JoinHandle<()>>,
    events: Arc<EventTap>,
    /// Decisions of this batch to publish on the bus once they are durable.
    published: Vec<(Command, Vec<colony_kernel::Event>)>,
    /// Tasks that became claimable in this batch, offered once it is durable.
    offered: Vec<String>,
}

/// Where the sequencer publishes decisions once they are durable: the bus, set when
/// it exists.
#[derive(Default)]
pub struct EventTap {
    bus: std::sync::OnceLock<Arc<crate::bus::Bus>>,
}

impl EventTap {
    pub fn connect(&self, bus: Arc<crate::bus::Bus>) {
        let _ = self.bus.set(bus);
    }

    fn wanted(&self) -> bool {
        self.bus.get().is_some_and(|bus| bus.wants_events())
    }

    fn offers_wanted(&self) -> bool {
        self.bus
            .get()
            .is_some_and(|bus| bus.has_subscribers(crate::bus::TASK_OFFERS_SUBJECT))
    }
}

/// How long the sequencer sleeps at most when idle, to notice due ticks.
const IDLE_WAKE_MS: u64 = 1_000;

impl Sequencer {
    fn run(mut self, receiver: Receiver<Request>) {
        self.snapshot_seq = self.state.read().expect("state lock").last_seq;
        let mut batch = Vec::with_capacity(self.config.batch_commands_max);
        let mut shutdown = None;
        loop {
            let wait_ms = {
                let state = self.state.read().expect("state lock");
                state.next_due_ms().map_or(IDLE_WAKE_MS, |due| {
                    due.saturating_sub(now_ms()).min(IDLE_WAKE_MS)
                })
            };
            match receiver.recv_timeout(Duration::from_millis(wait_ms)) {
                Ok(request) => batch.push(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < self.config.batch_commands_max {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let mut replies = Vec::with_capacity(batch.len());
            self.process(&mut batch, &mut replies, &mut shutdown);
            for (reply, outcome) in replies {
                // A caller that went away (timeout, disconnect) just misses its answer;
                // the command stands.
                let _ = reply.send(outcome);
            }
            if shutdown.is_some() {
                break;
            }
            self.maybe_snapshot(false);
        }
        self.maybe_snapshot(true);
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn process(
        &mut self,
        batch: &mut Vec<Request>,
        replies: &mut Vec<(oneshot::Sender<Outcome>, Outcome)>,
        shutdown: &mut Option<oneshot::Sender<()>>,
    ) {
        let shared_state = Arc::clone(&self.state);
        let mut state = shared_state.write().expect("state lock");
        let mut appended = 0u64;
        let mut decisions = [0u64; 6];
        let stamp = |state: &State| (state.last_seq + 1, now_ms().max(state.now_ms));
        let offers_wanted = self.events.offers_wanted();
        if state.next_due_ms().is_some_and(|due| due <= now_ms()) {
            // Something is due. The node's health figures go first, so that a
            // stability window closing now counts them; either command lets time pass.
            let (body, justification) = match self.metrics.take_health() {
                Some(health) => (
                    CommandBody::ReportHealth(health),
                    "the node's figures since its last report",
                ),
                None => (CommandBody::Tick, "time passes: something is due"),
            };
            let (seq, at_ms) = stamp(&state);
            let command = Command::new(seq, at_ms, PrincipalId::SYSTEM, justification, body);
            let mut applied = state.apply(&command);
            self.append(&command, &applied, &state);
            if offers_wanted {
                self.offered.append(&mut applied.offered);
            }
            if self.events.wanted() {
                self.published.push((command, applied.events));
            }
            appended += 1;
        }
        for request in batch.drain(..) {
            match request {
                Request::Command {
                    actor,
                    justification,
                    body,
                    reply,
                    early,
                } => {
                    let (seq, at_ms) = stamp(&state);
                    let command = Command {
                        seq,
                        at_ms,
                        actor,
                        justification,
                        body,
                    };
                    let mut applied = state.apply(&command);
                    self.append(&command, &applied, &state);
                    if offers_wanted {
                        self.offered.append(&mut applied.offered);
                    }
                    for event in &applied.events {
                        decisions[decision_index(event)] += 1;
                    }
                    let primary = applied.events[applied.primary_index].clone();
                    if self.events.wanted() {
                        self.published.push((command, applied.events));
                    }
                    let outcome = Outcome {
                        seq,
                        at_ms,
                        primary,
                    };
                    if early {
                        let _ = reply.send(outcome);
                    } else {
                        replies.push((reply, outcome));
                    }
                    appended += 1;
                }
                Request::Shutdown { reply } => *shutdown = Some(reply),
            }
        }
        drop(state);
        if appended == 0 {
            return;
        }
        let started = Instant::now();
        if let Err(error) = self.store.sync() {
            // The kernel state is ahead of the disk and callers would be told their
            // commands are durable: the only safe move is to stop here.
            tracing::error!("cannot make the log durable, stopping: {error}");
            std::process::abort();
        }
        self.metrics
            .record_batch(appended, started.elapsed(), &decisions);
        if !self.offered.is_empty() {
            if let Some(bus) = self.events.bus.get() {
                bus.publish_offers(&std::mem::take(&mut self.offered));
            }
        }
        if !self.published.is_empty() {
            if let Some(bus) = self.events.bus.get() {
                for (command, events) in self.published.drain(..) {
                    bus.publish_events(&command, &events);
                }
            }
        }
    }

    fn append(&mut self, command: &Command, applied: &colony_kernel::Applied, state: &State) {
        if let Err(error) = self.store.append(command, applied, state) {
            tracing::error!("cannot append to the log, stopping: {error}");
            std::process::abort();
        }
    }

    /// Writes a snapshot when enough commands have passed (or at shutdown), encoding
    /// here and writing on a helper thread.
    fn maybe_snapshot(&mut self, final_snapshot: bool) {
        let last_seq = self.state.read().expect("state lock").last_seq;
        let due = last_seq > self.snapshot_seq
            && (final_snapshot
                || last_seq - self.snapshot_seq >= self.config.snapshot_every_commands);
        if !due
            || self
                .snapshot_writer
                .as_ref()
                .is_some_and(|w| !w.is_finished())
        {
            return;
        }
        let payload = snapshot::encode_state(&self.state.read().expect("state lock"));
        let dir = self.store.snapshots_dir();
        let metrics = Arc::clone(&self.metrics);
        self.snapshot_seq = last_seq;
        let write = move || match snapshot::write_snapshot(&dir, last_seq, &payload) {
            Ok(path) => {
                metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %path.display(), "snapshot written at command {last_seq}");
            }
            Err(error) => {
                tracing::warn!("snapshot at command {last_seq} failed (the log is intact): {error}")
            }
        };
        if final_snapshot {
            write();
        } else {
            self.snapshot_writer = Some(std::thread::spawn(write));
        }
    }
}

fn decision_index(event: &Event) -> usize {
    use colony_kernel::Decision::*;
    match event.decision {
        Allowed => 0,
        Warned => 1,
        Queued => 2,
        Admitted => 3,
        Denied => 4,
        Expired => 5,
    }
}

/// The node's clock, in Unix milliseconds. Only the sequencer reads it for commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
