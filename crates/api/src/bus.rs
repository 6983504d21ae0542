//! The agent bus's frames (`GET /v1/bus`, a WebSocket of JSON text frames;
//! docs/protocol.md): what a client writes ([`ClientFrame`]) and reads
//! ([`ServerFrame`]), what the node writes besides messages ([`NodeFrame`]), and the
//! data it publishes on its own subjects ([`TaskOffer`], [`DecisionEvent`],
//! [`DeadLetter`]). The node reads client frames with its own zero-copy parser and
//! encodes each message once for all its subscribers with its own writer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame a client sends. Only the fields its `op` uses are written.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientFrame {
    /// `ping`, `pub`, `sub`, `unsub`, `ack`, `hello`, `heartbeat`, `bye`.
    pub op: String,
    /// Echoed in the answer (`ok`, `err`, `pong`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A publish's data: any JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
    /// An `ack`'s stream sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl ClientFrame {
    /// A frame of `op` with no fields yet.
    pub fn new(op: &str) -> ClientFrame {
        ClientFrame {
            op: op.to_string(),
            ..ClientFrame::default()
        }
    }
}

/// A frame the bus sends, as a client reads it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to a frame that had an `id`.
    Ok(Answer),
    /// A frame refused (with the refused frame's `id`, if it had one), or a notice
    /// (`slow_consumer`: messages were dropped).
    Err(Refusal),
    /// A message for one of the connection's subscriptions.
    Msg(Delivered),
    Pong {
        #[serde(default)]
        id: Option<Value>,
    },
    /// A queued worker session got its place.
    Admitted(Admitted),
    /// Anything else: the client may ignore it.
    #[serde(other)]
    Other,
}

impl ServerFrame {
    /// The `id` of the frame this answers, if it answers one.
    pub fn answers(&self) -> Option<&Value> {
        match self {
            ServerFrame::Ok(answer) => answer.id.as_ref(),
            ServerFrame::Err(refusal) => refusal.id.as_ref(),
            ServerFrame::Pong { id } => id.as_ref(),
            ServerFrame::Msg(_) | ServerFrame::Admitted(_) | ServerFrame::Other => None,
        }
    }
}

/// `ok`: what the answered frame did (only the fields its `op` uses are written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// A core publish: the subscriptions it reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// A `sub`: the subscription's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A publish to a stream (or a `sub` on one): the stream and the sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// A `sub` on a stream: the first sequence number it delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `ok` to a worker's `hello`, `heartbeat` or `bye`: its session as it now stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerAnswer {
    #[serde(default)]
    pub id: Option<Value>,
    pub worker: Option<u64>,
    /// `active`, `queued` or `left`.
    pub status: String,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// A `hello` that took up a session the connection had before.
    pub resumed: bool,
    /// The decision's sequence number; `null` for a heartbeat answered from the
    /// node's memory.
    pub seq: Option<u64>,
}

/// `admitted`: a queued worker session got its place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admitted {
    pub worker: u64,
    /// `active`.
    pub status: String,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
}

/// `err`: why a frame was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub error: RefusalError,
}

/// The refusal's code and message, and the code's own fields (a limit's name and
/// figures, when to try again, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusalError {
    pub code: String,
    pub message: String,
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

/// A frame the node writes, `op` first: what [`ServerFrame`] reads, less the
/// messages (`msg`), which the node's own encoder writes once for every subscriber.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeFrame<'a> {
    Ok(&'a Answer),
    #[serde(rename = "ok")]
    Worker(&'a WorkerAnswer),
    Admitted(&'a Admitted),
    Err(&'a Refusal),
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
}

/// `msg`: one message for one subscription.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Delivered {
    pub sid: String,
    pub subject: String,
    /// The publisher's data: any JSON.
    pub data: Value,
    /// The publisher's address.
    pub from: String,
    pub priority: String,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// A stream message: its stream, sequence number and time, and how many times
    /// it was delivered to this consumer.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub time_ms: Option<u64>,
    #[serde(default)]
    pub delivery: Option<u32>,
}

/// The data of a message on `colony.tasks.offers`: a task that became claimable,
/// with what a worker needs to decide whether to claim it (`POST /v1/tasks/claim`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOffer {
    pub address: colony_kernel::TaskAddress,
    pub title: String,
    pub capabilities: Vec<String>,
    /// `low`, `normal`, `high` or `critical`.
    pub priority: String,
    /// The priority with aging, as the board orders claims.
    pub effective_priority: u32,
    pub parent: Option<colony_kernel::TaskAddress>,
    pub budget_remaining_micro_usd: Option<u64>,
    /// Attempts made so far.
    pub attempts: usize,
    /// A checkpoint waits for whoever claims it.
    pub resume_from_checkpoint: bool,
}

/// The data of a message on `colony.events.decision.<action>` (and
/// `colony.events.alert.<limit>`, `colony.grants.<what>.<requester>`): one decision,
/// as the decision log records it.
/// The node writes it; a reader takes `event` as the decision log's records
/// ([`crate::audit::DecisionRecord`] shows what a reader needs of one).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DecisionEvent<'a> {
    pub seq: u64,
    pub at_ms: u64,
    /// The address of the principal whose command it decided.
    pub actor: &'a str,
    pub justification: &'a str,
    pub event: &'a colony_kernel::Event,
}

/// The data of a message on a stream consumer's dead-letter subject: a message
/// delivered `deliveries` times and never acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stream: String,
    pub seq: u64,
    /// The consumer's subscription id.
    pub consumer: String,
    /// The address of the connection's principal.
    pub address: String,
    pub deliveries: u32,
    /// The stored message (its subject, data, sender, ...), as `GET` reads it.
    pub message: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_frames_read_as_the_protocol_document_shows_them() {
        let read = |text: &str| serde_json::from_str::<ServerFrame>(text).unwrap();
        assert_eq!(
            read(r#"{"op":"ok","id":3,"delivered":2}"#),
            ServerFrame::Ok(Answer {
                id: Some(3.into()),
                delivered: Some(2),
                ..Answer::default()
            })
        );
        let refused = read(
            r#"{"op":"err","id":4,"error":{"code":"denied","message":"no","limit":"io_ops"}}"#,
        );
        assert_eq!(refused.answers(), Some(&Value::from(4)));
        assert!(
            matches!(refused, ServerFrame::Err(Refusal { error, .. }) if error.code == "denied")
        );
        let ServerFrame::Msg(msg) = read(
            r#"{"op":"msg","sid":"s","subject":"a.b","data":{"n":1},"priority":"high","from":"1.1","stream":"work","seq":7,"time_ms":9,"delivery":2}"#,
        ) else {
            panic!("a msg");
        };
        assert_eq!(
            (msg.seq, msg.delivery, msg.from.as_str()),
            (Some(7), Some(2), "1.1")
        );
        assert_eq!(
            read(
                r#"{"op":"admitted","worker":5,"status":"active","heartbeat_ms":2000,"lease_ms":30000}"#
            ),
            ServerFrame::Admitted(Admitted {
                worker: 5,
                status: "active".into(),
                heartbeat_ms: 2000,
                lease_ms: 30000
            })
        );
        assert_eq!(read(r#"{"op":"news","n":1}"#), ServerFrame::Other);
        let frame = ClientFrame {
            id: Some(1),
            subject: Some("a.b".into()),
            data: Some(serde_json::json!({"n": 1})),
            ..ClientFrame::new("pub")
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"op":"pub","id":1,"subject":"a.b","data":{"n":1}}"#
        );
    }

    #[test]
    fn the_node_writes_its_frames_as_the_protocol_document_shows_them() {
        let write = |frame: NodeFrame<'_>| serde_json::to_string(&frame).unwrap();
        let stored = Answer {
            id: Some(8.into()),
            stream: Some("orders".into()),
            seq: Some(42),
            ..Answer::default()
        };
        assert_eq!(
            write(NodeFrame::Ok(&stored)),
            r#"{"op":"ok","id":8,"stream":"orders","seq":42}"#
        );
        // A heartbeat answered from memory says so with `"seq":null`.
        let heard = WorkerAnswer {
            id: Some(1.into()),
            worker: Some(12),
            status: "active".into(),
            heartbeat_ms: 2000,
            lease_ms: 30000,
            resumed: false,
            seq: None,
        };
        assert_eq!(
            write(NodeFrame::Worker(&heard)),
            r#"{"op":"ok","id":1,"worker":12,"status":"active","heartbeat_ms":2000,"lease_ms":30000,"resumed":false,"seq":null}"#
        );
        let mut details = serde_json::Map::new();
        details.insert("limit".into(), "io_ops".into());
        let refused = Refusal {
            id: Some(4.into()),
            error: RefusalError {
                code: "denied".into(),
                message: "no".into(),
                details,
            },
        };
        let text = write(NodeFrame::Err(&refused));
        assert_eq!(
            text,
            r#"{"op":"err","id":4,"error":{"code":"denied","message":"no","limit":"io_ops"}}"#
        );
        // What the node writes, a client reads back as it was.
        let read: ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(read, ServerFrame::Err(refused));
        assert_eq!(write(NodeFrame::Pong { id: None }), r#"{"op":"pong"}"#);
    }
}
