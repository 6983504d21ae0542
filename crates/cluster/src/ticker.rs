//! Time-driven work in a cluster: when something is due (an expiry, the end of a
//! review, a stability window), a tick is proposed, once whichever node notices first
//! (the stream drops the others' as duplicates: they carry the same message id,
//! `tick-<due>`). Each node's health figures (requests, errors) go as its own
//! `ReportHealth` when something is due.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use colony_kernel::{CommandBody, PrincipalId, State};
use colony_pipeline::Metrics;

use crate::cluster::Inner;

/// How often a node looks whether something is due.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// A tick for the same due time is proposed again after this long, in case the
/// first was lost with a server.
const TICK_AGAIN_AFTER: Duration = Duration::from_secs(1);

pub(crate) async fn run(inner: Arc<Inner>, state: Arc<RwLock<State>>, metrics: Arc<Metrics>) {
    let mut proposed: Option<(u64, tokio::time::Instant)> = None;
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !inner.stopping.load(Ordering::Acquire) {
        look.tick().await;
        let now = colony_pipeline::sequencer::now_ms();
        let Some(due) = state.read().expect("state lock").next_due_ms() else {
            continue;
        };
        if due > now || !inner.connected() {
            continue;
        }
        let again =
            proposed.is_none_or(|(last, at)| last != due || at.elapsed() >= TICK_AGAIN_AFTER);
        if !again {
            continue;
        }
        proposed = Some((due, tokio::time::Instant::now()));
        if let Some(health) = metrics.take_health() {
            publish(
                &inner,
                None,
                "the node's figures since its last report",
                CommandBody::ReportHealth(health),
            )
            .await;
        }
        publish(
            &inner,
            Some(format!("tick-{due}")),
            "time passes: something is due",
            CommandBody::Tick,
        )
        .await;
    }
}

/// Publishes a system command without waiting for it to be applied: alone in its
/// message, so that the stream can drop the other nodes' copies of a tick by its id.
async fn publish(inner: &Inner, id: Option<String>, justification: &str, body: CommandBody) {
    let envelope = match inner.envelope(0, PrincipalId::SYSTEM, justification.into(), body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::debug!("a tick was not proposed: {}", error.message);
            return;
        }
    };
    let mut message = PublishMessage::build().payload(inner.sign_alone(envelope));
    if let Some(id) = id {
        message = message.message_id(id);
    }
    let acked = async {
        inner
            .jetstream
            .send_publish(inner.config.commands_subject(), message)
            .await?
            .await
    }
    .await;
    if let Err(error) = acked {
        tracing::debug!("a tick was not taken by the cluster's log: {error}");
    }
}
