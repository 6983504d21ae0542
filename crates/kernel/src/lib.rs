//! Colony's kernel: a pure, deterministic state machine.
//!
//! Every action in Colony is a [`Command`] (who, when, what, why). The node stamps a
//! command with its sequence number and time when it is logged, then calls
//! [`State::apply`], which decides (allow, warn, queue, deny), changes the state, and
//! returns the [`Event`]s that explain the decision. Nothing else changes the state.
//!
//! The crate has no I/O, no clock, no randomness, no async and no hash maps: time comes
//! from the command, identifiers come from sequence numbers, and every collection is
//! ordered, so replaying the same commands always yields the same state and events.
//!
//! ```
//! use colony_kernel::{Command, CommandBody, Genesis, PrincipalId, PrincipalKind, State};
//!
//! let mut state = State::new();
//! let genesis = Genesis::for_tests([7; 32]);
//! state.apply(&Command::new(1, 1_000, PrincipalId::SYSTEM, "first start", CommandBody::Genesis(Box::new(genesis))));
//! let applied = state.apply(&Command::new(2, 2_000, PrincipalId::ADMIN, "a worker for the docs",
//!     CommandBody::CreatePrincipal(colony_kernel::CreatePrincipal::new("scribe", PrincipalKind::Ai, [9; 32]))));
//! assert!(applied.primary().decision.is_allowed());
//! assert_eq!(state.principal_by_token(&[9; 32]).unwrap().address, "2.1");
//! ```

mod address;
pub mod alerts;
pub mod anomaly;
pub mod artifacts;
pub mod cluster;
mod command;
pub mod edge;
mod event;
mod genesis;
pub mod governance;
pub mod grants;
mod ledger;
mod limits;
mod principal;
pub mod retention;
mod state;
pub mod streams;
pub mod subject;
mod task_address;
pub mod tasks;
pub mod tokens;
pub mod tool_calls;
pub mod workers;

pub use address::{validate_address, AddressError};
pub use command::{
    Command, CommandBody, CreatePrincipal, NodeHealth, Priority, Required, SupervisorAction,
    TaskUpdate,
};
pub use event::{Action, Applied, Decision, Effect, Event, Reason};
pub use genesis::{Genesis, QuotaConfig};
pub use ledger::{Balance, Reservation, ReservationId, ReservationState, Resource, ResourceKind};

pub use limits::{
    builtin_limit, AdmissionRequest, BuiltinLimit, Enforcement, Gate, Limit, LimitKind, LimitName,
    LimitSpec, LimitState, OnSoft, QueuedAdmission, BUILTIN_LIMITS,
};
pub use principal::{Principal, PrincipalId, PrincipalKind, Role, TokenHash};
pub use state::State;
pub use task_address::{TaskAddress, TaskAddressError, TASK_ADDRESS_BYTES_MAX};
pub use tokens::{NewToken, Token};

/// Money is counted in integer micro-dollars: one US dollar is this many units.
pub const MICRO_USD_PER_USD: u64 = 1_000_000;

/// Longest justification the kernel records, in bytes; longer ones are denied.
pub const JUSTIFICATION_BYTES_MAX: usize = 4_096;

/// Longest principal name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Deepest ancestry of a principal, itself included: a principal whose parent's
/// chain is already this long cannot be created. Every ledger operation walks the
/// chain, so this bounds the work one command can cause.
pub const PRINCIPAL_DEPTH_MAX: usize = 16;
