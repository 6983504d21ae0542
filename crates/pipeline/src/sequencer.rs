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
//! Why one file of ~900 lines: the submitter, the decider and the flusher share the
//! handoff between them; the next split is one file each (the architecture issue).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony_kernel::{Command, CommandBody, Decision, Effect, Event, PrincipalId, State};
use colony_log::{snapshot, EncodedRecords, LogWriter, RecordEncoder, Store};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Why a command was not decided: the caller gets no decision, and may retry.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct SubmitError {
    /// `overloaded`, `shutting_down` or `node_failed`.
    pub code: &'static str,
    pub message: String,
}

impl SubmitError {
    /// The queue is full (`submit_queue_max`): retry shortly.
    pub fn overloaded() -> SubmitError {
        SubmitError {
            code: "overloaded",
            message: "the node's command queue is full; retry shortly".into(),
        }
    }

    pub fn shutting_down() -> SubmitError {
        SubmitError {
            code: "shutting_down",
            message: "the node is shutting down".into(),
        }
    }

    /// The pipeline cannot go on (see [`crate::fatal`]).
    pub fn node_failed(reason: &str) -> SubmitError {
        SubmitError {
            code: "node_failed",
            message: format!("the node cannot go on and is stopping: {reason}"),
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
    core: Arc<Core>,
    fatal: Arc<crate::fatal::Fatal>,
}

impl Submitter {
    /// Queues a command and waits until it is durable. A full queue is answered at
    /// once with `overloaded` (503) rather than by waiting.
    pub async fn submit(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, SubmitError> {
        self.send(actor, justification, body, false).await
    }

    /// Like [`Submitter::submit`], but answered as soon as the kernel has decided,
    /// before the group holding the command is synced (it is synced within
    /// `decided_sync_within_ms`). Decided on the calling thread when the decider is
    /// free. For callers that need the decision on a hot path and whose own effects
    /// follow it (the LLM gateway's reservations and settlements): if the node stops
    /// in between, the command is lost with the call it guarded.
    pub async fn submit_decided(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
    ) -> Result<Outcome, SubmitError> {
        self.send(actor, justification, body, true).await
    }

    async fn send(
        &self,
        actor: PrincipalId,
        justification: String,
        body: CommandBody,
        early: bool,
    ) -> Result<Outcome, SubmitError> {
        if let Some(reason) = self
            .fatal
            .is_failed()
            .then(|| self.fatal.reason())
            .flatten()
        {
            return Err(SubmitError::node_failed(&reason));
        }
        let (reply, answer) = oneshot::channel();
        let mut request = Some(Request::Command {
            actor,
            justification,
            body,
            reply,
            early,
        });
        if early {
            self.core.decide_now(&mut request);
        }
        match request {
            None => answer.await.map_err(|_| SubmitError::shutting_down()),
            Some(request) => self.queue(request, answer).await,
        }
    }

    async fn queue(
        &self,
        request: Request,
        answer: oneshot::Receiver<Outcome>,
    ) -> Result<Outcome, SubmitError> {
        match self.sender.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::shutting_down()),
        }
        answer.await.map_err(|_| SubmitError::shutting_down())
    }

    /// Waits until every command up to `seq` is durable (and readable in the decision
    /// log), asking the flusher to sync at once rather than at the end of its window.
    /// False when the node stops first.
    pub async fn synced_through(&self, seq: u64) -> bool {
        let mut durable = self.core.durable.clone();
        if *durable.borrow() >= seq {
            return true;
        }
        self.core.handoff.hurry(seq);
        let synced = durable.wait_for(|synced| *synced >= seq).await.is_ok();
        synced
    }

    pub async fn shutdown(&self) {
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
    /// justification (honoured in debug builds only).
    #[doc(hidden)]
    pub fault_panic_on_justification: Option<String>,
    /// What stamps commands with their time ([`SystemClock`] in a node).
    pub clock: Arc<dyn Clock>,
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
            fatal: Arc::clone(&fatal),
            clock: Arc::clone(&config.clock),
            fault_panic_on: config
                .fault_panic_on_justification
                .clone()
                .filter(|_| cfg!(debug_assertions)),
        }),
        handoff: Handoff::default(),
        config: config.clone(),
        durable: durable_receiver,
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
struct Core {
    decider: Mutex<Decider>,
    handoff: Handoff,
    config: SequencerConfig,
    /// The last command known durable.
    durable: tokio::sync::watch::Receiver<u64>,
}

impl Core {
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

/// What the bus wants to hear of a group, read once per group.
#[derive(Clone, Copy)]
struct Wanted {
    offers: bool,
    events: bool,
}

/// Stamps, applies and encodes commands, in one order. Held under [`Core::decider`]
/// from deciding until the group is handed over, so that groups reach the flusher in
/// the order of their sequence numbers.
struct Decider {
    encoder: RecordEncoder,
    state: Arc<RwLock<State>>,
    metrics: Arc<Metrics>,
    events: Arc<EventTap>,
    snapshot_seq: u64,
    /// Set while a snapshot is being written.
    snapshot_busy: Arc<AtomicBool>,
    /// The last group went to the flusher: nothing more is decided.
    stopped: bool,
    /// Set when the kernel panicked: nothing more is decided.
    fatal: Arc<crate::fatal::Fatal>,
    /// What stamps commands with their time.
    clock: Arc<dyn Clock>,
    /// See [`SequencerConfig::fault_panic_on_justification`].
    fault_panic_on: Option<String>,
}

impl Decider {
    /// Decides requests in order (after a tick, if something is due): the group of
    /// what was decided, for the flusher. Early requests are answered here.
    fn decide(
        &mut self,
        requests: impl Iterator<Item = Request>,
        shutdown: &mut Option<oneshot::Sender<()>>,
    ) -> Group {
        let mut group = Group::default();
        let shared_state = Arc::clone(&self.state);
        let mut state = shared_state.write().expect("state lock");
        let clock = Arc::clone(&self.clock);
        let stamp = |state: &State| (state.last_seq + 1, clock.now_ms().max(state.now_ms));
        let wanted = Wanted {
            offers: self.events.offers_wanted(),
            events: self.events.wanted(),
        };
        if state.next_due_ms().is_some_and(|due| due <= clock.now_ms()) {
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
            self.apply(&mut state, &mut group, command, wanted);
        }
        for request in requests {
            match request {
                Request::Command {
                    actor,
                    justification,
                    body,
                    reply,
                    early,
                } => {
                    if self.fatal.is_failed() {
                        // Dropping the reply answers the caller `shutting_down`.
                        continue;
                    }
                    let (seq, at_ms) = stamp(&state);
                    let command = Command {
                        seq,
                        at_ms,
                        actor,
                        justification,
                        body,
                    };
                    let Some(primary) = self.apply(&mut state, &mut group, command, wanted) else {
                        continue;
                    };
                    let outcome = Outcome {
                        seq,
                        at_ms,
                        primary,
                    };
                    if early {
                        let _ = reply.send(outcome);
                    } else {
                        group.replies.push((reply, outcome));
                    }
                }
                Request::Shutdown { reply } => *shutdown = Some(reply),
            }
        }
        group
    }

    /// Applies one stamped command and adds it to the group: its records, and what
    /// to tell once it is durable. Returns its primary decision, or `None` when the
    /// kernel panicked: the node has then failed, the command is not recorded, and
    /// nothing more is decided (the state may be half changed).
    fn apply(
        &mut self,
        state: &mut State,
        group: &mut Group,
        command: Command,
        wanted: Wanted,
    ) -> Option<Event> {
        let fault = self.fault_panic_on.as_deref() == Some(command.justification.as_str());
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if fault {
                panic!("fault injected for a test");
            }
            state.apply(&command)
        }));
        let mut applied = match decided {
            Ok(applied) => applied,
            Err(payload) => {
                self.stopped = true;
                self.fatal.fail(format!(
                    "the kernel panicked deciding command {} ({} by {}): {}; it was not recorded",
                    command.seq,
                    command.body.name(),
                    command.actor,
                    crate::fatal::panic_message(payload.as_ref())
                ));
                return None;
            }
        };
        group
            .records
            .push(self.encoder.encode(&command, &applied, state));
        if wanted.offers {
            group.offered.append(&mut applied.offered);
        }
        for event in &applied.events {
            group.decisions[decision_index(event)] += 1;
        }
        group.note_admissions(&applied.events);
        let primary = applied.events[applied.primary_index].clone();
        if wanted.events {
            group.published.push((command, applied.events));
        }
        Some(primary)
    }

    /// Adds a snapshot to the group when enough commands have passed (or at
    /// shutdown), encoded here; the flusher writes it once the group is durable.
    fn maybe_snapshot(
        &mut self,
        group: &mut Group,
        final_snapshot: bool,
        config: &SequencerConfig,
    ) {
        let state = self.state.read().expect("state lock");
        let last_seq = state.last_seq;
        let due = last_seq > self.snapshot_seq
            && (final_snapshot || last_seq - self.snapshot_seq >= config.snapshot_every_commands);
        if !due || (!final_snapshot && self.snapshot_busy.load(Ordering::Acquire)) {
            return;
        }
        self.snapshot_busy.store(true, Ordering::Release);
        group.snapshot = Some((last_seq, snapshot::encode_state(&state)));
        self.snapshot_seq = last_seq;
    }
}

/// The thread that takes queued requests in batches.
struct Sequencer {
    config: SequencerConfig,
    core: Arc<Core>,
    state: Arc<RwLock<State>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// What the decider hands the flusher: decided commands, encoded, in order, with
/// what to do once they are durable.
#[derive(Default)]
struct Group {
    records: Vec<EncodedRecords>,
    /// Callers answered once their command is durable.
    replies: Vec<(oneshot::Sender<Outcome>, Outcome)>,
    decisions: [u64; 6],
    /// Decisions to publish on the bus once durable.
    published: Vec<(Command, Vec<Event>)>,
    /// Tasks that became claimable, offered once durable.
    offered: Vec<String>,
    /// Worker sessions a queue admitted, told once durable.
    admitted: Vec<u64>,
    /// A snapshot of the state after the last command of this group: `(seq, bytes)`.
    snapshot: Option<(u64, Vec<u8>)>,
    /// The last group: write the snapshot before answering, then stop.
    last: bool,
    /// When the first of these commands was handed over.
    first_at: Option<Instant>,
}

impl Group {
    /// Worker sessions admitted from the `active_workers` queue by these events.
    fn note_admissions(&mut self, events: &[Event]) {
        for event in events {
            if let (Decision::Admitted, Effect::WorkerRegistered { worker, .. }) =
                (&event.decision, &event.effect)
            {
                self.admitted.push(*worker);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.snapshot.is_none() && !self.last
    }

    /// Whether the flusher should sync now: someone waits for durability, the node
    /// stops, or many commands wait.
    fn urgent(&self, urgent_commands: usize) -> bool {
        !self.replies.is_empty() || self.last || self.records.len() >= urgent_commands
    }

    fn append(&mut self, other: Group) {
        self.records.extend(other.records);
        self.replies.extend(other.replies);
        for (total, count) in self.decisions.iter_mut().zip(other.decisions) {
            *total += count;
        }
        self.published.extend(other.published);
        self.offered.extend(other.offered);
        self.admitted.extend(other.admitted);
        if other.snapshot.is_some() {
            self.snapshot = other.snapshot;
        }
        self.last |= other.last;
    }
}

/// The group waiting for the flusher, and the two conditions around it.
#[derive(Default)]
struct Handoff {
    waiting: Mutex<Group>,
    /// The flusher waits for a group.
    filled: Condvar,
    /// Deciding waits for room (`unsynced_commands_max`).
    taken: Condvar,
    /// Whether the flusher is writing and syncing a group.
    syncing: Mutex<bool>,
    /// The flusher finished a group.
    synced: Condvar,
    /// Commands up to this one are synced as soon as they reach the flusher (a
    /// reader waits for them).
    hurry_through: std::sync::atomic::AtomicU64,
}

impl Handoff {
    /// Asks for commands up to `seq` to be synced without waiting for company.
    fn hurry(&self, seq: u64) {
        self.hurry_through.fetch_max(seq, Ordering::AcqRel);
        let waiting = self.waiting.lock().expect("handoff lock");
        let wake = self.hurried(&waiting);
        drop(waiting);
        if wake {
            self.filled.notify_one();
        }
    }

    /// Whether the group holds a command someone waits to read.
    fn hurried(&self, group: &Group) -> bool {
        group
            .records
            .first()
            .is_some_and(|first| first.seq <= self.hurry_through.load(Ordering::Acquire))
    }

    /// Waits until the flusher is not syncing. The sequencer thread does before it
    /// takes a batch from the queue, so that whatever queues during a sync is
    /// decided (and later synced) as one batch, as in a plain group commit.
    fn wait_until_synced(&self) {
        let mut syncing = self.syncing.lock().expect("handoff lock");
        while *syncing {
            syncing = self.synced.wait(syncing).expect("handoff lock");
        }
    }

    fn set_syncing(&self, now: bool) {
        *self.syncing.lock().expect("handoff lock") = now;
        if !now {
            self.synced.notify_all();
        }
    }

    fn waiting_commands(&self) -> usize {
        self.waiting.lock().expect("handoff lock").records.len()
    }

    /// Adds a group to what waits for the flusher, first waiting while too many
    /// commands already wait.
    fn hand_over(&self, group: Group, config: &SequencerConfig) {
        if group.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock().expect("handoff lock");
        while !waiting.records.is_empty()
            && waiting.records.len() + group.records.len() > config.unsynced_commands_max
        {
            waiting = self.taken.wait(waiting).expect("handoff lock");
        }
        let wake = waiting.is_empty() || group.urgent(config.batch_commands_max);
        waiting.first_at.get_or_insert_with(Instant::now);
        waiting.append(group);
        let wake = wake || waiting.urgent(config.batch_commands_max) || self.hurried(&waiting);
        drop(waiting);
        if wake {
            self.filled.notify_one();
        }
    }
}

/// How long the sequencer sleeps at most when idle, to notice due ticks.
const IDLE_WAKE_MS: u64 = 1_000;

impl Sequencer {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.config.batch_commands_max);
        let mut shutdown = None;
        loop {
            let wait_ms = {
                let state = self.state.read().expect("state lock");
                state.next_due_ms().map_or(IDLE_WAKE_MS, |due| {
                    due.saturating_sub(self.config.clock.now_ms())
                        .min(IDLE_WAKE_MS)
                })
            };
            let disconnected = match receiver.recv_timeout(Duration::from_millis(wait_ms)) {
                Ok(request) => {
                    batch.push(request);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            self.core.handoff.wait_until_synced();
            while batch.len() < self.config.batch_commands_max {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let mut decider = self.core.decider.lock().expect("decider lock");
            let mut group = decider.decide(batch.drain(..), &mut shutdown);
            let failed = decider.fatal.is_failed();
            let stopping = shutdown.is_some() || disconnected || failed;
            if !failed {
                // Never a snapshot of a state the kernel may have left half changed.
                decider.maybe_snapshot(&mut group, stopping, &self.config);
            }
            group.last = stopping;
            decider.stopped = stopping;
            self.core.handoff.hand_over(group, &self.config);
            drop(decider);
            if stopping {
                break;
            }
        }
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }
}

/// What hears of decisions once they are durable. The bus implements it; the
/// sequencer never names the bus.
pub trait DecisionSink: Send + Sync {
    /// Whether anyone wants the decisions (publishing costs nothing otherwise).
    fn wants_decisions(&self) -> bool;
    /// Whether anyone wants the offers of tasks that became claimable.
    fn wants_offers(&self) -> bool;
    /// Tasks that became claimable.
    fn offer(&self, tasks: &[String]);
    /// Worker sessions an admission queue admitted.
    fn admitted(&self, workers: &[u64]);
    /// A command and every decision it led to.
    fn decided(&self, command: &Command, events: &[Event]);
}

/// Where the sequencer publishes decisions once they are durable: the sink, set
/// once it exists (the bus is made after the sequencer starts).
#[derive(Default)]
pub struct EventTap {
    sink: std::sync::OnceLock<Arc<dyn DecisionSink>>,
}

impl EventTap {
    pub fn connect(&self, sink: Arc<dyn DecisionSink>) {
        let _ = self.sink.set(sink);
    }

    fn wanted(&self) -> bool {
        self.sink.get().is_some_and(|sink| sink.wants_decisions())
    }

    fn offers_wanted(&self) -> bool {
        self.sink.get().is_some_and(|sink| sink.wants_offers())
    }
}

/// The thread that writes and syncs the logs, then answers.
struct Flusher {
    writer: LogWriter,
    /// How long commands answered once decided may wait for their sync.
    decided_sync_within: Duration,
    /// This many waiting commands are synced at once.
    urgent_commands: usize,
    metrics: Arc<Metrics>,
    events: Arc<EventTap>,
    snapshots_dir: std::path::PathBuf,
    snapshot_busy: Arc<AtomicBool>,
    snapshot_writer: Option<std::thread::JoinHandle<()>>,
    /// Tells readers the last command synced.
    durable: tokio::sync::watch::Sender<u64>,
}

impl Flusher {
    fn run(mut self, handoff: &Handoff) {
        loop {
            let group = {
                let mut waiting = handoff.waiting.lock().expect("handoff lock");
                loop {
                    if waiting.is_empty() {
                        waiting = handoff.filled.wait(waiting).expect("handoff lock");
                        continue;
                    }
                    if waiting.urgent(self.urgent_commands) || handoff.hurried(&waiting) {
                        break;
                    }
                    // Only commands already answered wait: sync them within the bound,
                    // with whatever else comes meanwhile.
                    let deadline =
                        waiting.first_at.unwrap_or_else(Instant::now) + self.decided_sync_within;
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    waiting = handoff
                        .filled
                        .wait_timeout(waiting, deadline - now)
                        .expect("handoff lock")
                        .0;
                }
                handoff.set_syncing(true);
                std::mem::take(&mut *waiting)
            };
            handoff.taken.notify_all();
            let last = group.last;
            self.flush(group);
            handoff.set_syncing(false);
            if last {
                break;
            }
        }
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
    }

    fn flush(&mut self, group: Group) {
        if !group.records.is_empty() {
            let started = Instant::now();
            for records in &group.records {
                if let Err(error) = self.writer.append(records) {
                    tracing::error!("cannot append to the log, stopping: {error}");
                    std::process::abort();
                }
            }
            if let Err(error) = self.writer.sync() {
                // The kernel state is ahead of the disk and callers would be told their
                // commands are durable: the only safe move is to stop here.
                tracing::error!("cannot make the log durable, stopping: {error}");
                std::process::abort();
            }
            self.metrics.record_batch(
                group.records.len() as u64,
                started.elapsed(),
                &group.decisions,
            );
            if let Some(last) = group.records.last() {
                self.durable.send_replace(last.seq);
            }
        }
        for (reply, outcome) in group.replies {
            // A caller that went away (timeout, disconnect) just misses its answer;
            // the command stands.
            let _ = reply.send(outcome);
        }
        if let Some(sink) = self.events.sink.get() {
            if !group.offered.is_empty() {
                sink.offer(&group.offered);
            }
            if !group.admitted.is_empty() {
                sink.admitted(&group.admitted);
            }
            for (command, events) in &group.published {
                sink.decided(command, events);
            }
        }
        if let Some((seq, payload)) = group.snapshot {
            self.write_snapshot(seq, payload, group.last);
        }
    }

    /// Writes a snapshot of durable commands: on a helper thread, or here when it
    /// is the last.
    fn write_snapshot(&mut self, seq: u64, payload: Vec<u8>, here: bool) {
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
        let dir = self.snapshots_dir.clone();
        let metrics = Arc::clone(&self.metrics);
        let busy = Arc::clone(&self.snapshot_busy);
        let write = move || {
            match snapshot::write_snapshot(&dir, seq, &payload) {
                Ok(path) => {
                    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %path.display(), "snapshot written at command {seq}");
                }
                Err(error) => {
                    tracing::warn!("snapshot at command {seq} failed (the log is intact): {error}")
                }
            }
            busy.store(false, Ordering::Release);
        };
        if here {
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

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
