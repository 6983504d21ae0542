//! Talking to the server that leads the command stream. Every message a node
//! publishes goes to the stream's leader, which replicates it, acknowledges it and
//! delivers it to every node's consumer; a node connected to another server has each
//! of these cross a route between servers as well, and that server relay them. So a
//! node (unless `cluster.toml` says `prefer_leader = false`) moves its connection to
//! the leader's server among the configured ones: at start, and whenever leadership
//! has moved and stayed put for two checks in a row. On the cluster benchmark (three
//! nodes, three servers on one box) it cut the messages through the servers by about
//! a tenth: most of their traffic is the stream's own replication, which no
//! placement changes (docs/benchmarks.md, twenty-sixth session).
//!
//! The move is one reconnection of the node's client (`Client::force_reconnect`)
//! whose server [`Preferred`] picks once; if that server cannot be reached, the
//! client's own choice applies, as after any lost connection. Which server has which
//! name is learnt by connecting to each configured URL briefly ([`server_name`]).
//! After a move, and at every check, the node's consumers found on another server
//! are made again on its own (`placement.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ReconnectToServer, Server, ServerAddr};

use crate::cluster::Inner;
use crate::config::ClusterConfig;

/// How often a node asks which server leads the stream.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often a node polls its connection while it waits for a move to end.
const MOVE_POLL: Duration = Duration::from_millis(10);

/// The server the node's next reconnection goes to, once.
#[derive(Default)]
pub(crate) struct Preferred {
    next: Mutex<Option<ServerAddr>>,
}

impl Preferred {
    /// The server the client's reconnection should try, when one was asked for and
    /// is in the client's pool; asked for once: later reconnections (a server lost)
    /// are the client's own choice.
    pub(crate) fn pick(&self, pool: &[Server]) -> Option<ReconnectToServer> {
        let wanted = self.next.lock().expect("preferred lock").take()?;
        pool.iter()
            .find(|server| server.addr == wanted)
            .map(|server| ReconnectToServer {
                addr: server.addr.clone(),
                delay: Some(Duration::ZERO),
            })
    }

    fn set(&self, addr: ServerAddr) {
        *self.next.lock().expect("preferred lock") = Some(addr);
    }
}

/// What a node remembers between checks.
#[derive(Default)]
pub(crate) struct Watch {
    /// The configured servers' names, as learnt.
    names: HashMap<String, ServerAddr>,
    /// A leader seen at the last check that is not this node's server.
    seen: Option<String>,
}

impl Watch {
    /// Whether to move to `leader` now: when this node is elsewhere and `leader` led
    /// at the last check too (or `at_once`, at start).
    fn should_move(
        &mut self,
        leader: Option<String>,
        current: &str,
        at_once: bool,
    ) -> Option<String> {
        let leader = leader.filter(|leader| !leader.is_empty() && leader != current);
        let Some(leader) = leader else {
            self.seen = None;
            return None;
        };
        let stable = self.seen.as_ref() == Some(&leader);
        self.seen = Some(leader.clone());
        (stable || at_once).then_some(leader)
    }
}

/// Checks every [`CHECK_EVERY`] until the node stops, moving when leadership moved.
pub(crate) async fn run(inner: Arc<Inner>, mut watch: Watch) {
    if !inner.config.prefer_leader {
        return;
    }
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !inner.stopping.load(Ordering::Acquire) {
        every.tick().await;
        check(&inner, &mut watch, false).await;
        // After every check (and so after every move): a consumer misplaced at its
        // making, or left behind by a move, is made again.
        inner.placement.check();
    }
}

/// One check: where the stream's leader is, and a move there when it should be.
pub(crate) async fn check(inner: &Inner, watch: &mut Watch, at_once: bool) {
    if !inner.config.prefer_leader || !inner.connected() {
        return;
    }
    let leader = match inner.jetstream.get_stream(&inner.config.stream).await {
        Ok(stream) => stream
            .cached_info()
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone()),
        Err(_) => return,
    };
    let current = inner.client.server_info().server_name;
    let Some(leader) = watch.should_move(leader, &current, at_once) else {
        return;
    };
    let Some(addr) = address_of(&inner.config, &mut watch.names, &leader).await else {
        tracing::debug!(node = %inner.config.node_name, %leader, "the stream's leader is not among the configured servers");
        return;
    };
    inner.leader.set(addr.clone());
    if inner.client.force_reconnect().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + inner.config.ack_timeout * 2;
    loop {
        let now = inner.client.server_info().server_name;
        if now == leader && inner.connected() {
            tracing::info!(node = %inner.config.node_name, from = %current, to = %leader, "moved to the server leading the command stream");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            // Not there: that URL answers with another name now (learn it again).
            watch.names.remove(&leader);
            tracing::info!(node = %inner.config.node_name, %leader, connected_to = %now, "could not move to the server leading the command stream");
            return;
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// The configured server named `name`, asking the servers whose names are not known
/// yet.
async fn address_of(
    config: &ClusterConfig,
    names: &mut HashMap<String, ServerAddr>,
    name: &str,
) -> Option<ServerAddr> {
    if let Some(addr) = names.get(name) {
        return Some(addr.clone());
    }
    let known: Vec<ServerAddr> = names.values().cloned().collect();
    for url in &config.servers {
        let Ok(addr) = url.parse::<ServerAddr>() else {
            continue;
        };
        if known.contains(&addr) {
            continue;
        }
        if let Some(found) = server_name(config, &addr).await {
            names.insert(found, addr);
        }
        if let Some(addr) = names.get(name) {
            return Some(addr.clone());
        }
    }
    None
}

/// The name of the server at `addr`, from a short connection of its own (with the
/// node's credentials); `None` when it does not answer within `ack_timeout`.
async fn server_name(config: &ClusterConfig, addr: &ServerAddr) -> Option<String> {
    let options = crate::connect::options(config).await.ok()?;
    let client = tokio::time::timeout(
        config.ack_timeout,
        options
            .name(format!(
                "colony {} (which server is this)",
                config.node_name
            ))
            .connection_timeout(config.ack_timeout)
            .connect(addr.clone()),
    )
    .await
    .ok()?
    .ok()?;
    let name = client.server_info().server_name;
    let _ = tokio::time::timeout(config.ack_timeout, client.drain()).await;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(urls: &[&str]) -> Vec<Server> {
        urls.iter()
            .map(|url| Server {
                addr: url.parse().unwrap(),
                failed_attempts: 0,
                did_connect: true,
                is_discovered: false,
                last_error: None,
            })
            .collect()
    }

    #[test]
    fn the_preferred_server_is_picked_once_and_only_from_the_pool() {
        let servers = pool(&["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
        let preferred = Preferred::default();
        assert!(preferred.pick(&servers).is_none(), "nothing asked for");
        preferred.set("nats://127.0.0.1:4223".parse().unwrap());
        let picked = preferred.pick(&servers).unwrap();
        assert_eq!(picked.addr, servers[1].addr);
        assert_eq!(picked.delay, Some(Duration::ZERO));
        // A later reconnection (that server lost) is the client's own choice.
        assert!(preferred.pick(&servers).is_none());
        preferred.set("nats://127.0.0.1:4299".parse().unwrap());
        assert!(preferred.pick(&servers).is_none(), "not in the pool");
        assert!(preferred.pick(&servers).is_none());
    }

    #[test]
    fn a_node_moves_at_start_or_when_leadership_stayed_put() {
        let mut watch = Watch::default();
        let leader = |name: &str| Some(name.to_string());
        // At start, at once.
        assert_eq!(watch.should_move(leader("b"), "a", true), leader("b"));
        // Later, only when the same leader was seen at the check before.
        let mut watch = Watch::default();
        assert_eq!(watch.should_move(leader("b"), "a", false), None);
        assert_eq!(watch.should_move(leader("c"), "a", false), None);
        assert_eq!(watch.should_move(leader("c"), "a", false), leader("c"));
        // Where the node is already, or when no leader is known: stay.
        let mut watch = Watch::default();
        assert_eq!(watch.should_move(leader("a"), "a", true), None);
        assert_eq!(watch.should_move(None, "a", true), None);
        assert_eq!(watch.should_move(leader(""), "a", true), None);
        // An interruption starts the count again.
        assert_eq!(watch.should_move(leader("b"), "a", false), None);
        assert_eq!(watch.should_move(leader("a"), "a", false), None);
        assert_eq!(watch.should_move(leader("b"), "a", false), None);
        assert_eq!(watch.should_move(leader("b"), "a", false), leader("b"));
    }
}
