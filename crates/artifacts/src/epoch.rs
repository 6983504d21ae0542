//! The engine's clock for wall-clock bounds: a thread advances the engine's epoch
//! every [`EPOCH_TICK_MS`] while a turn runs guest code, and sleeps otherwise. A turn
//! holds a [`Ticking`] while it runs; its deadline counts ticks from its start, so the
//! clock standing still between turns changes no bound. (It ticked for ever before: a
//! thousand wake-ups a second on a node with no artifact, which on two cores showed up
//! in every other request's latency.)

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::Engine;

/// How often the engine's epoch advances while a turn runs: a turn's wall-clock
/// bound is counted in these ticks.
pub(crate) const EPOCH_TICK_MS: u64 = 1;

/// Turns running guest code, and the ticker waiting for the first.
pub(crate) struct EpochClock {
    running: Mutex<usize>,
    wake: Condvar,
}

/// The clock kept ticking while this lives.
pub(crate) struct Ticking(Arc<EpochClock>);

impl EpochClock {
    /// Starts the ticker for `engine`; it ends with the engine.
    pub(crate) fn start(engine: &Engine) -> Result<Arc<EpochClock>, String> {
        let clock = Arc::new(EpochClock {
            running: Mutex::new(0),
            wake: Condvar::new(),
        });
        let weak = engine.weak();
        let ticker = Arc::clone(&clock);
        std::thread::Builder::new()
            .name("artifact-epoch".into())
            .spawn(move || loop {
                {
                    let mut running = ticker.running.lock().expect("epoch lock");
                    while *running == 0 {
                        // Wakes now and then to end with a dropped engine.
                        let (next, _) = ticker
                            .wake
                            .wait_timeout(running, Duration::from_secs(1))
                            .expect("epoch lock");
                        running = next;
                        if weak.upgrade().is_none() {
                            return;
                        }
                    }
                }
                let Some(engine) = weak.upgrade() else { return };
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
            })
            .map_err(|e| format!("the epoch thread: {e}"))?;
        Ok(clock)
    }

    /// Keeps the clock ticking until the returned guard is dropped.
    pub(crate) fn ticking(self: &Arc<EpochClock>) -> Ticking {
        let mut running = self.running.lock().expect("epoch lock");
        *running += 1;
        if *running == 1 {
            self.wake.notify_one();
        }
        Ticking(Arc::clone(self))
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        *self.0.running.lock().expect("epoch lock") -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_advances_only_while_a_turn_runs() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        let ticking = clock.ticking();
        // A store whose deadline is one tick away traps once the clock moved: poll
        // the store's view of the epoch through a deadline callback-free check.
        let module =
            wasmtime::Module::new(&engine, "(module (func (export \"spin\") (loop br 0)))")
                .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(5);
        store.epoch_deadline_trap();
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        // An endless loop ends: the clock ticks while a turn holds it.
        let trap = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        drop(ticking);
        assert_eq!(*clock.running.lock().unwrap(), 0);
    }
}
