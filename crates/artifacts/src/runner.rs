//! One artifact's life while it is meant to run: turn after turn, each with its
//! compute reserved before and committed after through the kernel. No loop flag:
//! the runtime calls `run` again while the artifact has quota and says it has work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony_kernel::{CommandBody, Decision, Effect, Reason, Resource};
use tokio::sync::Notify;

use crate::instance::Identity;
use crate::runtime::Inner;
use crate::status::{RunState, Status};
use crate::turn::{turn, Live, TurnEnd, Used};

/// What one artifact's driver shares with the runtime.
pub(crate) struct Control {
    pub(crate) stop: AtomicBool,
    pub(crate) wake: Notify,
}

/// Runs one artifact until it is stopped, done, failed or removed.
pub(crate) async fn drive(
    inner: Arc<Inner>,
    me: Identity,
    digest: String,
    status: Arc<Mutex<Status>>,
    control: Arc<Control>,
) {
    let kernel = Arc::clone(&inner.kernel);
    set(&status, RunState::Running, None);
    give_back_what_was_left(&inner, &me).await;
    let mut live: Option<Live> = None;
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    // Idle wakes in a row that found nothing to do (each waits twice as long), and
    // whether the last wait ended by the clock rather than by a message or a poke.
    let mut quiet_wakes: u32 = 0;
    let mut woke_by_clock = false;
    let end: Option<(RunState, String)> = loop {
        if control.stop.load(Ordering::Acquire) {
            break None;
        }
        // Under round_robin a turn slot is held from the reservation to the commit,
        // so that busy artifacts take their turns strictly in the order they asked.
        if let (Some(permits), None) = (&inner.permits, &permit) {
            permit = Some(
                Arc::clone(permits)
                    .acquire_owned()
                    .await
                    .expect("never closed"),
            );
        }
        // Compute, reserved before the turn.
        let slice = inner.config.turn_ms;
        let reservation = match reserve_turn(&inner, &me, slice).await {
            Ok(reservation) => reservation,
            Err(refused) => {
                // Waiting holds no turn slot.
                permit = None;
                match refused {
                    Refused::Denied(reason) => {
                        if let Some(end) = wait_out(&inner, &me, &status, &control, &reason).await {
                            break Some(end);
                        }
                    }
                    Refused::Unanswered(message) => {
                        // The node is overloaded or stopping: wait a little.
                        set(&status, RunState::Running, Some(message));
                        sleep_or_stop(&control, inner.config.exhausted_retry_ms).await;
                    }
                }
                continue;
            }
        };
        set(&status, RunState::Running, None);
        let (end, used) = match take_turn(&inner, &me, &digest, &status, &mut live, slice).await {
            Ok(turned) => turned,
            Err(failed) => break Some(failed),
        };
        let compute_ms = charge_turn(&inner, &me, reservation, &used).await;
        permit = next_turn_slot(&inner, permit, &end).await;
        count_turn(&status, &used, compute_ms);
        if !matches!(end, TurnEnd::Idle) {
            (quiet_wakes, woke_by_clock) = (0, false);
        }
        match end {
            TurnEnd::More => tokio::task::yield_now().await,
            TurnEnd::Idle => {
                set(&status, RunState::Idle, None);
                quiet_wakes = if woke_by_clock {
                    quiet_wakes.saturating_add(1)
                } else {
                    0
                };
                let wait_ms = inner.config.idle_wait_ms(quiet_wakes);
                woke_by_clock = tokio::select! {
                    () = inner.services.wait_message(&me) => false,
                    () = tokio::time::sleep(Duration::from_millis(wait_ms)) => true,
                    () = control.wake.notified() => false,
                };
            }
            TurnEnd::Done => break Some((RunState::Stopped, "its run said it is done".into())),
            TurnEnd::Failed(message) => break Some((RunState::Failed, message)),
            TurnEnd::Exhausted(reason) => {
                wait_for_memory(&inner, &me, &status, &control, &mut live, &reason).await
            }
        }
    };
    // The instance goes: its memory is given back, its subscriptions end.
    if let Some(mut live) = live.take() {
        let _ = tokio::task::spawn_blocking(move || live.store.data_mut().release_memory()).await;
    }
    inner.services.end(&me);
    match end {
        None => set(&status, RunState::Stopped, None),
        Some((state, why)) => {
            // Failed, done, or out of memory: it stays stopped until started again.
            set(
                &status,
                state,
                (state != RunState::Stopped).then(|| why.clone()),
            );
            kernel
                .decide_until_decided(
                    me.principal,
                    format!("artifact {} stops: {why}", me.address),
                    CommandBody::SetArtifactRun {
                        artifact: me.principal,
                        run: false,
                    },
                )
                .await;
        }
    }
    status.lock().expect("status lock").usage.memory_bytes = 0;
}

/// One more turn in the artifact's usage.
fn count_turn(status: &Mutex<Status>, used: &Used, compute_ms: u64) {
    let mut status = status.lock().expect("status lock");
    status.usage.turns += 1;
    status.usage.runs += used.runs;
    status.usage.fuel += used.fuel;
    status.usage.compute_ms += compute_ms;
    status.usage.host_calls += used.host_calls;
}

/// Why a turn's compute was not reserved.
enum Refused {
    /// The kernel said no (a quota, a limit): waited out by the caller.
    Denied(Reason),
    /// The node could not answer (overloaded, stopping).
    Unanswered(String),
}

/// Reserves a turn's compute through the kernel.
async fn reserve_turn(inner: &Inner, me: &Identity, slice: u64) -> Result<u64, Refused> {
    let reserved = inner
        .kernel
        .decide(
            me.principal,
            format!("artifact {} takes a turn", me.address),
            CommandBody::Reserve {
                resource: Resource::ComputeMs,
                amount: slice,
                ttl_ms: None,
            },
        )
        .await;
    match reserved {
        Ok(event) => match (event.decision, event.effect) {
            (Decision::Allowed, Effect::Reserved { reservation, .. }) => Ok(reservation),
            _ => Err(Refused::Denied(event.reason)),
        },
        Err(error) => Err(Refused::Unanswered(error.message)),
    }
}

/// Holds and reservations left by an earlier run (a node that stopped mid-turn) are
/// given back before this one takes its own.
async fn give_back_what_was_left(inner: &Inner, me: &Identity) {
    let left: Vec<u64> = {
        let state = inner.kernel.state.read().expect("state lock");
        state.reservations_of(me.principal).map(|r| r.id).collect()
    };
    for reservation in left {
        inner
            .kernel
            .decide_until_decided(
                me.principal,
                format!(
                    "artifact {} starts: what its last run held is given back",
                    me.address
                ),
                CommandBody::Release { reservation },
            )
            .await;
    }
}

/// One turn of the instance on a blocking thread, with `slice` ms of fuel; `Err`
/// when the thread failed (the artifact fails).
async fn take_turn(
    inner: &Arc<Inner>,
    me: &Identity,
    digest: &str,
    status: &Arc<Mutex<Status>>,
    live: &mut Option<Live>,
    slice: u64,
) -> Result<(TurnEnd, Used), (RunState, String)> {
    let fuel = inner.config.fuel_of(slice);
    let (turn_inner, turn_me, turn_digest) = (Arc::clone(inner), me.clone(), digest.to_string());
    let turn_status = Arc::clone(status);
    let mut taken = live.take();
    let joined = tokio::task::spawn_blocking(move || {
        let outcome = turn(
            &turn_inner,
            &turn_me,
            &turn_digest,
            &turn_status,
            &mut taken,
            fuel,
        );
        (taken, outcome)
    })
    .await;
    match joined {
        Ok((back, outcome)) => {
            *live = back;
            Ok(outcome)
        }
        Err(panic) => Err((
            RunState::Failed,
            format!("the turn's thread failed: {panic}"),
        )),
    }
}

/// Compute and host calls, charged after the turn: the larger of the fuel burned (at
/// the calibrated rate) and the CPU time the turn took. The compute charged, in ms.
async fn charge_turn(inner: &Inner, me: &Identity, reservation: u64, used: &Used) -> u64 {
    let compute_ms = inner.config.ms_of(used.fuel).max(used.cpu_ms);
    inner
        .kernel
        .decide_until_decided(
            me.principal,
            format!("artifact {}'s turn used {} fuel", me.address, used.fuel),
            CommandBody::Commit {
                reservation,
                actual: compute_ms,
            },
        )
        .await;
    if let Some(io) = used.io_reservation {
        inner
            .kernel
            .decide_until_decided(
                me.principal,
                format!(
                    "artifact {} made {} host calls",
                    me.address, used.host_calls
                ),
                CommandBody::Commit {
                    reservation: io,
                    actual: used.host_calls,
                },
            )
            .await;
    }
    compute_ms
}

/// Under round_robin: a busy artifact queues for its next turn before it gives this
/// one's slot up, behind those already waiting (strict turns); anything else lets
/// its slot go.
async fn next_turn_slot(
    inner: &Inner,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
    end: &TurnEnd,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let (Some(permits), Some(held), TurnEnd::More) = (&inner.permits, permit.take(), end) {
        let mut next = Box::pin(Arc::clone(permits).acquire_owned());
        let early = tokio::select! {
            biased;
            acquired = &mut next => Some(acquired),
            () = std::future::ready(()) => None,
        };
        drop(held);
        let acquired = match early {
            Some(acquired) => acquired,
            None => next.await,
        };
        permit = Some(acquired.expect("never closed"));
    }
    permit.filter(|_| matches!(end, TurnEnd::More))
}

/// Out of memory: the instance (stopped mid-call) goes and gives its memory back; a
/// fresh one starts once a grant or a transfer gives the artifact more than it had.
async fn wait_for_memory(
    inner: &Inner,
    me: &Identity,
    status: &Arc<Mutex<Status>>,
    control: &Control,
    live: &mut Option<Live>,
    reason: &Reason,
) {
    let message = crate::instance::denied(reason).message;
    if let Some(mut gone) = live.take() {
        let _ = tokio::task::spawn_blocking(move || gone.store.data_mut().release_memory()).await;
    }
    let before = inner.kernel.available(me.principal, Resource::MemoryBytes);
    {
        let mut status = status.lock().expect("status lock");
        status.state = RunState::Exhausted;
        status.exhausted = Some((resource_of(reason), None));
        status.last_error = Some(message);
        status.usage.memory_bytes = 0;
    }
    while !control.stop.load(Ordering::Acquire)
        && inner.kernel.available(me.principal, Resource::MemoryBytes) <= before
    {
        sleep_or_stop(control, inner.config.exhausted_retry_ms).await;
    }
    status.lock().expect("status lock").exhausted = None;
}

/// Waits out a refused turn: a flow quota until it refills, anything else for a
/// grant (`exhausted_retry_ms`). `Some` ends the artifact (removed).
async fn wait_out(
    inner: &Inner,
    me: &Identity,
    status: &Arc<Mutex<Status>>,
    control: &Control,
    reason: &Reason,
) -> Option<(RunState, String)> {
    let message = crate::instance::denied(reason).message;
    match reason {
        Reason::NoStanding { .. } => return Some((RunState::Stopped, message)),
        Reason::Quarantined { .. } => {
            // Until a human lifts it, seen in the state: no command is spent (each
            // refused one would be a record in the log).
            {
                let mut status = status.lock().expect("status lock");
                status.state = RunState::Exhausted;
                status.exhausted = Some((reason.code().to_string(), None));
                status.last_error = Some(message);
            }
            while !control.stop.load(Ordering::Acquire) && quarantined(inner, me) {
                sleep_or_stop(control, inner.config.exhausted_retry_ms).await;
            }
        }
        Reason::InsufficientResource { refill_at_ms, .. } => {
            {
                let mut status = status.lock().expect("status lock");
                status.state = RunState::Exhausted;
                status.exhausted = Some((resource_of(reason), *refill_at_ms));
                status.last_error = Some(message);
            }
            let wait_ms = match refill_at_ms {
                Some(at) => at
                    .saturating_sub(colony_pipeline::sequencer::now_ms())
                    .max(1),
                None => inner.config.exhausted_retry_ms,
            };
            sleep_or_stop(control, wait_ms).await;
            // A grant or a refill is seen in the state before a command is spent.
            while !control.stop.load(Ordering::Acquire) && !has_compute(inner, me) {
                sleep_or_stop(control, inner.config.exhausted_retry_ms).await;
            }
        }
        _ => {
            {
                let mut status = status.lock().expect("status lock");
                status.state = RunState::Exhausted;
                status.exhausted = Some((reason.code().to_string(), None));
                status.last_error = Some(message);
            }
            sleep_or_stop(control, inner.config.exhausted_retry_ms).await;
        }
    }
    status.lock().expect("status lock").exhausted = None;
    None
}

/// Whether the artifact, or an ancestor of it, is quarantined now.
fn quarantined(inner: &Inner, me: &Identity) -> bool {
    let state = inner.kernel.state.read().expect("state lock");
    state.quarantine_over(me.principal).is_some()
}

/// Whether the artifact's own compute and io balances have room for a turn.
fn has_compute(inner: &Inner, me: &Identity) -> bool {
    let kernel = &inner.kernel;
    kernel.available(me.principal, Resource::ComputeMs) >= inner.config.turn_ms
        && kernel.available(me.principal, Resource::IoOps) >= 2
}

fn resource_of(reason: &Reason) -> String {
    match reason {
        Reason::InsufficientResource { resource, .. } => resource.as_str().to_string(),
        other => other.code().to_string(),
    }
}

async fn sleep_or_stop(control: &Control, ms: u64) {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
        () = control.wake.notified() => {}
    }
}

fn set(status: &Mutex<Status>, state: RunState, error: Option<String>) {
    let mut status = status.lock().expect("status lock");
    status.state = state;
    if error.is_some() {
        status.last_error = error;
    }
}
