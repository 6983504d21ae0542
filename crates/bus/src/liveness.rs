//! Worker liveness as soft state: a heartbeat (over the bus or `POST
//! /v1/workers/{id}/heartbeat`) is checked against the kernel's state and remembered
//! here, in memory, instead of being a command and a hash-chained record each (at a
//! 2 s heartbeat that was 24 MB of log a day per idle worker). The log records only
//! what changes the state's meaning:
//!
//! - a session silent past the workers' timeout is declared lost by the node
//!   (`DeclareWorkerLost`, with the last heartbeat heard as evidence), within one
//!   tick ([`tick_ms`]: a quarter of the timeout, at most a second) of its timeout;
//! - sessions heard from are renewed in batches (`RenewWorkers`, one command for all
//!   of them): a new or resumed session at once (its deadline in the kernel is its
//!   timeout), the others every [`RENEW_EVERY_MS`] once half of their soft lease
//!   ([`SOFT_SESSION_LEASE_MS`]) is gone, so an idle session costs one entry of a
//!   shared command every half hour; a session whose task's lease would lapse within
//!   half its length is renewed at the next tick, and the renewal extends the leases
//!   of its tasks as a task heartbeat would (one entry instead of a command per task).
//!
//! - heartbeats on task leases (`POST /v1/tasks/{address}/heartbeat`, a task in
//!   progress whose lease has more than two ticks left) are answered here too and
//!   renewed in batches (`RenewLeases`) once half of a lease is gone, whether or not
//!   the holder has a session: one entry of a shared command per half lease instead
//!   of a command and a record per heartbeat.
//!
//! Replay stays exact: the kernel decides only from these logged commands. A restart
//! forgets what was heard and counts every active session as heard when it starts, so
//! a live worker that heartbeats within its timeout keeps its session. In a cluster
//! every node applies every command and a worker may heartbeat to any of them, so
//! there heartbeats stay logged commands (this is off).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use colony_kernel::tasks::{LeaseHeard, TaskStatus, RENEW_LEASES_MAX};
use colony_kernel::workers::{WorkerHeard, RENEW_WORKERS_MAX, SOFT_SESSION_LEASE_MS};
use colony_kernel::{CommandBody, PrincipalId, Reason, State, TaskAddress};
use colony_pipeline::sequencer::{now_ms, Submitter, ENTRIES_PER_STATE_READ};
use colony_pipeline::Answered;

/// How often sessions heard from are renewed in one batch (new and resumed ones are
/// renewed at the next tick).
pub const RENEW_EVERY_MS: u64 = 60_000;

/// How often silence is looked for: a quarter of the workers' timeout, between 20 ms
/// and a second.
pub fn tick_ms(timeout_ms: u64) -> u64 {
    (timeout_ms / 4).clamp(20, 1_000)
}

/// What the node heard from worker sessions, since it started.
pub struct Liveness {
    /// Session → when it was last heard (Unix ms).
    heard: Mutex<HashMap<u64, u64>>,
    /// Task leases heartbeated in memory: (address, token) → when last heard.
    leases: Mutex<HashMap<(TaskAddress, u64), u64>>,
    state: Arc<RwLock<State>>,
}

/// When a round runs, and what it goes by.
#[derive(Clone, Copy)]
struct RoundAt {
    now: u64,
    /// Renew every session due, not only those whose deadline comes first.
    batch: bool,
    timeout_ms: u64,
}

/// What one round found to log.
#[derive(Debug, Default, PartialEq, Eq)]
struct Round {
    renew: Vec<WorkerHeard>,
    /// (session, last heard)
    lost: Vec<(u64, u64)>,
    /// Task leases to extend.
    leases: Vec<LeaseHeard>,
}

impl Liveness {
    pub fn new(state: Arc<RwLock<State>>) -> Liveness {
        Liveness {
            heard: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            state,
        }
    }

    /// A heartbeat from `actor` for `worker`: its new deadline (Unix ms), or why it
    /// is refused (no such session, another principal's, ended).
    pub fn heard(&self, actor: PrincipalId, worker: u64) -> Result<u64, Reason> {
        let timeout_ms = {
            let state = self.state.read().expect("state lock");
            // Refused as the command was (the kernel's own checks).
            if let Some(reason) = state
                .actor_refusal(actor)
                .or_else(|| state.worker_refusal(actor, worker))
            {
                return Err(reason);
            }
            state.task_config().worker_timeout_ms
        };
        let now = now_ms();
        self.heard
            .lock()
            .expect("liveness lock")
            .insert(worker, now);
        Ok(now + timeout_ms)
    }

    /// A heartbeat on a task lease (`POST /v1/tasks/{address}/heartbeat`): when the
    /// task is in progress and the lease held by `actor` with `token` has more than two
    /// ticks left, it is remembered here and renewed with the next batch; the lease's
    /// new expiry is answered. `None`: the heartbeat is a command (a claimed task's
    /// first heartbeat starts it; a lease about to lapse is renewed at once; anything
    /// refused is refused by the kernel, with its reason).
    pub fn lease_heard(
        &self,
        actor: PrincipalId,
        address: &TaskAddress,
        token: u64,
    ) -> Option<u64> {
        let now = now_ms();
        let state = self.state.read().expect("state lock");
        let timeout_ms = state.task_config().worker_timeout_ms;
        let tick = tick_ms(timeout_ms);
        let lease = state.soft_renewable(actor, address, token)?;
        if lease.lease_ms < 4 * tick || lease.expires_at_ms <= now.saturating_add(2 * tick) {
            return None;
        }
        let expires = now
            .saturating_add(lease.lease_ms)
            .min(lease.attempt_deadline_ms);
        self.leases
            .lock()
            .expect("liveness lock")
            .insert((address.clone(), token), now);
        Some(expires.max(lease.expires_at_ms))
    }

    /// Forgets what was heard of a lease (its heartbeat was refused after all).
    pub fn forget_lease(&self, address: &TaskAddress, token: u64) {
        self.leases
            .lock()
            .expect("liveness lock")
            .remove(&(address.clone(), token));
    }

    /// When the node last heard `worker`, if it did since it started.
    pub fn last_heard(&self, worker: u64) -> Option<u64> {
        self.heard
            .lock()
            .expect("liveness lock")
            .get(&worker)
            .copied()
    }

    /// What to log now: sessions silent past the timeout, and sessions to renew
    /// (all that are due when `batch`, else only those whose deadline comes before
    /// the next batch). Sessions the node has not heard since it started count as
    /// heard now; ended ones are forgotten.
    ///
    /// The sessions are looked at [`ENTRIES_PER_STATE_READ`] at a time, each batch
    /// under one read of the kernel's state and one hold of what was heard, so that
    /// neither the sequencer's next write nor the heartbeats wait for a whole round.
    fn round(&self, now: u64, batch: bool) -> Round {
        let (listed, timeout_ms) = {
            let state = self.state.read().expect("state lock");
            let listed: Vec<u64> = state.active_workers().map(|session| session.id).collect();
            (listed, state.task_config().worker_timeout_ms)
        };
        let mut round = Round::default();
        let at = RoundAt {
            now,
            batch,
            timeout_ms,
        };
        for chunk in listed.chunks(ENTRIES_PER_STATE_READ) {
            let state = self.state.read().expect("state lock");
            let mut heard = self.heard.lock().expect("liveness lock");
            Self::round_of(&state, &mut heard, chunk, at, &mut round);
        }
        let active: std::collections::HashSet<u64> = listed.into_iter().collect();
        let mut heard = self.heard.lock().expect("liveness lock");
        heard.retain(|id, _| active.contains(id));
        for (id, _) in &round.lost {
            heard.remove(id);
        }
        drop(heard);
        let state = self.state.read().expect("state lock");
        // Leases heard in memory: renewed once half of them is gone, forgotten once
        // they ended or lapsed.
        self.leases
            .lock()
            .expect("liveness lock")
            .retain(|(address, token), at| {
                let Some(lease) = state
                    .task(address)
                    .filter(|task| task.status == TaskStatus::InProgress)
                    .and_then(|task| task.lease.as_ref())
                    .filter(|lease| lease.token == *token)
                else {
                    return false;
                };
                let extends = lease.expires_at_ms < at.saturating_add(lease.lease_ms)
                    && lease.expires_at_ms < lease.attempt_deadline_ms;
                if extends && lease.expires_at_ms < now.saturating_add(lease.lease_ms / 2) {
                    round.leases.push(LeaseHeard {
                        address: address.clone(),
                        token: *token,
                        at_ms: *at,
                    });
                }
                lease.expires_at_ms > now
            });
        round
    }

    /// One batch of a round: the sessions of `chunk` still active, as `round` says.
    fn round_of(
        state: &State,
        heard: &mut HashMap<u64, u64>,
        chunk: &[u64],
        RoundAt {
            now,
            batch,
            timeout_ms,
        }: RoundAt,
        round: &mut Round,
    ) {
        for session in chunk.iter().filter_map(|id| state.worker(*id)) {
            // Ended since the round listed it.
            if session.state != colony_kernel::workers::WorkerState::Active {
                continue;
            }
            let at = heard.entry(session.id).or_insert(now);
            // A heartbeat the log holds (a resumed `hello`) counts too.
            *at = (*at).max(session.last_heartbeat_ms);
            let at = *at;
            if at.saturating_add(timeout_ms) <= now {
                round.lost.push((session.id, at));
                continue;
            }
            // A lease of its tasks would lapse before long: the renewal keeps it.
            let lease_soon = state.worker_task_addresses(session.id).any(|address| {
                state
                    .task(address)
                    .and_then(|task| task.lease.as_ref())
                    .is_some_and(|lease| {
                        lease.expires_at_ms < now.saturating_add(lease.lease_ms / 2)
                            && lease.expires_at_ms < at.saturating_add(lease.lease_ms)
                            && lease.expires_at_ms < lease.attempt_deadline_ms
                    })
            });
            let soon =
                lease_soon || session.deadline_ms < now.saturating_add(RENEW_EVERY_MS + timeout_ms);
            let due = session.deadline_ms < at.saturating_add(SOFT_SESSION_LEASE_MS / 2);
            if soon || (batch && due) {
                round.renew.push(WorkerHeard {
                    worker: session.id,
                    at_ms: at,
                });
            }
        }
    }

    /// Renews and declares what each tick finds (until the task is aborted).
    pub async fn run(self: Arc<Self>, submitter: Submitter) {
        let mut last_batch = 0u64;
        loop {
            let timeout_ms = {
                let state = self.state.read().expect("state lock");
                state.task_config().worker_timeout_ms
            };
            tokio::time::sleep(Duration::from_millis(tick_ms(timeout_ms))).await;
            let now = now_ms();
            let batch = now.saturating_sub(last_batch) >= RENEW_EVERY_MS;
            if batch {
                last_batch = now;
            }
            let round = self.round(now, batch);
            for chunk in round.renew.chunks(RENEW_WORKERS_MAX) {
                let justification = format!(
                    "{} worker session(s) heard from: kept for {} min from their last heartbeat",
                    chunk.len(),
                    SOFT_SESSION_LEASE_MS / 60_000
                );
                let body = CommandBody::RenewWorkers {
                    heard: chunk.to_vec(),
                };
                renew(&submitter, justification, body, "worker renewals").await;
            }
            for chunk in round.leases.chunks(RENEW_LEASES_MAX) {
                let justification = format!(
                    "{} task lease(s) heartbeated by their holders: kept for a lease's length from the last heartbeat",
                    chunk.len()
                );
                let body = CommandBody::RenewLeases {
                    heard: chunk.to_vec(),
                };
                renew(&submitter, justification, body, "lease renewals").await;
            }
            for (worker, last_heard_ms) in round.lost {
                let justification = format!(
                    "worker {worker} not heard since {last_heard_ms}, past its timeout of {timeout_ms} ms"
                );
                // Sent until decided; the next round does not wait for it.
                drop(submitter.submit_in_background(
                    PrincipalId::SYSTEM,
                    justification,
                    CommandBody::DeclareWorkerLost {
                        worker,
                        last_heard_ms,
                    },
                    Answered::WhenDecided,
                ));
            }
        }
    }
}

/// Logs one batched renewal, waiting until it is decided; a failure is logged (the
/// next round renews again).
async fn renew(submitter: &Submitter, justification: String, body: CommandBody, what: &str) {
    if let Err(error) = submitter
        .submit_until_decided(
            PrincipalId::SYSTEM,
            justification,
            body,
            Answered::WhenDecided,
        )
        .await
    {
        tracing::warn!("{what} not recorded: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_kernel::workers::NewWorker;
    use colony_kernel::{Command, Genesis};

    #[test]
    fn a_round_in_batches_finds_the_one_silent_session_among_many() {
        let mut genesis = Genesis::for_tests([1; 32]);
        for limit in &mut genesis.limits {
            if limit.name == "active_workers" {
                (limit.soft, limit.hard) = (None, None);
            }
        }
        let state = crate::test_kernel::kernel(genesis);
        let sessions = 3 * ENTRIES_PER_STATE_READ + 7;
        for _ in 0..sessions {
            let mut state = state.write().unwrap();
            let command = Command::new(
                state.last_seq + 1,
                now_ms().max(state.now_ms),
                PrincipalId::ADMIN,
                "a worker of the test",
                CommandBody::RegisterWorker(Box::new(NewWorker {
                    capabilities: Vec::new(),
                    model: None,
                    profile: None,
                })),
            );
            state.apply(&command);
        }
        let (ids, timeout_ms, registered) = {
            let state = state.read().unwrap();
            let ids: Vec<u64> = state.active_workers().map(|s| s.id).collect();
            let registered = state.active_workers().map(|s| s.last_heartbeat_ms).max();
            (
                ids,
                state.task_config().worker_timeout_ms,
                registered.unwrap(),
            )
        };
        assert_eq!(ids.len(), sessions);
        let liveness = Liveness::new(Arc::clone(&state));
        let start = now_ms().max(registered);
        // The first round counts every session as heard now; nothing is lost.
        assert!(liveness.round(start, false).lost.is_empty());
        assert_eq!(liveness.heard.lock().unwrap().len(), sessions);
        // All heard again but one, in the middle of the last batch.
        let silent = ids[3 * ENTRIES_PER_STATE_READ + 3];
        for id in ids.iter().filter(|id| **id != silent) {
            liveness
                .heard
                .lock()
                .unwrap()
                .insert(*id, start + timeout_ms / 2);
        }
        let round = liveness.round(start + timeout_ms, false);
        assert_eq!(round.lost, [(silent, start)]);
        // Forgotten once declared: the others are still remembered.
        assert_eq!(liveness.last_heard(silent), None);
        assert_eq!(liveness.heard.lock().unwrap().len(), sessions - 1);
    }
}
