//! The node crate's integration tests, one module per feature, linked into one
//! test binary (one link and one copy of the crate instead of one per file).

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod api;
mod artifacts;
mod audit_heads;
mod authorization;
mod bus_parking;
mod bus_pubsub;
mod bus_python;
mod bus_safety;
mod bus_streams;
mod bus_workers;
mod claim_wait;
mod dashboard;
mod fairness;
mod gateway;
mod gateway_disconnect;
mod gateway_embeddings;
mod gateway_python;
mod gateway_responses;
mod gateway_tls;
mod gateway_tracing;
mod governance_api;
mod grants;
mod liveness;
mod log_retention;
mod mcp;
mod mcp_gateway;
mod mcp_gateway_http;
mod openapi;
mod outbox;
mod properties;
mod properties_http;
mod reports;
mod safety;
mod task_control;
mod task_retention;
mod tasks_api;
mod tls_serving;
mod tokens;
