//! What a command looks like in the stream: an [`Envelope`], postcard-encoded after
//! a version byte.

use colony_kernel::{CommandBody, PrincipalId};
use serde::{Deserialize, Serialize};

/// The encoding's version, the message's first byte.
const WIRE_VERSION: u8 = 1;

/// A proposed command, as the stream keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The node that proposed it, and which start of that node (so that a request
    /// number is never matched to a caller of another run).
    pub(crate) origin: String,
    pub(crate) incarnation: u64,
    /// The proposer's number for its caller.
    pub(crate) request: u64,
    /// The proposer's clock when it proposed, in Unix milliseconds.
    pub(crate) proposed_ms: u64,
    pub(crate) actor: PrincipalId,
    pub(crate) justification: String,
    pub(crate) body: CommandBody,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![WIRE_VERSION];
        // Encoding into memory fails only when serde does, which no kernel type does.
        bytes.extend(postcard::to_allocvec(self).expect("a command encodes"));
        bytes
    }

    /// The envelope, or why the message is not one (a message of another version or
    /// not Colony's).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|error| format!("undecodable command: {error}"))
            }
            Some((version, _)) => Err(format!("encoding version {version}, not {WIRE_VERSION}")),
            None => Err("an empty message".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_junk_is_named() {
        let envelope = Envelope {
            origin: "node-1".into(),
            incarnation: 7,
            request: 42,
            proposed_ms: 1_700_000_000_000,
            actor: PrincipalId(3),
            justification: "why".into(),
            body: CommandBody::Tick,
        };
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(b"\x02abc")
            .unwrap_err()
            .contains("version 2"));
        assert!(Envelope::decode(b"\x01\xff\xff")
            .unwrap_err()
            .contains("undecodable"));
    }

    /// Every shape a command takes must come back from postcard; an alert's scope
    /// once was an internally tagged enum, which postcard cannot read.
    #[test]
    fn an_alert_round_trips() {
        let envelope = Envelope {
            origin: "node-1".into(),
            incarnation: 7,
            request: 42,
            proposed_ms: 1,
            actor: PrincipalId(0),
            justification: "why".into(),
            body: CommandBody::Alert(Box::new(colony_kernel::alerts::AlertReport {
                scope: colony_kernel::alerts::AlertScope::Limit {
                    limit: "ai_accounts".into(),
                },
                threshold: colony_kernel::alerts::Threshold::Soft,
                raised: true,
                usage: 1,
                at: 1,
                of: None,
            })),
        };
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
    }
}
