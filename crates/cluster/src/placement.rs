//! Where a node's consumers of the cluster's streams live. The consumers a node reads
//! the streams with are ordered consumers: of one replica, which the servers place on
//! any server holding the stream, at random. On another server than the node's own,
//! every message it delivers crosses a route between servers (and the pull requests
//! the other way), and leaves only once that server has learnt the message committed.
//! So a node (unless `cluster.toml` says `prefer_leader = false`) makes a consumer
//! again, deleting the misplaced one, until it lands on the server the node is
//! connected to (when that server holds the stream: [`wanted`]),
//! [`PLACEMENT_TRIES`] times at most (then it keeps the last); and it
//! makes a consumer again when it finds it on another server than its own, after a
//! move of its connection and every few seconds ([`Rounds`], `leader.rs`).
//!
//! With the node on the command stream's leader (`leader.rs`), its consumer of the
//! command log is on the leader too: on the cluster benchmark (three nodes, three
//! servers on one box) it cut the messages through the servers per command by a
//! sixth and their bytes by a third (docs/benchmarks.md, twenty-seventh session).

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::Consumer;
use async_nats::jetstream::stream::{self, Stream};
use tokio::sync::watch;

/// Consumers made at most to have one on the node's server: with three servers
/// holding the stream, one in about eight makes do with another server.
pub(crate) const PLACEMENT_TRIES: usize = 5;

/// An ordered consumer of `stream` made as `config` says, on the server named `near`
/// when one is given (within [`PLACEMENT_TRIES`]), with the name of the server it
/// is on (when the servers say).
pub(crate) async fn ordered_consumer(
    stream: &Stream,
    config: OrderedConfig,
    near: Option<&str>,
) -> Result<(Consumer<OrderedConfig>, Option<String>), String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let consumer = stream
            .create_consumer(config.clone())
            .await
            .map_err(|error| error.to_string())?;
        let on = server_of(&consumer);
        let placed = match (near, on.as_deref()) {
            (Some(near), Some(on)) => near == on,
            _ => true,
        };
        if placed || tries >= PLACEMENT_TRIES {
            return Ok((consumer, on));
        }
        // Misplaced: deleted now (the servers would drop it once idle, later).
        let name = consumer.cached_info().name.clone();
        if let Err(error) = stream.delete_consumer(&name).await {
            tracing::debug!(%name, %error, "could not delete a misplaced consumer");
        }
    }
}

/// The server a consumer of one replica lives on: its (only) leader.
fn server_of(consumer: &Consumer<OrderedConfig>) -> Option<String> {
    consumer
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .filter(|name| !name.is_empty())
}

/// Rounds in which the node's followers check where their consumer is: after each
/// move of the node's connection, and every few seconds (`leader.rs`), so that a
/// consumer misplaced after all its tries, or left behind by a move, is made again
/// on the node's server.
pub(crate) struct Rounds {
    count: watch::Sender<u64>,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds {
            count: watch::channel(0).0,
        }
    }
}

impl Rounds {
    /// Asks every follower to check.
    pub(crate) fn check(&self) {
        self.count.send_modify(|count| *count += 1);
    }

    /// Tells of the rounds from now on.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.count.subscribe()
    }
}

/// The servers that hold a stream (its leader and its replicas), by name: a consumer
/// of it can only be on one of them.
pub(crate) fn holders(info: &stream::Info) -> Vec<String> {
    let Some(cluster) = &info.cluster else {
        return Vec::new();
    };
    cluster
        .leader
        .iter()
        .cloned()
        .chain(cluster.replicas.iter().map(|peer| peer.name.clone()))
        .filter(|name| !name.is_empty())
        .collect()
}

/// Where a consumer of a stream held by `holders` should be: on `current`, the node's
/// server, when it holds the stream (a consumer cannot be anywhere else).
pub(crate) fn wanted(holders: &[String], current: String) -> Option<String> {
    holders.contains(&current).then_some(current)
}

/// Waits for a round in which the server the consumer should be on (`wanted`, now)
/// is not `placed_on`, the consumer's (forever when the consumer's server is not
/// known).
pub(crate) async fn misplaced(
    rounds: &mut watch::Receiver<u64>,
    placed_on: Option<&str>,
    wanted: impl Fn() -> Option<String>,
) {
    let Some(placed_on) = placed_on else {
        return std::future::pending().await;
    };
    loop {
        if rounds.changed().await.is_err() {
            return std::future::pending().await;
        }
        if wanted().is_some_and(|wanted| wanted != placed_on) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_follower_hears_only_of_rounds_that_find_its_consumer_misplaced() {
        let moves = Rounds::default();
        let current = std::sync::Arc::new(std::sync::Mutex::new("nats-1".to_string()));
        let mut watch = moves.watch();
        let holders = ["nats-1".to_string(), "nats-2".to_string()];
        let now = {
            let current = std::sync::Arc::clone(&current);
            move || wanted(&holders, current.lock().unwrap().clone())
        };
        let waiting = misplaced(&mut watch, Some("nats-1"), now);
        tokio::pin!(waiting);
        // A round on the consumer's server finds nothing to do.
        moves.check();
        assert!((&mut waiting).now_or_never().is_none());
        // Nor one on a server that does not hold the stream.
        *current.lock().unwrap() = "nats-9".into();
        moves.check();
        assert!((&mut waiting).now_or_never().is_none());
        *current.lock().unwrap() = "nats-2".into();
        moves.check();
        assert!((&mut waiting).now_or_never().is_some());
        // A consumer whose server is not known never hears of one.
        let mut watch = moves.watch();
        let unknown = misplaced(&mut watch, None, || Some("nats-3".to_string()));
        tokio::pin!(unknown);
        moves.check();
        assert!((&mut unknown).now_or_never().is_none());
    }
}
