//! Colony's artifact runtime: code that agents write and deploy, run inside Colony
//! on wasmtime, and metered to the instruction through the kernel.
//!
//! An artifact is a WebAssembly module stored by its digest and running as a
//! principal of kind `artifact` (`3.N`) under its deployer, with quotas of its own.
//! The runtime calls the module's exported `run` again and again while the artifact
//! has quota and says it has work: there is no loop flag. Each turn reserves
//! `turn_ms` of `compute_ms` through the kernel before it starts and commits the
//! fuel it burned (at the calibrated `fuel_per_ms`) after; host calls are reserved
//! as `io_ops` at a turn's first call and committed after; linear memory is held as
//! a `memory_bytes` gauge as it grows; stored bytes take `disk_bytes`; LLM calls go
//! through the gateway's reservations on `llm_budget_usd`. A denial is the kernel's
//! `insufficient_resource` decision naming the resource: out of a flow quota the
//! artifact waits (`exhausted`) and resumes when the window refills; out of memory
//! it stops.
//!
//! - [`config`]: `[runtime]` settings (fuel rate, turn length, bounds).
//! - [`module`]: digests, and the checks at deploy (imports only `colony`).
//! - [`host`]: the host API, version 1.
//! - `instance.rs`: what a store holds; the kernel and the [`Services`] (bus,
//!   gateway) as host calls reach them.
//! - `runner.rs`: one artifact's turns. `runtime.rs`: the drivers, reconciled with
//!   the kernel's records. [`status`]: what the API shows.
//!
//! **Never**: it serves no HTTP, names neither the bus nor the gateway (the node
//! lends them as [`Services`]), and changes the kernel only through the pipeline's
//! `Submitter`. No guest code runs without compute reserved for it.

pub mod config;
mod epoch;
pub mod host;
mod instance;
pub mod module;
mod runner;
mod runtime;
pub mod status;
mod turn;

pub use config::{RuntimeConfig, Scheduler};
pub use host::HostError;
pub use instance::{denied as host_denied, BoxFuture, Identity, Kernel, Services};
pub use module::ModuleError;
pub use runtime::{Deploy, DeployError, Runtime};
pub use status::{LogLine, RunState, Status, Usage};
pub use turn::answer;
