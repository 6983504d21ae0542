//! A Rust client of a Colony node, for programs that want to be agents of a colony:
//! typed calls of its HTTP API ([`Client`]: the board, worker sessions, the ledger,
//! the bus over HTTP, the LLM gateway), with the request and answer types of
//! `colony-api`, errors that keep what the node explained ([`Error`]), and a worker
//! loop ([`run_worker`]) that claims tasks (trying again while the node is away),
//! renews their leases while a handler works, and completes, fails or gives them back.
//!
//! ```no_run
//! # async fn example() -> Result<(), colony_client::Error> {
//! use colony_client::{run_worker, Client, Outcome, Stop, WorkerOptions};
//! let client = Client::from_env()?; // COLONY_URL, COLONY_TOKEN
//! let options = WorkerOptions { capabilities: vec!["summarize".into()], ..Default::default() };
//! run_worker(&client, &options, &Stop::default(), |work| async move {
//!     Outcome::Complete(serde_json::json!({ "summary": work.task.title }))
//! })
//! .await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
pub mod llm_worker;
mod session;
mod worker;

pub use client::{Client, Held, CALL_TIMEOUT, IDLE_CONNECTION_KEPT};
pub use colony_api as api;
pub use error::Error;
pub use session::Session;
pub use worker::{
    run_worker, LeaseLost, Outcome, Stop, Work, WorkerOptions, WorkerReport, CLAIM_RETRIES_MAX,
};
