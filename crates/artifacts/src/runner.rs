//! One artifact's life while it is meant to run: turn after turn, each with its
//! compute reserved before and committed after through the kernel. No loop flag:
//! the runtime calls `run` again while the artifact has quota and says it has work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony_kernel::{CommandBody, Decision, Effect, Reason, Resource};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wasmtime::{Store, Trap, TypedFunc};

use crate::instance::{HostState, Identity};
use crate::runtime::Inner;
use crate::status::{RunState, Status};

/// What `run` answers.
pub mod answer {
    /// Done for good: the artifact stops (its deployer may start it again).
    pub const DONE: i32 = 0;
    /// More work: call again (in this turn while its fuel lasts).
    pub const MORE: i32 = 1;
    /// Nothing to do until a message arrives (or `idle_wake_ms` passes, twice as
    /// long after each wake that found nothing, up to `idle_wake_max_ms`).
    pub const IDLE: i32 = 2;
}

/// How a turn ended.
enum TurnEnd {
    More,
    Idle,
    Done,
    Failed(String),
    /// Out of a quota mid-turn (memory): it waits for a grant.
    Exhausted(Reason),
}

/// A live instance.
pub(crate) struct Live {
    store: Store<HostState>,
    run: TypedFunc<(), i32>,
}

/// What one artifact's driver shares with the runtime.
pub(crate) struct Control {
    pub(crate) stop: AtomicBool,
    pub(crate) wake: Notify,
}

/// The key-value store as it is kept on disk between turns and restarts.
#[derive(Default, Serialize, Deserialize)]
struct Kept {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    disk_taken: u64,
}

fn kv_path(inner: &Inner, me: &Identity) -> PathBuf {
    inner.dir.join("kv").join(format!("{}.kv", me.address))
}

fn load_kept(path: &PathBuf) -> Kept {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| postcard::from_bytes(&bytes).ok())
        .unwrap_or_default()
}

fn save_kept(path: &PathBuf, state: &HostState) -> std::io::Result<()> {
    let kept = Kept {
        kv: state.kv.clone(),
        disk_taken: state.disk_taken,
    };
    let bytes = postcard::to_stdvec(&kept).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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
    // Holds and reservations left by an earlier run (a node that stopped mid-turn)
    // are given back before this one takes its own.
    let left: Vec<u64> = {
        let state = kernel.state.read().expect("state lock");
        state.reservations_of(me.principal).map(|r| r.id).collect()
    };
    for reservation in left {
        kernel
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
        let reserved = kernel
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
        let reservation = match reserved {
            Ok(event) => match (event.decision, event.effect) {
                (Decision::Allowed, Effect::Reserved { reservation, .. }) => reservation,
                _ => {
                    // Waiting out a refusal holds no turn slot.
                    permit = None;
                    match wait_out(&inner, &me, &status, &control, &event.reason).await {
                        Some(end) => break Some(end),
                        None => continue,
                    }
                }
            },
            Err(error) => {
                // The node is overloaded or stopping: wait a little.
                set(&status, RunState::Running, Some(error.message));
                permit = None;
                sleep_or_stop(&control, inner.config.exhausted_retry_ms).await;
                continue;
            }
        };
        set(&status, RunState::Running, None);
        let fuel = inner.config.fuel_of(slice);
        let turn_inner = Arc::clone(&inner);
        let turn_me = me.clone();
        let turn_digest = digest.clone();
        let turn_status = Arc::clone(&status);
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
        let (back, (end, used)) = match joined {
            Ok(result) => result,
            Err(panic) => {
                break Some((
                    RunState::Failed,
                    format!("the turn's thread failed: {panic}"),
                ));
            }
        };
        live = back;
        // Compute and host calls, charged after: the larger of the fuel burned (at
        // the calibrated rate) and the CPU time the turn took.
        let compute_ms = inner.config.ms_of(used.fuel).max(used.cpu_ms);
        kernel
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
            kernel
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
        // A busy artifact queues for its next turn before it gives this one's slot
        // up, behind those already waiting: strict turns. Anything else lets it go.
        if let (Some(permits), Some(held), TurnEnd::More) = (&inner.permits, permit.take(), &end) {
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
        permit = permit.filter(|_| matches!(end, TurnEnd::More));
        {
            let mut status = status.lock().expect("status lock");
            status.usage.turns += 1;
            status.usage.runs += used.runs;
            status.usage.fuel += used.fuel;
            status.usage.compute_ms += compute_ms;
            status.usage.host_calls += used.host_calls;
        }
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
                // Out of memory: the instance (stopped mid-call) goes and gives its
                // memory back; a fresh one starts once a grant or a transfer gives
                // the artifact more than it had.
                let message = crate::instance::denied(&reason).message;
                if let Some(mut gone) = live.take() {
                    let _ =
                        tokio::task::spawn_blocking(move || gone.store.data_mut().release_memory())
                            .await;
                }
                let before = inner.kernel.available(me.principal, Resource::MemoryBytes);
                {
                    let mut status = status.lock().expect("status lock");
                    status.state = RunState::Exhausted;
                    status.exhausted = Some((resource_of(&reason), None));
                    status.last_error = Some(message);
                    status.usage.memory_bytes = 0;
                }
                while !control.stop.load(Ordering::Acquire)
                    && inner.kernel.available(me.principal, Resource::MemoryBytes) <= before
                {
                    sleep_or_stop(&control, inner.config.exhausted_retry_ms).await;
                }
                status.lock().expect("status lock").exhausted = None;
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

/// Cuts what runs next in `store` at `turn_ms` of wall-clock time.
fn bound_in_time(store: &mut Store<HostState>, config: &crate::config::RuntimeConfig) {
    let ticks = config.turn_ms.div_ceil(crate::epoch::EPOCH_TICK_MS).max(1);
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
}

/// The calling thread's CPU time, in whole milliseconds.
fn thread_cpu_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// What one turn used.
#[derive(Default)]
struct Used {
    fuel: u64,
    /// The turn's thread CPU time (what the guest and its host calls ran).
    cpu_ms: u64,
    runs: u64,
    host_calls: u64,
    io_reservation: Option<u64>,
}

/// One turn, on a blocking thread: instantiates the module if needed, then calls
/// `run` while it has fuel and says it has more work.
fn turn(
    inner: &Inner,
    me: &Identity,
    digest: &str,
    status: &Arc<Mutex<Status>>,
    live: &mut Option<Live>,
    fuel: u64,
) -> (TurnEnd, Used) {
    let mut used = Used::default();
    // The wall-clock bound's clock runs while guest code does.
    let _ticking = inner.clock.ticking();
    // A new instance's start-up is paid from its first turn.
    let fresh = live.is_none();
    if fresh {
        match instantiate(inner, me, digest, status, fuel) {
            Ok(instance) => *live = Some(instance),
            Err(end) => {
                used.fuel = fuel;
                return (end, used);
            }
        }
    }
    let live = live.as_mut().expect("instantiated above");
    let store = &mut live.store;
    if !fresh {
        let _ = store.set_fuel(fuel);
        let state = store.data_mut();
        state.host_calls = 0;
        state.io_reservation = None;
    }
    // Fuel counts instructions, not time: the cheapest loops burn it slowly. The
    // turn is also cut at `turn_ms` of wall-clock time, and charged the larger of
    // its fuel and its thread's CPU time.
    bound_in_time(store, &inner.config);
    let cpu_start = thread_cpu_ms();
    let end = loop {
        used.runs += 1;
        match live.run.call(&mut *store, ()) {
            Ok(answer::MORE) => {
                let spent = store.data().host_calls >= inner.config.host_calls_per_turn;
                if store.get_fuel().unwrap_or(0) == 0 || spent {
                    break TurnEnd::More;
                }
            }
            Ok(answer::IDLE) => break TurnEnd::Idle,
            Ok(answer::DONE) => break TurnEnd::Done,
            Ok(other) => {
                break TurnEnd::Failed(format!(
                    "run answered {other}; it answers 0 (done), 1 (more) or 2 (idle)"
                ))
            }
            Err(error) => {
                if let Some(reason) = store.data_mut().exhausted.take() {
                    break TurnEnd::Exhausted(reason);
                }
                match error.downcast_ref::<Trap>() {
                    // Its turn's compute or time is spent: it goes on next turn.
                    Some(Trap::OutOfFuel | Trap::Interrupt) => break TurnEnd::More,
                    _ => break TurnEnd::Failed(format!("trapped: {error:#}")),
                }
            }
        }
    };
    used.fuel = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    used.cpu_ms = thread_cpu_ms().saturating_sub(cpu_start);
    let state_ref = store.data();
    used.host_calls = state_ref.host_calls;
    used.io_reservation = state_ref.io_reservation;
    if state_ref.kv_dirty {
        if let Err(error) = save_kept(&kv_path(inner, me), state_ref) {
            tracing::warn!(artifact = %me.address, "could not keep the store: {error}");
        }
    }
    store.data_mut().kv_dirty = false;
    {
        let mut status = status.lock().expect("status lock");
        status.usage.memory_bytes = store.data().memory_held;
        status.usage.kv_bytes = store.data().kv_bytes;
    }
    (end, used)
}

/// A new instance of the module, its memory held through the kernel.
fn instantiate(
    inner: &Inner,
    me: &Identity,
    digest: &str,
    status: &Arc<Mutex<Status>>,
    fuel: u64,
) -> Result<Live, TurnEnd> {
    let module = inner
        .module(digest)
        .map_err(|error| TurnEnd::Failed(format!("its module cannot be loaded: {error}")))?;
    let kept = load_kept(&kv_path(inner, me));
    let state = HostState::new(
        me.clone(),
        Arc::clone(&inner.config),
        Arc::clone(&inner.kernel),
        Arc::clone(&inner.services),
        Arc::clone(status),
        kept.kv,
        kept.disk_taken,
    );
    let mut store = Store::new(&inner.engine, state);
    store.limiter(|state| state);
    let _ = store.set_fuel(fuel);
    bound_in_time(&mut store, &inner.config);
    let instance = match inner.linker.instantiate(&mut store, &module) {
        Ok(instance) => instance,
        Err(error) => {
            let end = match store.data_mut().exhausted.take() {
                Some(reason) => TurnEnd::Exhausted(reason),
                None => TurnEnd::Failed(format!("could not start: {error:#}")),
            };
            store.data_mut().release_memory();
            return Err(end);
        }
    };
    let run = instance
        .get_typed_func::<(), i32>(&mut store, "run")
        .map_err(|error| TurnEnd::Failed(format!("no run: {error:#}")))?;
    Ok(Live { store, run })
}
