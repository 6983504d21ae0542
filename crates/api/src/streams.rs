//! `/v1/streams...`: durable bus streams.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A duration: milliseconds, or text like `"30s"` or `"24h"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Duration {
    Millis(u64),
    Text(String),
}

/// `POST /v1/streams` (an admin's): defines or replaces a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// Subject patterns whose messages it stores.
    pub subjects: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// A stream's definition and what it holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamInfo {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_msgs: Option<u64>,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    /// Where messages delivered `max_deliver` times without an ack go.
    pub dead_letter_subject: String,
    pub messages: usize,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// `201` (new) or `200` (replaced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamDefined {
    pub stream: StreamInfo,
    pub seq: u64,
    pub replaced: bool,
}

/// `GET /v1/streams`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}

/// `GET /v1/streams/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamOne {
    pub stream: StreamInfo,
}

/// `DELETE /v1/streams/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamDeleted {
    pub deleted: String,
    pub seq: u64,
}

/// `POST /v1/bus/publish`: one message on a subject, gated like a WebSocket publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// A subject without wildcards (`work.review`).
    pub subject: String,
    /// Any JSON.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Why (publishes are metered at the edge, not decided one by one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub subject: String,
    /// Subscribers it reached on this node.
    pub delivered: usize,
}

/// `GET /v1/streams/{name}/messages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamReadQuery {
    /// The first sequence number to read (1 by default).
    pub from_seq: Option<u64>,
    /// 1 to 1000 (100 by default).
    pub limit: Option<usize>,
    /// Only messages whose subject this pattern matches.
    pub subject: Option<String>,
}

/// Messages of a durable stream, oldest first, each as stored (`seq`, `subject`,
/// `data`, `from`, `at_ms`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamMessages {
    pub stream: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<serde_json::Value>,
    /// Where the next read starts.
    pub next_seq: u64,
}

/// `GET /v1/inbox`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    /// The first sequence number to read (1 by default): the `next_seq` of the
    /// previous read, to read only what is new.
    pub from_seq: Option<u64>,
    /// 1 to 1000 (100 by default).
    pub limit: Option<usize>,
}

/// Messages sent to the caller's inbox (`agents.<address>.inbox` and below), oldest
/// first, each as stored (`seq`, `subject`, `data`, `from`, `at_ms`, `reply_to`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InboxPage {
    /// Where others send to the caller: `agents.<address>.inbox`.
    pub subject: String,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<serde_json::Value>,
    /// Where the next read starts.
    pub next_seq: u64,
    /// The inbox stream's newest sequence number (`next_seq` past it: read
    /// everything).
    pub last_seq: u64,
}
