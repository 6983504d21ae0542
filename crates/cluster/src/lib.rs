//! Colony's cluster mode: several nodes, one order of commands, on NATS JetStream.
//!
//! The command log is a JetStream stream (file storage, up to three replicas). A node
//! never decides a caller's command by itself: it proposes it to the stream
//! ([`Cluster`] is the pipeline's [`colony_pipeline::Replicator`]), and every node,
//! this one included, applies every command of the stream in the stream's order with
//! the same kernel (`applier.rs`). A message of the stream carries the commands a node
//! proposed together; the kernel numbers them one after the other in the stream's
//! order, each keeping its place in the stream (`colony_kernel::cluster::LogPlace`),
//! and a command's time is the time its proposer read, never behind the previous
//! command's, so every node reaches the same decisions and the same hash-chain head.
//! The caller is answered once the stream has acknowledged the message (a quorum of
//! its servers has it) and this node has applied the command.
//!
//! - `config.rs`: [`ClusterConfig`], `cluster.toml`, and their bounds.
//! - `wire.rs`: what commands look like in the stream (`wire_legacy.rs` takes
//!   apart the older versions still read); `verify.rs`: their signatures checked,
//!   each once, alone and strictly; `merkle.rs`: several commands under one
//!   signature; `signer.rs`: the node's task that signs and publishes its commands
//!   in groups, one message each.
//! - `connect.rs`: reaching NATS and the command log's stream; `cluster.rs`: joining,
//!   genesis once; `propose.rs`: a command proposed and waited for.
//! - `applier.rs`: following the stream from the node's own last command
//!   (`follow.rs`: the consumer it takes, shared with `stream_mirror.rs`).
//! - `leader.rs`: the node's connection on the command stream leader's server;
//!   `placement.rs`: its consumers on the node's server.
//! - `ticker.rs`: time-driven work proposed once, whichever node notices first.
//! - `peers.rs`: each node's applied sequence, told to the others every second.
//! - `compact.rs`: the stream drops the commands no node needs any more.
//! - `bus_relay.rs`: the bus across nodes, over plain NATS.
//!
//! It owns the order of commands across nodes and carries bus messages between
//! them; it never serves HTTP, never decides a
//! command itself (the pipeline's decider does), and never writes the node's files.

mod applier;
pub mod bus_relay;
mod cluster;
mod compact;
mod config;
mod connect;
mod follow;
mod leader;
mod merkle;
mod peers;
mod placement;
mod propose;
mod signer;
pub mod stream_mirror;
mod ticker;
mod verify;
mod wire;
mod wire_legacy;

pub use cluster::{Cluster, ClusterError, Genesis};
pub use config::{
    load_file, ClusterConfig, ClusterFile, ENVELOPE_BYTES_MAX, KEEP_COMMANDS_DEFAULT,
    NODE_NAME_MAX, SERVERS_MAX,
};
pub use signer::SigningFigures;
