//! The [`Decider`]: stamps, applies and encodes commands, in one order, logging a
//! tick first when something is due; and snapshots.

use super::*;

/// What the bus wants to hear of a group, read once per group.
#[derive(Clone, Copy)]
pub(crate) struct Wanted {
    pub(crate) offers: bool,
    pub(crate) events: bool,
}

/// Stamps, applies and encodes commands, in one order. Held under [`Core::decider`]
/// from deciding until the group is handed over, so that groups reach the flusher in
/// the order of their sequence numbers.
pub(crate) struct Decider {
    pub(crate) encoder: RecordEncoder,
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Arc<EventTap>,
    pub(crate) snapshot_seq: u64,
    /// Set while a snapshot is being written.
    pub(crate) snapshot_busy: Arc<AtomicBool>,
    /// The last group went to the flusher: nothing more is decided.
    pub(crate) stopped: bool,
    /// Logs a tick when something is due (false in a cluster, whose log carries
    /// the ticks like any other command).
    pub(crate) own_ticks: bool,
    /// Set when the kernel panicked: nothing more is decided.
    pub(crate) fatal: Arc<crate::fatal::Fatal>,
    /// What stamps commands with their time.
    pub(crate) clock: Arc<dyn Clock>,
    /// See `SequencerConfig::fault_panic_on_justification` (test support).
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fault_panic_on: Option<String>,
}

impl Decider {
    /// Decides requests in order (after a tick, if something is due): the group of
    /// what was decided, for the flusher. Early requests are answered here.
    pub(crate) fn decide(
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
        if self.own_ticks && state.next_due_ms().is_some_and(|due| due <= clock.now_ms()) {
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
                Request::Command(command) => {
                    let CommandRequest {
                        actor,
                        justification,
                        body,
                        reply,
                        early,
                        stamp: ordered,
                        origin,
                    } = *command;
                    if self.fatal.is_failed() {
                        // Dropping the reply answers the caller `shutting_down`.
                        continue;
                    }
                    let place = ordered.and_then(|ordered| ordered.place);
                    let (seq, at_ms) = match ordered {
                        None => stamp(&state),
                        Some(ordered) => {
                            if ordered.seq != state.last_seq + 1 {
                                self.stopped = true;
                                self.fatal.fail(format!(
                                    "the cluster's log gave command {} after command {}: a gap or a repeat, so this node's state cannot follow it",
                                    ordered.seq, state.last_seq
                                ));
                                continue;
                            }
                            // Never behind the previous command: the same on every node.
                            (ordered.seq, ordered.proposed_ms.max(state.now_ms))
                        }
                    };
                    let command = Command {
                        seq,
                        at_ms,
                        actor,
                        justification,
                        body,
                        origin,
                        place,
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
        // Debug builds (every test) check the kernel's invariants after each decided
        // group; a broken one is a bug, and the node stops loudly. A release node does
        // not pay for the walk.
        #[cfg(debug_assertions)]
        if !group.records.is_empty() && !self.stopped {
            if let Err(broken) = state.check_invariants() {
                self.stopped = true;
                self.fatal.fail(format!(
                    "a kernel invariant broke after command {}: {broken}",
                    state.last_seq
                ));
            }
        }
        group
    }

    /// Applies one stamped command and adds it to the group: its records, and what
    /// to tell once it is durable. Returns its primary decision, or `None` when the
    /// kernel panicked: the node has then failed, the command is not recorded, and
    /// nothing more is decided (the state may be half changed).
    pub(crate) fn apply(
        &mut self,
        state: &mut State,
        group: &mut Group,
        command: Command,
        wanted: Wanted,
    ) -> Option<Event> {
        #[cfg(any(test, feature = "test-support"))]
        let fault = self.fault_panic_on.as_deref() == Some(command.justification.as_str());
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(any(test, feature = "test-support"))]
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
        group.retired.append(&mut applied.retired);
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
    pub(crate) fn maybe_snapshot(
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

pub(crate) fn decision_index(event: &Event) -> usize {
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
