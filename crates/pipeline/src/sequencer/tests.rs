//! The sequencer's own tests: one order for decided and durable commands, sync
//! windows, a full queue, a panicking kernel, an injected clock.

use super::*;
use colony_log::StoreOptions;

struct Running {
    submitter: Submitter,
    thread: Option<std::thread::JoinHandle<()>>,
    audit: colony_log::LogReader,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Running {
    /// Shuts the sequencer down (everything decided is then durable).
    async fn stop(&mut self) {
        self.submitter.shutdown().await;
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn start(decided_sync_within_ms: u64, unsynced_commands_max: usize) -> Running {
    start_with(SequencerConfig {
        submit_queue_max: 1_024,
        batch_commands_max: 64,
        unsynced_commands_max,
        decided_sync_within_ms,
        snapshot_every_commands: 100,
        fault_panic_on_justification: None,
        clock: Arc::new(SystemClock),
        replicated: false,
        pruning: None,
    })
}

fn start_with(config: SequencerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (store, state, _) = Store::open(&path, StoreOptions::default()).unwrap();
    let audit = store.audit_reader();
    let (submitter, thread) = spawn(
        config,
        store,
        Arc::new(RwLock::new(state)),
        Arc::new(Metrics::default()),
        Arc::new(EventTap::default()),
        crate::fatal::Fatal::new(),
    );
    Running {
        submitter,
        thread: Some(thread),
        audit,
        _dir: dir,
        path,
    }
}

async fn tick(submitter: &Submitter, decided: bool, note: String) -> Outcome {
    let submit = if decided {
        submitter
            .submit_decided(PrincipalId::SYSTEM, note, CommandBody::Tick)
            .await
    } else {
        submitter
            .submit(PrincipalId::SYSTEM, note, CommandBody::Tick)
            .await
    };
    submit.expect("the sequencer answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decided_and_durable_commands_share_one_order_that_replays() {
    // A tight bound on unsynced commands makes deciding wait for the flusher too.
    let mut running = start(5, 8);
    let mut clients = Vec::new();
    for client in 0..8 {
        let submitter = running.submitter.clone();
        clients.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..150 {
                let decided = (client + i) % 3 != 0;
                let outcome = tick(&submitter, decided, format!("client {client} #{i}")).await;
                seqs.push(outcome.seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for client in clients {
        seqs.extend(client.await.unwrap());
    }
    running.stop().await;
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 8 * 150, "every command got its own number");
    // Everything decided is durable after shutdown, in one chain that replays.
    let (_, state, report) = Store::open(&running.path, StoreOptions::default()).unwrap();
    assert!(state.last_seq >= 8 * 150);
    assert_eq!(report.regenerated, 0, "no decision record was missing");
    colony_log::verify_replay(&running.path).unwrap();
    colony_log::verify_audit(&running.path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_command_is_synced_by_itself_within_its_window() {
    let mut running = start(20, 1_024);
    let outcome = tick(&running.submitter, true, "alone".into()).await;
    // Nothing else is submitted: only the flusher's window makes it durable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.audit.last_index() < outcome.seq {
        assert!(
            Instant::now() < deadline,
            "the decided command was never synced"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_command_makes_the_decided_ones_before_it_durable() {
    // A window of an hour: only the durable command can have caused the sync.
    let mut running = start(3_600_000, 1_024);
    let decided = tick(&running.submitter, true, "decided".into()).await;
    let durable = tick(&running.submitter, false, "durable".into()).await;
    assert!(durable.seq > decided.seq);
    assert!(running.audit.last_index() >= durable.seq);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_for_a_decided_command_gets_it_synced_at_once() {
    // A window of an hour: only the reader's wait can have caused the sync.
    let mut running = start(3_600_000, 1_024);
    let decided = tick(&running.submitter, true, "decided".into()).await;
    assert!(running.submitter.synced_through(decided.seq).await);
    assert!(running.audit.last_index() >= decided.seq);
    // Already durable: answered at once.
    assert!(running.submitter.synced_through(decided.seq).await);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded_at_once() {
    let mut running = start_with(SequencerConfig {
        submit_queue_max: 2,
        batch_commands_max: 4,
        unsynced_commands_max: 1_024,
        decided_sync_within_ms: 5,
        snapshot_every_commands: 100,
        fault_panic_on_justification: None,
        clock: Arc::new(SystemClock),
        replicated: false,
        pruning: None,
    });
    // Hold the decider: the sequencer thread takes at most one request and a
    // batch, then waits; the queue fills behind it.
    let decider = running.submitter.core.decider.lock().unwrap();
    let mut overloaded = None;
    let mut waiting = Vec::new();
    for i in 0..(1 + 4 + 2 + 1) {
        let submitter = running.submitter.clone();
        let mut submit = Box::pin(async move {
            submitter
                .submit(PrincipalId::SYSTEM, format!("#{i}"), CommandBody::Tick)
                .await
        });
        // One poll sends; only a refusal is ready at once.
        match futures_util::FutureExt::now_or_never(&mut submit) {
            Some(Err(error)) => {
                overloaded = Some((i, error));
                break;
            }
            Some(Ok(_)) => panic!("answered while the decider was held"),
            None => waiting.push(submit),
        }
    }
    // The thread holds at most a batch (4), the queue 2: the 7th cannot fit.
    let (at, error) = overloaded.expect("a request past the bound was refused");
    assert!(
        at <= 4 + 2,
        "refused at the latest once every place was taken"
    );
    assert_eq!(error.code, "overloaded");
    drop(decider);
    // Everything admitted to the queue is decided once the decider is free.
    for submit in waiting {
        submit.await.expect("queued requests are answered");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_deciding_fails_the_node_and_records_nothing() {
    let mut running = start_with(SequencerConfig {
        submit_queue_max: 1_024,
        batch_commands_max: 64,
        unsynced_commands_max: 1_024,
        decided_sync_within_ms: 5,
        snapshot_every_commands: 100,
        fault_panic_on_justification: Some("boom".into()),
        clock: Arc::new(SystemClock),
        replicated: false,
        pruning: None,
    });
    let before = tick(&running.submitter, false, "before".into()).await;
    let failed = running
        .submitter
        .submit(PrincipalId::SYSTEM, "boom".into(), CommandBody::Tick)
        .await;
    assert!(
        failed.is_err(),
        "the caller of the panicking command is not answered as if it worked"
    );
    let reason = running.submitter.fatal.reason().expect("the node failed");
    assert!(reason.contains("fault injected"), "{reason}");
    // Every later request is refused with the reason, at once.
    let after = running
        .submitter
        .submit(PrincipalId::SYSTEM, "after".into(), CommandBody::Tick)
        .await
        .unwrap_err();
    assert_eq!(after.code, "node_failed");
    running.stop().await;
    // The log holds what came before and nothing of the panicking command.
    let (_, state, _) = Store::open(&running.path, StoreOptions::default()).unwrap();
    assert_eq!(state.last_seq, before.seq);
    colony_log::verify_replay(&running.path).unwrap();
}

/// A clock the test sets.
#[derive(Debug, Default)]
struct ManualClock(std::sync::atomic::AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_stamped_by_the_injected_clock_and_never_go_back() {
    let clock = Arc::new(ManualClock::default());
    clock.0.store(5_000, Ordering::SeqCst);
    let mut running = start_with(SequencerConfig {
        submit_queue_max: 1_024,
        batch_commands_max: 64,
        unsynced_commands_max: 1_024,
        decided_sync_within_ms: 5,
        snapshot_every_commands: 100,
        fault_panic_on_justification: None,
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        replicated: false,
        pruning: None,
    });
    let first = tick(&running.submitter, false, "at 5 s".into()).await;
    assert_eq!(first.at_ms, 5_000);
    clock.0.store(9_000, Ordering::SeqCst);
    let second = tick(&running.submitter, true, "at 9 s".into()).await;
    assert_eq!(second.at_ms, 9_000);
    // The clock steps back: time in the log does not.
    clock.0.store(1_000, Ordering::SeqCst);
    let third = tick(&running.submitter, false, "the clock stepped back".into()).await;
    assert_eq!(third.at_ms, 9_000);
    running.stop().await;
}

/// A log that orders commands by handing them straight back, stamped, as a cluster's
/// stream does (one at a time, in order).
struct LoopbackLog {
    submitter: Submitter,
    next: Mutex<u64>,
    proposed: std::sync::atomic::AtomicU64,
}

impl Replicator for LoopbackLog {
    fn propose(
        &self,
        proposal: Proposal,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Outcome, SubmitError>> + Send + '_>,
    > {
        Box::pin(async move {
            self.proposed.fetch_add(1, Ordering::SeqCst);
            let seq = {
                let mut next = self.next.lock().unwrap();
                *next += 1;
                *next
            };
            self.submitter
                .apply_stamped(
                    Stamp {
                        seq,
                        proposed_ms: 9_000_000_000_000,
                        place: None,
                    },
                    proposal.actor,
                    proposal.justification,
                    proposal.body,
                )
                .await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_commands_take_their_place_and_a_gap_stops_the_node() {
    let mut running = start(5, 1_024);
    let stamp = |seq, proposed_ms| Stamp {
        seq,
        proposed_ms,
        place: None,
    };
    let apply = |stamp: Stamp| {
        running.submitter.apply_stamped(
            stamp,
            PrincipalId::SYSTEM,
            "ordered".into(),
            CommandBody::Tick,
        )
    };
    let first = apply(stamp(1, 5_000)).await.unwrap();
    assert_eq!((first.seq, first.at_ms), (1, 5_000));
    // A proposer whose clock is behind cannot move time back.
    let second = apply(stamp(2, 1_000)).await.unwrap();
    assert_eq!((second.seq, second.at_ms), (2, 5_000));
    // A gap in the log's numbers: this node cannot follow, and says so.
    assert!(apply(stamp(4, 6_000)).await.is_err());
    let after = apply(stamp(3, 6_000)).await.unwrap_err();
    assert_eq!(after.code, "node_failed", "{after:?}");
    assert!(
        after.message.contains("gave command 4 after command 2"),
        "{after:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replicator_every_submission_is_proposed_and_applied_as_ordered() {
    let mut running = start(5, 1_024);
    let log = Arc::new(LoopbackLog {
        submitter: running.submitter.clone(),
        next: Mutex::new(0),
        proposed: Default::default(),
    });
    assert!(running.submitter.replicate_through(log.clone()));
    assert!(
        !running.submitter.replicate_through(log.clone()),
        "only once"
    );
    let durable = tick(&running.submitter, false, "one".into()).await;
    let decided = tick(&running.submitter, true, "two".into()).await;
    assert_eq!((durable.seq, decided.seq), (1, 2));
    // The time is the proposer's, not the node's clock.
    assert_eq!(decided.at_ms, 9_000_000_000_000);
    assert_eq!(log.proposed.load(Ordering::SeqCst), 2);
    running.stop().await;
    let (_, state, _) = Store::open(&running.path, StoreOptions::default()).unwrap();
    assert_eq!(state.last_seq, 2, "no tick of the node's own in between");
}

/// A node of a cluster decides nothing on its own before it has caught up with the
/// log: a caller's command is refused (nothing decided), and only the log's stamped
/// commands are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_node_decides_nothing_of_its_own_before_it_follows_the_log() {
    let mut running = start_with(SequencerConfig {
        submit_queue_max: 1_024,
        batch_commands_max: 64,
        unsynced_commands_max: 1_024,
        decided_sync_within_ms: 5,
        snapshot_every_commands: 100,
        fault_panic_on_justification: None,
        clock: Arc::new(SystemClock),
        replicated: true,
        pruning: None,
    });
    for decided in [false, true] {
        let refused = if decided {
            running
                .submitter
                .submit_decided(PrincipalId::SYSTEM, "early".into(), CommandBody::Tick)
                .await
        } else {
            running
                .submitter
                .submit(PrincipalId::SYSTEM, "early".into(), CommandBody::Tick)
                .await
        };
        assert_eq!(refused.unwrap_err().code, "cluster_unavailable");
    }
    let applied = running
        .submitter
        .apply_stamped(
            Stamp {
                seq: 1,
                proposed_ms: 5_000,
                place: None,
            },
            PrincipalId::SYSTEM,
            "from the log".into(),
            CommandBody::Tick,
        )
        .await
        .unwrap();
    assert_eq!(applied.seq, 1);
    running.stop().await;
}

/// Commands the log ordered, decided as one batch: one outcome each, in order; the
/// place of the last one in the log (message 8's second of two, after message 7's
/// three) is in the state, and again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_stamped_commands_is_decided_in_its_order() {
    use colony_kernel::cluster::LogPlace;
    let mut running = start(5, 1_024);
    let places = [(7, 0, 3), (7, 1, 3), (7, 2, 3), (8, 0, 2), (8, 1, 2)];
    let batch = (1..=5)
        .zip(places)
        .map(|(seq, (message, index, count))| Stamped {
            stamp: Stamp {
                seq,
                proposed_ms: 5_000 + seq,
                place: Some(LogPlace {
                    message,
                    index,
                    count,
                }),
            },
            actor: PrincipalId::SYSTEM,
            justification: format!("command {seq}"),
            body: CommandBody::Tick,
            origin: None,
        })
        .collect();
    let outcomes = running.submitter.apply_stamped_batch(batch).await.unwrap();
    let seqs: Vec<(u64, u64)> = outcomes.iter().map(|o| (o.seq, o.at_ms)).collect();
    assert_eq!(
        seqs,
        [(1, 5_001), (2, 5_002), (3, 5_003), (4, 5_004), (5, 5_005)]
    );
    running.stop().await;
    let (_, state, _) = Store::open(&running.path, StoreOptions::default()).unwrap();
    let place = state.log_place().unwrap();
    assert_eq!(
        place,
        LogPlace {
            message: 8,
            index: 1,
            count: 2
        }
    );
    // Message 8 is applied whole: the stream is followed on from message 9.
    assert_eq!(place.next(), (9, 0));
}

/// A cluster's log that cannot be followed (a gap the applier saw): the node fails
/// with the reason, and nothing more is decided, the log's commands included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_followed_fails_the_node_with_the_reason() {
    let mut running = start(5, 1_024);
    let stamp = |seq| Stamp {
        seq,
        proposed_ms: 5_000,
        place: None,
    };
    running
        .submitter
        .apply_stamped(
            stamp(1),
            PrincipalId::SYSTEM,
            "first".into(),
            CommandBody::Tick,
        )
        .await
        .unwrap();
    running
        .submitter
        .cannot_follow("the cluster's log gave message 9 after message 7: a gap".into());
    let reason = running.submitter.fatal.reason().expect("the node failed");
    assert!(reason.contains("a gap"), "{reason}");
    let refused = running
        .submitter
        .apply_stamped(
            stamp(2),
            PrincipalId::SYSTEM,
            "after".into(),
            CommandBody::Tick,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, "node_failed");
    running.stop().await;
    let (_, state, _) = Store::open(&running.path, StoreOptions::default()).unwrap();
    assert_eq!(state.last_seq, 1);
}
