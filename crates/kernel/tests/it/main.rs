//! The kernel crate's integration tests, one module per feature, linked into one
//! test binary (one link and one copy of the crate instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod anomaly;
mod artifacts;
mod cluster_nodes;
mod edge_leases;
mod governance;
mod kernel;
mod lineage;
mod retention;
mod safety;
mod settle;
mod simulation;
mod task_control;
mod tasks;
mod tokens;
mod tool_calls;
mod workers;
