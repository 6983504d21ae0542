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
