//! Colony's node: the tokio shell around the kernel.
//!
//! - [`sequencer`]: one thread that takes commands from a bounded queue, stamps them
//!   with sequence number and time, applies them to the kernel, appends them and their
//!   decisions to the store, syncs once per batch (group commit), and only then
//!   answers each caller.
//! - [`api`]: the HTTP API (axum), with bearer-token auth on every route but
//!   `/healthz`, structured errors, size-limited bodies and the edge gate for
//!   `concurrent_api_requests`.
//! - [`genesis`]: reading `config/genesis/`.
//! - [`Node`]: opens the store, applies genesis at first start, serves, and shuts
//!   down gracefully (flushing the log and writing a snapshot).
//!
//! ```no_run
//! # async fn run() -> anyhow_free::Result {
//! let node = colony_node::Node::start(colony_node::NodeConfig::default()).await?;
//! println!("listening on http://{}", node.local_addr());
//! node.shutdown().await?;
//! # Ok(()) }
//! # mod anyhow_free { pub type Result = std::result::Result<(), colony_node::NodeError>; }
//! ```

pub mod access;
mod alerts;
pub mod api;
mod app;
mod artifacts;
pub mod audit_heads;
pub mod auth;
mod body;
mod claim_wait;
mod cluster;
mod edge;
mod edge_flush;
mod error;
mod fairness;
mod first_start;
mod gate_counts;
pub mod genesis;
pub mod identity;
pub mod listener;
pub mod mcp;
mod node;
mod node_config;
mod private_file;
pub mod route;
pub mod sandbox;
pub mod scope;
mod start;
pub mod supervisor;
pub mod tls;

pub use error::{ApiError, NodeError};

/// The agent bus, from its own crate.
pub use colony_bus as bus;
pub(crate) use colony_pipeline::metrics;
/// The durable pipeline, from its own crate (re-exported where it used to live).
pub use colony_pipeline::{fatal, sequencer};
/// Where the gateway's spans go (OpenTelemetry over OTLP).
pub use colony_telemetry as telemetry;
pub use node::Node;
pub use node_config::NodeConfig;

/// The LLM gateway, from its own crate.
pub mod gateway {
    pub use colony_gateway::*;
}
