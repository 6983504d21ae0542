//! Compacting the command log: the stream drops the commands no node needs any more.
//!
//! Every node writes the last command it applied to a JetStream key-value bucket
//! (`<stream>_NODES`, replicated like the stream) every `PROGRESS_EVERY`; the bucket
//! outlives any node's restart, so a node that is down is still remembered. Every
//! `compact_every` the watching node (the first live name, as for alerts) purges the
//! stream below the first command still needed: the one after the least applied of
//! the nodes written within `keep_absent`, and never one of the last
//! `keep_commands`. A node's written progress is never ahead of what it applied (and
//! what it applied is in its own log), so no node that restarts within
//! `keep_absent` misses a command; one gone longer, or a new node on an empty data
//! directory, finds the log's start gone and refuses to start, saying to seed it from
//! a copy of another node's data directory (`Cluster::join`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cluster::Inner;

/// How often a node writes its progress to the bucket.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// At most this many nodes' progress is read (the bucket's keys are node names).
const NODES_READ_MAX: usize = 1_024;
/// A progress entry is at most this many bytes; a larger one is ignored.
const PROGRESS_BYTES_MAX: usize = 256;

/// What a node writes under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) applied_seq: u64,
    pub(crate) at_ms: u64,
}

/// The first command the stream must keep (everything before it may go): the one
/// after the least applied by a node written within `keep_absent_ms`, and no later
/// than the first of the last `keep_commands`.
pub(crate) fn keep_from(
    progress: &[Progress],
    now_ms: u64,
    stream_last: u64,
    keep_commands: u64,
    keep_absent_ms: u64,
) -> u64 {
    let needed = progress
        .iter()
        .filter(|p| now_ms.saturating_sub(p.at_ms) <= keep_absent_ms)
        .map(|p| p.applied_seq.saturating_add(1))
        .min()
        .unwrap_or(1);
    let recent = stream_last.saturating_sub(keep_commands).saturating_add(1);
    needed.min(recent).max(1)
}

/// The bucket's name for a stream.
pub(crate) fn bucket(stream: &str) -> String {
    format!("{stream}_NODES")
}

/// Writes this node's progress, and compacts when this node is the watching one,
/// for as long as the node runs.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut store = None;
    let mut warned = false;
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    let mut compact = tokio::time::interval(inner.config.compact_every);
    while !inner.stopping.load(Ordering::Acquire) {
        let compacting = tokio::select! {
            _ = progress.tick() => false,
            _ = compact.tick() => true,
        };
        if !inner.connected() {
            continue;
        }
        if store.is_none() {
            store = match open(&inner).await {
                Ok(store) => Some(store),
                Err(error) => {
                    // Said once: without the bucket nothing is compacted, and
                    // nothing is lost either.
                    if !warned {
                        tracing::warn!(
                            "cannot open the nodes' progress bucket ({error}); the cluster's log is not compacted until it can"
                        );
                        warned = true;
                    }
                    None
                }
            };
        }
        let Some(bucket) = &store else { continue };
        if !compacting {
            let own = Progress {
                applied_seq: *inner.applied.borrow(),
                at_ms: colony_pipeline::sequencer::now_ms(),
            };
            let value = serde_json::to_vec(&own).expect("progress encodes");
            if let Err(error) = bucket.put(&inner.config.node_name, value.into()).await {
                tracing::debug!("cannot write this node's progress: {error}");
            }
        } else if crate::peers::first_live(&inner) {
            if let Err(error) = compact_once(&inner, bucket).await {
                tracing::warn!("cannot compact the cluster's log: {error}");
            }
        }
    }
}

/// The bucket, made when missing.
async fn open(inner: &Inner) -> Result<kv::Store, String> {
    let name = bucket(&inner.config.stream);
    if let Ok(store) = inner.jetstream.get_key_value(&name).await {
        return Ok(store);
    }
    inner
        .jetstream
        .create_key_value(kv::Config {
            bucket: name,
            description: "Colony's nodes: the last command each applied".into(),
            history: 1,
            max_value_size: PROGRESS_BYTES_MAX as i32,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: inner.config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())
}

/// Reads every node's progress and purges what none needs.
async fn compact_once(inner: &Inner, bucket: &kv::Store) -> Result<(), String> {
    let mut keys = bucket.keys().await.map_err(|error| error.to_string())?;
    let mut progress = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|error| error.to_string())?;
        let Some(value) = bucket.get(&key).await.map_err(|error| error.to_string())? else {
            continue;
        };
        if value.len() > PROGRESS_BYTES_MAX {
            continue;
        }
        if let Ok(entry) = serde_json::from_slice::<Progress>(&value) {
            progress.push(entry);
        }
        if progress.len() >= NODES_READ_MAX {
            break;
        }
    }
    // This node's own progress as it is now (never behind what it wrote).
    progress.push(Progress {
        applied_seq: *inner.applied.borrow(),
        at_ms: colony_pipeline::sequencer::now_ms(),
    });
    let mut stream = inner
        .jetstream
        .get_stream(&inner.config.stream)
        .await
        .map_err(|error| error.to_string())?;
    let state = stream
        .info()
        .await
        .map_err(|error| error.to_string())?
        .state
        .clone();
    let keep = keep_from(
        &progress,
        colony_pipeline::sequencer::now_ms(),
        state.last_sequence,
        inner.config.keep_commands,
        inner.config.keep_absent.as_millis() as u64,
    );
    if keep <= state.first_sequence {
        return Ok(());
    }
    let purged = stream
        .purge()
        .sequence(keep)
        .await
        .map_err(|error| error.to_string())?;
    inner.stream_first.fetch_max(keep, Ordering::Relaxed);
    tracing::info!(
        purged = purged.purged,
        first = keep,
        last = state.last_sequence,
        "compacted the cluster's command log"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(applied_seq: u64, at_ms: u64) -> Progress {
        Progress { applied_seq, at_ms }
    }

    #[test]
    fn the_log_keeps_what_a_node_still_needs_and_the_last_commands() {
        let day = 86_400_000;
        let now = 10 * day;
        // Two nodes at 900 and 950; the last 50 of 1 000 kept: from 901.
        let nodes = [at(900, now), at(950, now)];
        assert_eq!(keep_from(&nodes, now, 1_000, 50, day), 901);
        // Both caught up: the last 50 stay.
        let nodes = [at(1_000, now), at(1_000, now)];
        assert_eq!(keep_from(&nodes, now, 1_000, 50, day), 951);
        // A node down for an hour still holds its place...
        let nodes = [at(1_000, now), at(10, now - 3_600_000)];
        assert_eq!(keep_from(&nodes, now, 1_000, 50, day), 11);
        // ...one gone longer than keep_absent does not.
        let nodes = [at(1_000, now), at(10, now - 2 * day)];
        assert_eq!(keep_from(&nodes, now, 1_000, 50, day), 951);
        // Fewer commands than keep_commands: nothing goes.
        assert_eq!(keep_from(&[at(30, now)], now, 40, 50, day), 1);
        // A node that applied nothing needs everything.
        assert_eq!(keep_from(&[at(0, now)], now, 1_000, 50, day), 1);
        // Nobody known: nothing goes.
        assert_eq!(keep_from(&[], now, 1_000, 50, day), 1);
    }
}
