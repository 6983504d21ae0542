//! What the decider hands the flusher ([`Group`]) and the handoff between them
//! ([`Handoff`]): at most `unsynced_commands_max` commands wait; a reader can hurry a
//! sync.

use super::*;

/// What the decider hands the flusher: decided commands, encoded, in order, with
/// what to do once they are durable.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) records: Vec<EncodedRecords>,
    /// Callers answered once their command is durable.
    pub(crate) replies: Vec<(oneshot::Sender<Outcome>, Outcome)>,
    pub(crate) decisions: [u64; 6],
    /// Decisions to publish on the bus once durable.
    pub(crate) published: Vec<(Command, Vec<Event>)>,
    /// Tasks that became claimable, offered once durable.
    pub(crate) offered: Vec<colony_kernel::TaskAddress>,
    /// Worker sessions a queue admitted, told once durable.
    pub(crate) admitted: Vec<u64>,
    /// Tasks that left the live state, archived once their commands are durable.
    pub(crate) retired: Vec<colony_kernel::tasks::Task>,
    /// A snapshot of the state after the last command of this group: `(seq, bytes)`.
    pub(crate) snapshot: Option<(u64, Vec<u8>)>,
    /// The last group: write the snapshot before answering, then stop.
    pub(crate) last: bool,
    /// When the first of these commands was handed over.
    pub(crate) first_at: Option<Instant>,
}

impl Group {
    /// Worker sessions admitted from the `active_workers` queue by these events.
    pub(crate) fn note_admissions(&mut self, events: &[Event]) {
        for event in events {
            if let (Decision::Admitted, Effect::WorkerRegistered { worker, .. }) =
                (&event.decision, &event.effect)
            {
                self.admitted.push(*worker);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.snapshot.is_none() && !self.last
    }

    /// Whether the flusher should sync now: someone waits for durability, the node
    /// stops, or many commands wait.
    pub(crate) fn urgent(&self, urgent_commands: usize) -> bool {
        !self.replies.is_empty() || self.last || self.records.len() >= urgent_commands
    }

    pub(crate) fn append(&mut self, other: Group) {
        self.records.extend(other.records);
        self.replies.extend(other.replies);
        for (total, count) in self.decisions.iter_mut().zip(other.decisions) {
            *total += count;
        }
        self.published.extend(other.published);
        self.offered.extend(other.offered);
        self.admitted.extend(other.admitted);
        self.retired.extend(other.retired);
        if other.snapshot.is_some() {
            self.snapshot = other.snapshot;
        }
        self.last |= other.last;
    }
}

/// The group waiting for the flusher, and the two conditions around it.
#[derive(Default)]
pub(crate) struct Handoff {
    pub(crate) waiting: Mutex<Group>,
    /// The flusher waits for a group.
    pub(crate) filled: Condvar,
    /// Deciding waits for room (`unsynced_commands_max`).
    pub(crate) taken: Condvar,
    /// Whether the flusher is writing and syncing a group.
    pub(crate) syncing: Mutex<bool>,
    /// The flusher finished a group.
    pub(crate) synced: Condvar,
    /// Commands up to this one are synced as soon as they reach the flusher (a
    /// reader waits for them).
    pub(crate) hurry_through: std::sync::atomic::AtomicU64,
}

impl Handoff {
    /// Asks for commands up to `seq` to be synced without waiting for company.
    pub(crate) fn hurry(&self, seq: u64) {
        self.hurry_through.fetch_max(seq, Ordering::AcqRel);
        let waiting = self.waiting.lock().expect("handoff lock");
        let wake = self.hurried(&waiting);
        drop(waiting);
        if wake {
            self.filled.notify_one();
        }
    }

    /// Whether the group holds a command someone waits to read.
    pub(crate) fn hurried(&self, group: &Group) -> bool {
        group
            .records
            .first()
            .is_some_and(|first| first.seq <= self.hurry_through.load(Ordering::Acquire))
    }

    /// Waits until the flusher is not syncing. The sequencer thread does before it
    /// takes a batch from the queue, so that whatever queues during a sync is
    /// decided (and later synced) as one batch, as in a plain group commit.
    pub(crate) fn wait_until_synced(&self) {
        let mut syncing = self.syncing.lock().expect("handoff lock");
        while *syncing {
            syncing = self.synced.wait(syncing).expect("handoff lock");
        }
    }

    pub(crate) fn set_syncing(&self, now: bool) {
        *self.syncing.lock().expect("handoff lock") = now;
        if !now {
            self.synced.notify_all();
        }
    }

    pub(crate) fn waiting_commands(&self) -> usize {
        self.waiting.lock().expect("handoff lock").records.len()
    }

    /// Adds a group to what waits for the flusher, first waiting while too many
    /// commands already wait.
    pub(crate) fn hand_over(&self, group: Group, config: &SequencerConfig) {
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
