//! A worker loop: a session registered (waiting its turn when queued), kept alive,
//! tasks claimed for it one at a time, each given to the caller's handler while its
//! lease is renewed, then completed, failed or given back as the handler says. A
//! claim that fails for a while (the node unreachable or overloaded) is tried again
//! after the node's `Retry-After` or a growing pause, up to a bound. When a task's
//! lease is lost (it went to someone else, or was cancelled) the handler is told
//! ([`Work::lease_lost`]) and given a grace to stop; its outcome is then not
//! reported. A lost session ends the loop. The session is left gracefully at the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use colony_api::tasks::{ClaimRequest, TaskView, CLAIM_WAIT_MS_MAX};
use serde_json::Value;

use crate::client::{Client, Held};
use crate::{Error, Session};

/// What a worker takes and how long it goes on.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The capabilities tasks are matched against.
    pub capabilities: Vec<String>,
    /// How long one claim waits on the node for work to become claimable (a long
    /// poll, at most 30 s; zero: the node answers at once). The worker has its task
    /// as soon as one it can take is posted, without polling.
    pub claim_wait: Duration,
    /// How long to wait before claiming again when nothing was claimable, on
    /// average: each session waits between half and one and a half of it (a share
    /// fixed by its id), so that a swarm started together does not poll together.
    pub idle_pause: Duration,
    /// Stop after this many tasks (`None`: until stopped).
    pub max_tasks: Option<u64>,
    /// The model the session says it uses (shown on the dashboard).
    pub model: Option<String>,
    /// The supervisor's profile the worker was started for, when it was.
    pub profile: Option<String>,
    /// The lease a claim asks for (`None`: the board's default, `tasks.toml`); it
    /// is renewed three times per lease while the handler works.
    pub lease: Option<Duration>,
    /// Claims in a row that fail for a reason that may pass (the node unreachable,
    /// overloaded, its cluster away) before the worker gives up with the error.
    pub claim_retries_max: u32,
    /// How long a handler whose lease was lost may take to stop before its future
    /// is dropped.
    pub lost_grace: Duration,
}

/// Claims in a row that may fail for a passing reason, by default.
pub const CLAIM_RETRIES_MAX: u32 = 50;
/// The first pause after a claim failed for a passing reason (without the node's
/// `Retry-After`), doubled at each failure in a row up to [`CLAIM_RETRY_PAUSE_MAX`].
const CLAIM_RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
const CLAIM_RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            capabilities: Vec::new(),
            claim_wait: Duration::from_secs(20),
            idle_pause: Duration::from_secs(1),
            max_tasks: None,
            model: None,
            profile: None,
            lease: None,
            claim_retries_max: CLAIM_RETRIES_MAX,
            lost_grace: Duration::from_secs(5),
        }
    }
}

/// One task given to the handler.
#[derive(Clone, Debug)]
pub struct Work {
    pub task: TaskView,
    /// What to present when checkpointing it or calling an LLM for it.
    pub held: Held,
    /// When the attempt fails as timed out, however often it is renewed (Unix ms).
    pub attempt_deadline_ms: u64,
    /// A client the handler may use (checkpoints, LLM calls for the task, the bus).
    pub client: Client,
    /// Tells the handler when the task's lease is lost (the task went to another
    /// worker, or was cancelled): it should stop and clean up, its outcome is not
    /// reported.
    pub lease_lost: LeaseLost,
}

impl Work {
    /// How long until the attempt's deadline (zero when it has passed): the node
    /// fails the attempt then, however often the lease was renewed.
    pub fn time_left(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(self.attempt_deadline_ms.saturating_sub(now))
    }
}

/// A task's lease lost while its handler works ([`Work::lease_lost`]).
#[derive(Clone, Default)]
pub struct LeaseLost(Stop);

impl LeaseLost {
    /// Whether the lease is lost.
    pub fn is_lost(&self) -> bool {
        self.0.stopped()
    }

    /// Until the lease is lost (forever while it holds).
    pub async fn lost(&self) {
        self.0.wait().await
    }
}

impl std::fmt::Debug for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaseLost").field(&self.is_lost()).finish()
    }
}

/// What the handler made of a task.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Done, with its result (any JSON).
    Complete(Value),
    /// This attempt failed, and why: retried with backoff, or dead after its last.
    Fail(String),
    /// Given back to the board without failing the attempt, and why (the worker
    /// cannot take it now: its reservations were refused, it is stopping).
    Release(String),
    /// Given back like [`Outcome::Release`], and the worker claims nothing more
    /// for `pause` (or until stopped): it was refused for a while (a budget or a
    /// rate spent, a gateway's `retry_after`), and a claim now would be refused too.
    Backoff { reason: String, pause: Duration },
    /// The handler settled the task itself (completed it with a justification of
    /// its own, decomposed it into subtasks), and says what it did: nothing more
    /// is reported.
    Settled(String),
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub worker: u64,
    pub completed: u64,
    pub failed: u64,
    /// Tasks given back to the board (with or without a pause after).
    pub released: u64,
    /// Tasks the handler settled itself ([`Outcome::Settled`]).
    pub settled: u64,
    /// Tasks whose lease was lost while they were worked on.
    pub lost: u64,
    /// Claims that failed for a passing reason and were tried again.
    pub claim_retries: u64,
    /// Whether the worker ended because the node declared its session lost (it
    /// missed its heartbeats, or was made to leave): register again to go on.
    pub session_lost: bool,
}

/// Stops a running worker after the task at hand (a claim waiting for work is
/// given up at once).
#[derive(Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Default)]
struct StopInner {
    stopped: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Stop {
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.wake.notify_waiters();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Until stopped.
    pub(crate) async fn wait(&self) {
        loop {
            let woken = self.0.wake.notified();
            tokio::pin!(woken);
            // Registered before the look, so that a stop in between is not missed.
            woken.as_mut().enable();
            if self.stopped() {
                return;
            }
            woken.await;
        }
    }
}

/// Runs a worker until `max_tasks`, `stop`, or a lost session: a [`Session`]
/// registered (and admitted, when queued), then [`Session::run`].
pub async fn run_worker<F, Fut>(
    client: &Client,
    options: &WorkerOptions,
    stop: &Stop,
    handler: F,
) -> Result<WorkerReport, Error>
where
    F: FnMut(Work) -> Fut,
    Fut: Future<Output = Outcome>,
{
    Session::register(client, options)
        .await?
        .run(options, stop, handler)
        .await
}

/// The loop of [`Session::run`]: claims, handles and settles tasks until told to
/// stop.
pub(crate) async fn work<F, Fut>(
    turn: &Turn<'_>,
    report: &mut WorkerReport,
    handler: &mut F,
) -> Result<(), Error>
where
    F: FnMut(Work) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let Turn {
        client,
        options,
        stop,
        lost_session,
        worker,
        ..
    } = *turn;
    let done = |report: &WorkerReport| {
        report.completed + report.failed + report.released + report.settled + report.lost
    };
    let mut failures = 0u32;
    while !stop.stopped()
        && !lost_session.stopped()
        && options.max_tasks.is_none_or(|max| done(report) < max)
    {
        let claimed = match turn.claim().await {
            Claim::Task(claimed) => {
                failures = 0;
                claimed
            }
            Claim::Nothing => {
                failures = 0;
                tokio::time::sleep(spread(options.idle_pause, worker)).await;
                continue;
            }
            Claim::Over => break,
            Claim::Failed(error) => {
                failures += 1;
                let Some(pause) = claim_backoff(&error, failures, options.claim_retries_max) else {
                    return Err(error);
                };
                report.claim_retries += 1;
                if turn.pause(pause).await {
                    continue;
                }
                break;
            }
        };
        let held = Held {
            address: claimed.task.address.clone(),
            lease_token: claimed.lease.token,
        };
        let lease_lost = LeaseLost::default();
        let work = Work {
            task: claimed.task,
            held: held.clone(),
            attempt_deadline_ms: claimed.lease.attempt_deadline_ms,
            client: client.clone(),
            lease_lost: lease_lost.clone(),
        };
        let outcome = turn.handle(handler(work), &held, &lease_lost).await;
        let pause_after = match &outcome {
            Some(Outcome::Backoff { pause, .. }) => Some(*pause),
            _ => None,
        };
        match turn.settle(&held, outcome, &lease_lost, report).await {
            Ok(()) => {}
            Err(error) if error.is_gone() => report.lost += 1,
            Err(error) => return Err(error),
        }
        if let Some(pause) = pause_after {
            if !turn.pause(pause).await {
                break;
            }
        }
    }
    Ok(())
}

/// What a claim came to.
enum Claim {
    Task(Box<colony_api::tasks::Claimed>),
    /// Nothing claimable (after the claim's wait on the node).
    Nothing,
    /// Stopped, or the session is gone: the loop ends.
    Over,
    Failed(Error),
}

/// One session's loop: what each of its phases needs.
pub(crate) struct Turn<'a> {
    pub(crate) client: &'a Client,
    pub(crate) options: &'a WorkerOptions,
    pub(crate) stop: &'a Stop,
    pub(crate) lost_session: &'a Stop,
    pub(crate) worker: u64,
    /// The session's lease, when the options ask for none.
    pub(crate) lease_ms: u64,
}

impl Turn<'_> {
    /// Claims the next task, waiting on the node up to `claim_wait`; a stop or the
    /// session's loss gives the claim up at once.
    async fn claim(&self) -> Claim {
        let claim = ClaimRequest {
            capabilities: Vec::new(),
            lease_ms: self.options.lease.map(|lease| lease.as_millis() as u64),
            worker: Some(self.worker),
            justification: Some("a colony-client worker takes work".into()),
            wait_ms: Some(
                self.options
                    .claim_wait
                    .as_millis()
                    .min(u128::from(CLAIM_WAIT_MS_MAX)) as u64,
            )
            .filter(|ms| *ms > 0),
        };
        let claimed = tokio::select! {
            claimed = self.client.claim(&claim) => claimed,
            () = self.stop.wait() => return Claim::Over,
            () = self.lost_session.wait() => return Claim::Over,
        };
        match claimed {
            Ok(Some(claimed)) => Claim::Task(Box::new(claimed)),
            Ok(None) => Claim::Nothing,
            // The node says the session is gone (it missed its heartbeats, or left).
            Err(error) if error.code() == Some("worker_gone") => {
                self.lost_session.stop();
                Claim::Over
            }
            Err(error) => Claim::Failed(error),
        }
    }

    /// Waits `pause`: true when it passed, false when stopped or the session was
    /// lost first.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = self.stop.wait() => false,
            () = self.lost_session.wait() => false,
        }
    }

    /// Runs the handler while renewing the lease a few times per lease: its
    /// outcome, or `None` when the lease was lost and the handler did not stop
    /// within `lost_grace` (its future is then dropped).
    async fn handle(
        &self,
        handling: impl Future<Output = Outcome>,
        held: &Held,
        lease_lost: &LeaseLost,
    ) -> Option<Outcome> {
        let lease_ms = self
            .options
            .lease
            .map_or(self.lease_ms, |lease| lease.as_millis() as u64);
        let renew_every = Duration::from_millis((lease_ms / 3).max(100));
        tokio::pin!(handling);
        // Once the lease is lost: until when the handler may take to stop.
        let mut stop_by: Option<tokio::time::Instant> = None;
        loop {
            let grace_over = tokio::time::sleep_until(
                stop_by.unwrap_or_else(|| tokio::time::Instant::now() + renew_every),
            );
            tokio::select! {
                outcome = &mut handling => return Some(outcome),
                _ = tokio::time::sleep(renew_every), if stop_by.is_none() => {
                    if let Err(error) = self.client.heartbeat(held).await {
                        if error.is_gone() {
                            lease_lost.0.stop();
                            stop_by = Some(tokio::time::Instant::now() + self.options.lost_grace);
                        }
                    }
                }
                () = grace_over, if stop_by.is_some() => return None,
            }
        }
    }

    /// Reports what the handler made of the task (nothing when its lease was
    /// lost, or when it settled the task itself), and counts it.
    async fn settle(
        &self,
        held: &Held,
        outcome: Option<Outcome>,
        lease_lost: &LeaseLost,
        report: &mut WorkerReport,
    ) -> Result<(), Error> {
        let client = self.client;
        let outcome = match outcome {
            Some(outcome) if !lease_lost.is_lost() => outcome,
            // Lost (the handler stopped, or its grace ran out): nothing to report.
            _ => {
                report.lost += 1;
                return Ok(());
            }
        };
        match outcome {
            Outcome::Complete(result) => client
                .complete(held, result, "the handler completed it")
                .await
                .map(|_| report.completed += 1),
            Outcome::Fail(reason) => client.fail(held, &reason).await.map(|_| report.failed += 1),
            Outcome::Release(reason) | Outcome::Backoff { reason, .. } => client
                .release(held, &reason)
                .await
                .map(|_| report.released += 1),
            Outcome::Settled(_) => {
                report.settled += 1;
                Ok(())
            }
        }
    }
}

/// How long to wait before claiming again after `error`, the `failures`-th failure
/// in a row: the node's `Retry-After`, or a pause that doubles from 100 ms up to 5 s;
/// `None` when the worker should stop with the error (a refusal that stands, or more
/// than `max` failures in a row).
fn claim_backoff(error: &Error, failures: u32, max: u32) -> Option<Duration> {
    if !error.is_transient() || failures > max {
        return None;
    }
    Some(error.retry_after().unwrap_or_else(|| {
        let doublings = failures.saturating_sub(1).min(16);
        CLAIM_RETRY_PAUSE_FIRST
            .saturating_mul(1 << doublings)
            .min(CLAIM_RETRY_PAUSE_MAX)
    }))
}

/// `pause` scaled by a factor between 0.5 and 1.5 that depends only on the session
/// `worker`: sessions' polls drift apart instead of arriving at once.
fn spread(pause: Duration, worker: u64) -> Duration {
    // Fibonacci hashing spreads consecutive ids over the whole range.
    let share = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    pause.mul_f64(0.5 + share as f64 / 1024.0)
}

#[cfg(test)]
mod spread_tests {
    use super::*;

    fn refused(status: u16, retry_after: Option<u64>) -> Error {
        Error::Refused {
            status,
            code: "overloaded".into(),
            message: "busy".into(),
            body: Value::Null,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_passing_claim_failure_is_tried_again_after_the_nodes_word_or_a_growing_pause() {
        let ms = |ms| Some(Duration::from_millis(ms));
        // The node said when.
        assert_eq!(claim_backoff(&refused(503, Some(3)), 1, 50), ms(3_000));
        assert_eq!(claim_backoff(&refused(429, Some(1)), 7, 50), ms(1_000));
        // Otherwise doubling from 100 ms, never past 5 s.
        let pauses: Vec<_> = (1..=8)
            .map(|n| {
                claim_backoff(&refused(502, None), n, 50)
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(claim_backoff(&refused(504, None), 40, 50), ms(5_000));
        // Past the bound, or a refusal that stands: stop with the error.
        assert_eq!(claim_backoff(&refused(503, Some(1)), 51, 50), None);
        for status in [400, 401, 403, 404, 409, 410, 500] {
            assert_eq!(
                claim_backoff(&refused(status, Some(1)), 1, 50),
                None,
                "{status}"
            );
        }
        assert_eq!(claim_backoff(&Error::Setup("no token".into()), 1, 50), None);
    }

    #[test]
    fn pauses_stay_within_half_and_one_and_a_half_and_differ_between_sessions() {
        let pause = Duration::from_secs(2);
        let pauses: Vec<Duration> = (1..=100).map(|worker| spread(pause, worker)).collect();
        assert!(pauses
            .iter()
            .all(|p| *p >= pause / 2 && *p < pause.mul_f64(1.5)));
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(
            distinct.len() > 90,
            "consecutive sessions pause differently"
        );
        assert_eq!(
            spread(pause, 7),
            spread(pause, 7),
            "the same session, the same pause"
        );
    }
}
