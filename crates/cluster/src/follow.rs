//! What following a JetStream stream takes, for the command log and the bus's
//! streams alike: an ordered consumer from a number on, made again (after a short,
//! growing wait) whenever it is lost, until the node stops.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig, OrderedError};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::cluster::Inner;

/// A pull waits at most this long on the server: after the server a node talks to
/// dies, its consumer notices within seconds, not the default 30.
const PULL_EXPIRES_MAX: Duration = Duration::from_secs(2);
/// A consumer that delivered nothing for this long while the stream is known to hold
/// more is given up and made anew. The library recreates a consumer it lost by itself,
/// but after a NATS server dies its retries back off to 10 s each, and the node's
/// writes wait for them: its own consumer, made again from the last command applied,
/// is back as soon as JetStream answers.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(3);
/// The first wait before following again after losing a consumer.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before following again.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Following a stream: its messages, the server its consumer is on, the servers
/// that hold the stream, and the placement checks it hears of (`placement.rs`).
pub(crate) struct Following {
    pub(crate) messages: Ordered,
    pub(crate) server: Option<String>,
    holders: Vec<String>,
    rounds: watch::Receiver<u64>,
}

/// What a consumer delivered: a message, an error, or its end (`None`).
pub(crate) type Delivered = Option<Result<async_nats::jetstream::Message, OrderedError>>;

impl Following {
    /// What the consumer delivers next; `Ok(None)` when it delivered nothing for
    /// [`STALLED_AFTER`]; `Err(Ended::Misplaced)` when a check finds the consumer on
    /// another server than the one it should be on.
    pub(crate) async fn next(&mut self, inner: &Inner) -> Result<Option<Delivered>, Ended> {
        let misplaced =
            crate::placement::misplaced(&mut self.rounds, self.server.as_deref(), || {
                wanted(inner, &self.holders)
            });
        tokio::select! {
            waited = tokio::time::timeout(STALLED_AFTER, self.messages.next()) => Ok(waited.ok()),
            () = misplaced => Err(Ended::Misplaced),
        }
    }
}

/// The messages of `stream` (on `filter`, when given) from number `start` on, in order,
/// from a consumer on the node's server where it can be (`placement.rs`).
pub(crate) async fn ordered_messages(
    inner: &Inner,
    stream: &Stream,
    filter: Option<String>,
    start: u64,
) -> Result<Following, String> {
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        filter_subject: filter.unwrap_or_default(),
        max_expires: PULL_EXPIRES_MAX,
        ..Default::default()
    };
    // Checks from now on: one during the making of the consumer is heard of too.
    let rounds = inner.placement.watch();
    let holders = crate::placement::holders(stream.cached_info());
    let near = wanted(inner, &holders);
    let (consumer, server) =
        crate::placement::ordered_consumer(stream, config, near.as_deref()).await?;
    let messages = consumer
        .messages()
        .await
        .map_err(|error| error.to_string())?;
    Ok(Following {
        messages,
        server,
        holders,
        rounds,
    })
}

/// The server a consumer of a stream held by `holders` should be on: the node's own,
/// when it holds the stream and `prefer_leader` is on.
fn wanted(inner: &Inner, holders: &[String]) -> Option<String> {
    if !inner.config.prefer_leader {
        return None;
    }
    crate::placement::wanted(holders, inner.client.server_info().server_name)
}

/// How following a stream once ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The consumer was lost, or the stream cannot be followed from here (why).
    Lost(String),
    /// The consumer is on another server than the node's: a consumer is made again
    /// on the node's, at once.
    Misplaced,
}

impl From<String> for Ended {
    fn from(why: String) -> Self {
        Ended::Lost(why)
    }
}

/// Runs `once(next)` until it ends well or the node stops. `once` answers the
/// number it got to and how it ended; after a failure it runs again from there,
/// after a wait that doubles up to `RETRY_MAX` (and starts over after progress);
/// after its consumer was found misplaced, at once.
pub(crate) async fn keep_following<N, F, Fut>(inner: &Inner, what: &str, mut next: N, mut once: F)
where
    N: Copy + PartialOrd + std::fmt::Debug,
    F: FnMut(N) -> Fut,
    Fut: Future<Output = (N, Result<(), Ended>)>,
{
    let mut retry = RETRY_FIRST;
    while !inner.stopping.load(Ordering::Acquire) {
        let before = next;
        let (reached, ended) = once(next).await;
        next = reached;
        let message = match ended {
            Ok(()) => return,
            Err(Ended::Misplaced) => {
                tracing::debug!(node = %inner.config.node_name, ?next, "{what}: again from a consumer on the node's server");
                continue;
            }
            Err(Ended::Lost(message)) => message,
        };
        if next > before {
            retry = RETRY_FIRST;
        }
        tracing::warn!(node = %inner.config.node_name, ?next, "{what}: {message}; again in {retry:?}");
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// A message the consumer delivered, with its number in the stream.
pub(crate) fn numbered<E: std::fmt::Display>(
    message: Result<async_nats::jetstream::Message, E>,
) -> Result<(async_nats::jetstream::Message, u64), String> {
    let message = message.map_err(|error| error.to_string())?;
    let seq = message
        .info()
        .map_err(|error| error.to_string())?
        .stream_sequence;
    Ok((message, seq))
}
