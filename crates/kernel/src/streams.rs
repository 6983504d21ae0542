//! Durable bus streams, as the kernel knows them: their definitions. The messages
//! themselves live in the node's stream logs; defining or deleting a stream is a
//! decision like any other, made by an admin and recorded with its justification.

use serde::{Deserialize, Serialize};

use crate::subject::check_pattern;

/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 64;
/// Most subject patterns one stream captures.
pub const STREAM_SUBJECTS_MAX: usize = 32;
/// Most streams a node keeps.
pub const STREAMS_MAX: usize = 256;

/// What a stream keeps and how its consumers are served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// Patterns whose messages the stream stores.
    pub subjects: Vec<String>,
    /// Messages older than this are dropped (none when `None`).
    pub max_age_ms: Option<u64>,
    /// The oldest messages are dropped past this many bytes of stored data.
    pub max_bytes: Option<u64>,
    /// The oldest messages are dropped past this many messages.
    pub max_msgs: Option<u64>,
    /// How long a consumer has to acknowledge a delivery before it is redelivered.
    pub ack_wait_ms: u64,
    /// Deliveries after which an unacknowledged message goes to `colony.dlq.<name>`.
    pub max_deliver: u32,
}

impl StreamSpec {
    /// Checks the definition; `Err` says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > STREAM_NAME_BYTES_MAX
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "a stream name is 1 to {STREAM_NAME_BYTES_MAX} letters, digits, `-` or `_`"
            ));
        }
        if self.subjects.is_empty() || self.subjects.len() > STREAM_SUBJECTS_MAX {
            return Err(format!(
                "a stream captures 1 to {STREAM_SUBJECTS_MAX} subject patterns"
            ));
        }
        for subject in &self.subjects {
            check_pattern(subject).map_err(|error| format!("subject {subject:?}: {error}"))?;
            if subject == ">" || subject.starts_with("colony.events.") {
                return Err(format!(
                    "subject {subject:?}: a stream cannot capture every subject or the kernel's event subjects"
                ));
            }
        }
        if self.ack_wait_ms == 0 {
            return Err("ack_wait_ms must be at least 1".into());
        }
        if self.max_deliver == 0 {
            return Err("max_deliver must be at least 1".into());
        }
        if [self.max_age_ms, self.max_bytes, self.max_msgs].contains(&Some(0)) {
            return Err("max_age, max_bytes and max_msgs must be positive when set".into());
        }
        Ok(())
    }

    /// Where messages delivered `max_deliver` times without an ack go.
    pub fn dead_letter_subject(&self) -> String {
        format!("colony.dlq.{}", self.name)
    }
}

/// Edge-enforced usage of one principal, reported by the node in a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeUsage {
    pub principal: crate::PrincipalId,
    pub io_ops: u64,
    /// Bytes counted toward `data_creation_bytes`.
    pub data_bytes: u64,
}
