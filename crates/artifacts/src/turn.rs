//! One turn of an artifact's instance, on a blocking thread: instantiated if needed
//! (its key-value store read back from disk), then `run` called while it has fuel
//! and says it has more work, within the turn's wall-clock bound; what the turn used,
//! for the runner to charge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use colony_kernel::Reason;
use serde::{Deserialize, Serialize};
use wasmtime::{Store, Trap, TypedFunc};

use crate::instance::{HostState, Identity};
use crate::runtime::Inner;
use crate::status::Status;

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
pub(crate) enum TurnEnd {
    More,
    Idle,
    Done,
    Failed(String),
    /// Out of a quota mid-turn (memory): it waits for a grant.
    Exhausted(Reason),
}

/// A live instance.
pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    pub(crate) run: TypedFunc<(), i32>,
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
pub(crate) struct Used {
    pub(crate) fuel: u64,
    /// The turn's thread CPU time (what the guest and its host calls ran).
    pub(crate) cpu_ms: u64,
    pub(crate) runs: u64,
    pub(crate) host_calls: u64,
    pub(crate) io_reservation: Option<u64>,
}

/// One turn, on a blocking thread: instantiates the module if needed, then calls
/// `run` while it has fuel and says it has more work.
pub(crate) fn turn(
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
