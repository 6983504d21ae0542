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

/// A compute-bound guest: a hash-like mix over a loop, so that nothing folds away.
const WORK: &str = r#"(module
  (func (export "work") (param $n i32) (result i32)
    (local $i i32) (local $x i32)
    (local.set $x (i32.const 17))
    (loop $next
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 31)) (i32.xor (local.get $i) (i32.shr_u (local.get $x) (i32.const 7)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $x)))"#;

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

fn engine(fuel: bool) -> Engine {
    let mut config = Config::new();
    config.consume_fuel(fuel);
    Engine::new(&config).expect("engine")
}

fn instantiate(engine: &Engine, fuel: bool, wat: &str) -> (Store<()>, Instance) {
    let module = Module::new(engine, wat).expect("module");
    let mut store = Store::new(engine, ());
    if fuel {
        store.set_fuel(u64::MAX / 2).unwrap();
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

fn main() {
    let n: i32 = 50_000_000;
    println!(
        "colony-artifacts metering (wasmtime {}, best of 5)",
        env!("CARGO_PKG_VERSION")
    );

    let metered = engine(true);
    let (mut store, instance) = instantiate(&metered, true, WORK);
    let work: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "work").unwrap();
    let before = store.get_fuel().unwrap();
    let metered_s = best(5, || {
        work.call(&mut store, n).unwrap();
    });
    let fuel_per_call = (before - store.get_fuel().unwrap()) / 5;
    let fuel_per_ms = fuel_per_call as f64 / (metered_s * 1_000.0);
    println!(
        "calibration: {fuel_per_call} fuel per call of {n} iterations in {:.1} ms: {:.0} fuel per ms (fuel_per_ms)",
        metered_s * 1_000.0,
        fuel_per_ms
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
