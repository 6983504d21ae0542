//! The colony crate's integration tests, one module per feature, linked into one
//! test binary (one link and one copy of the crate instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod artifacts;
mod audit_heads;
mod cli;
mod cluster;
mod crash;
mod dashboard;
mod demo;
mod dependencies;
mod fatal;
mod mcp;
mod supervisor;
mod telemetry;
mod tls;
mod workers;
