//! What metering costs, on wasmtime alone (no node): `cargo bench -p
//! colony-artifacts --bench metering`.
//!
//! - **calibration**: wasmtime fuel burned per millisecond of one core by a
//!   compute-bound module: the `fuel_per_ms` that `artifacts.toml` should hold on
//!   this machine.
//! - **metered vs unmetered**: the same module on an engine that counts fuel and on
//!   one that does not; the ratio of their times (the aim: at most 1.5x).
//! - **host call crossing**: a call from the guest into a host function that does
//!   nothing, against a call to a guest function, in nanoseconds.
//!
//! Prints figures; asserts nothing about time.

use std::time::Instant;

use wasmtime::{Config, Engine, Instance, Linker, Module, Store, TypedFunc};

/// A compute-bound guest that does what guests do: arithmetic, loads and stores in
/// its memory, calls and branches (the calibration's workload).
const WORK: &str = r#"(module
  (memory 1)
  (func $mix (param $x i32) (param $i i32) (result i32)
    (i32.add (i32.mul (local.get $x) (i32.const 31)) (i32.xor (local.get $i) (i32.shr_u (local.get $x) (i32.const 7)))))
  (func (export "work") (param $n i32) (result i32)
    (local $i i32) (local $x i32) (local $at i32)
    (local.set $x (i32.const 17))
    (loop $next
      (local.set $at (i32.and (i32.shl (local.get $i) (i32.const 2)) (i32.const 4095)))
      (i32.store (local.get $at) (call $mix (local.get $x) (local.get $i)))
      (local.set $x (i32.add (local.get $x) (i32.load (i32.xor (local.get $at) (i32.const 64)))))
      (if (i32.and (local.get $x) (i32.const 1))
        (then (local.set $x (i32.rotl (local.get $x) (i32.const 5)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $x)))"#;

/// The cheapest loop there is, for the spread: fuel burns faster here.
const SPIN: &str = r#"(module
  (func (export "work") (param $n i32) (result i32)
    (local $i i32)
    (loop $next
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i)))"#;

/// Calls the host (or a guest function) `n` times.
const CALLS: &str = r#"(module
  (import "colony" "nothing" (func $nothing (result i32)))
  (func $guest (result i32) (i32.const 1))
  (func (export "host") (param $n i32) (result i32)
    (local $i i32) (local $sum i32)
    (loop $next
      (local.set $sum (i32.add (local.get $sum) (call $nothing)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $sum))
  (func (export "guest") (param $n i32) (result i32)
    (local $i i32) (local $sum i32)
    (loop $next
      (local.set $sum (i32.add (local.get $sum) (call $guest)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $sum)))"#;

/// Metered as the runtime meters: fuel, and an epoch deadline (never reached here).
fn engine(fuel: bool) -> Engine {
    let mut config = Config::new();
    config.consume_fuel(fuel);
    config.epoch_interruption(fuel);
    Engine::new(&config).expect("engine")
}

fn instantiate(engine: &Engine, fuel: bool, wat: &str) -> (Store<()>, Instance) {
    let module = Module::new(engine, wat).expect("module");
    let mut store = Store::new(engine, ());
    if fuel {
        store.set_fuel(u64::MAX / 2).unwrap();
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let mut linker = Linker::new(engine);
    linker
        .func_wrap("colony", "nothing", || -> i32 { 1 })
        .unwrap();
    let instance = linker.instantiate(&mut store, &module).expect("instance");
    (store, instance)
}

/// Best of `rounds` timings of `f`, in seconds.
fn best(rounds: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// Fuel per millisecond of `wat`'s `work(n)` on `engine`, and the best time.
fn fuel_rate(engine: &Engine, wat: &str, n: i32) -> (f64, f64) {
    let (mut store, instance) = instantiate(engine, true, wat);
    let work: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "work").unwrap();
    let before = store.get_fuel().unwrap();
    let seconds = best(5, || {
        work.call(&mut store, n).unwrap();
    });
    let per_call = (before - store.get_fuel().unwrap()) as f64 / 5.0;
    (per_call / (seconds * 1_000.0), seconds)
}

fn main() {
    let n: i32 = 20_000_000;
    println!("colony-artifacts metering (wasmtime 48, cranelift, best of 5)");

    let metered = engine(true);
    let (fuel_per_ms, metered_s) = fuel_rate(&metered, WORK, n);
    println!(
        "calibration (mixed work): {:.0} fuel per ms (fuel_per_ms); {n} iterations in {:.1} ms",
        fuel_per_ms,
        metered_s * 1_000.0
    );
    let (spin_per_ms, _) = fuel_rate(&metered, SPIN, n * 4);
    println!(
        "spread: the cheapest loop burns {:.0} fuel per ms ({:.2}x the calibration)",
        spin_per_ms,
        spin_per_ms / fuel_per_ms
    );
    let plain = engine(false);
    let (mut store, instance) = instantiate(&plain, false, WORK);
    let work: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "work").unwrap();
    let plain_s = best(5, || {
        work.call(&mut store, n).unwrap();
    });
    println!(
        "metered {:.1} ms, unmetered {:.1} ms: metered / unmetered = {:.2}x",
        metered_s * 1_000.0,
        plain_s * 1_000.0,
        metered_s / plain_s
    );

    let calls: i32 = 10_000_000;
    for (name, engine, fuel) in [("metered", &metered, true), ("unmetered", &plain, false)] {
        let (mut store, instance) = instantiate(engine, fuel, CALLS);
        let host: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "host").unwrap();
        let guest: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "guest").unwrap();
        let host_s = best(5, || {
            host.call(&mut store, calls).unwrap();
        });
        let guest_s = best(5, || {
            guest.call(&mut store, calls).unwrap();
        });
        println!(
            "{name}: a host call {:.1} ns, a guest call {:.1} ns",
            host_s * 1e9 / calls as f64,
            guest_s * 1e9 / calls as f64
        );
    }
}
