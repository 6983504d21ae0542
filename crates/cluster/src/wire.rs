//! What commands look like in the stream: one message carries the commands a node
//! proposed together (one to 64), under one signature. A message is a version byte,
//! the proposing node's Ed25519 signature, the number of commands, then each
//! [`Envelope`] (postcard) after its length (four bytes, little-endian). The
//! signature covers `colony-commands/v4\n`, the number of commands (one byte) and
//! the root of a Merkle tree (`merkle.rs`) over the envelopes' bytes. Every envelope
//! of a message names the key that signed it, and the node's own sequence number for
//! the command, so that the kernel can refuse a key the cluster did not admit and a
//! command published again (`colony_kernel::cluster`).
//!
//! One message for a group, not one per command: the stream's servers replicate,
//! store and deliver each message once, whatever it carries, so a node that proposes
//! many commands at once costs them a fraction of what it did.
//!
//! Older versions are still read (`wire_legacy.rs`), so that a stream written before
//! keeps its meaning; they are no longer written.

use colony_kernel::{CommandBody, PrincipalId};
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash, GROUP_MAX};
use crate::verify::verify_all;
use crate::wire_legacy::{self, Legacy};

/// The encoding's version, the message's first byte.
const WIRE_VERSION: u8 = 4;
/// What a signature covers before the group's size and root.
const SIGNED_DOMAIN: &[u8] = b"colony-commands/v4\n";
const SIGNATURE_BYTES: usize = 64;
/// What a message adds to each envelope's bytes: its length.
pub(crate) const PER_ENVELOPE: usize = 4;
/// What a message adds to its envelopes' bytes besides their lengths.
pub(crate) const HEAD_BYTES: usize = 1 + SIGNATURE_BYTES + 1;

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
    /// The proposer's public key, which signed the message.
    pub(crate) key: [u8; 32],
    /// The proposer's own number for the command, never used twice.
    pub(crate) node_seq: u64,
}

impl Envelope {
    /// The envelope's bytes, as a signature covers them.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Encoding into memory fails only when serde does, which no kernel type does.
        postcard::to_allocvec(self).expect("a command encodes")
    }

    /// The message for this envelope alone, signed by `signer` (whose public key the
    /// envelope names).
    #[cfg(test)]
    pub(crate) fn encode(&self, signer: &SigningKey) -> Vec<u8> {
        sign_group(signer, &[self.to_bytes()])
    }

    /// A message's envelopes, and whether its signature verifies by the key they
    /// name; or why the message is not one (of another version, or not Colony's).
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Vec<Envelope>, Result<(), String>), String> {
        let unverified = Unverified::decode(bytes)?;
        let verified = verify_all(std::slice::from_ref(&unverified))
            .pop()
            .expect("one result for one message");
        Ok((unverified.envelopes, verified))
    }
}

/// The message for envelopes proposed together (one to [`GROUP_MAX`]), in their
/// order: one signature over the Merkle root of their bytes.
pub(crate) fn sign_group(signer: &SigningKey, envelopes: &[Vec<u8>]) -> Vec<u8> {
    assert!(
        (1..=GROUP_MAX).contains(&envelopes.len()),
        "a group of 1 to {GROUP_MAX} envelopes"
    );
    let leaves: Vec<Hash> = envelopes.iter().map(|bytes| merkle::leaf(bytes)).collect();
    let count = group_size(envelopes.len());
    let root = merkle::root(&leaves);
    let signature = signer.sign(&signed_root(SIGNED_DOMAIN, count, &root));
    let size: usize = envelopes.iter().map(|e| PER_ENVELOPE + e.len()).sum();
    let mut bytes = Vec::with_capacity(HEAD_BYTES + size);
    bytes.push(WIRE_VERSION);
    bytes.extend(signature.to_bytes());
    bytes.push(count);
    for envelope in envelopes {
        let len = u32::try_from(envelope.len()).expect("an envelope is under 4 GiB");
        bytes.extend(len.to_le_bytes());
        bytes.extend(envelope);
    }
    bytes
}

/// What a group's signature covers.
fn signed_root(domain: &[u8], count: u8, root: &Hash) -> Vec<u8> {
    let mut message = domain.to_vec();
    message.push(count);
    message.extend(root);
    message
}

/// A signed message read from the stream, its signature not checked yet.
pub(crate) struct Unverified {
    /// One at least; all name the same key.
    pub(crate) envelopes: Vec<Envelope>,
    /// What the signature covers: the group's root (or, in version 2, the envelope).
    pub(crate) signed: Vec<u8>,
    pub(crate) signature: Signature,
}

impl Unverified {
    /// The message's parts, or why it is not a signed message of commands.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Unverified, String> {
        let (version, rest) = bytes.split_first().ok_or("an empty message")?;
        let unverified = match *version {
            WIRE_VERSION => decode_v4(rest)?,
            wire_legacy::WIRE_V3 => legacy(wire_legacy::decode_v3(rest)?)?,
            wire_legacy::WIRE_V2 => legacy(wire_legacy::decode_v2(rest)?)?,
            version => {
                return Err(format!(
                    "encoding version {version}, not {WIRE_VERSION} (unsigned, or not Colony's)"
                ))
            }
        };
        let key = unverified.key();
        if unverified.envelopes.iter().any(|e| e.key != key) {
            return Err("commands naming different keys under one signature".into());
        }
        Ok(unverified)
    }

    /// The key the message's envelopes name.
    pub(crate) fn key(&self) -> [u8; 32] {
        self.envelopes[0].key
    }

    /// What identifies the signature check: the key, the signature and what it covers.
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        let mut fingerprint = self.key().to_vec();
        fingerprint.extend(self.signature.to_bytes());
        fingerprint.extend(&self.signed);
        fingerprint
    }
}

fn too_short() -> String {
    "a message too short to be signed".to_string()
}

/// A message of an older version as an [`Unverified`] of its one envelope.
fn legacy(parts: Legacy<'_>) -> Result<Unverified, String> {
    Ok(Unverified {
        envelopes: vec![decode_envelope(parts.envelope)?],
        signed: parts.signed,
        signature: signature_from(parts.signature),
    })
}

/// Version 4: the signature, the number of commands, each envelope after its length,
/// and nothing after the last.
fn decode_v4(rest: &[u8]) -> Result<Unverified, String> {
    if rest.len() < SIGNATURE_BYTES + 1 {
        return Err(too_short());
    }
    let (signature, rest) = rest.split_at(SIGNATURE_BYTES);
    let (count, mut rest) = (usize::from(rest[0]), &rest[1..]);
    if !(1..=GROUP_MAX).contains(&count) {
        return Err(format!(
            "a message of {count} commands (1 to {GROUP_MAX} are signed together)"
        ));
    }
    let mut envelopes = Vec::with_capacity(count);
    let mut leaves = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < PER_ENVELOPE {
            return Err(too_short());
        }
        let (len, tail) = rest.split_at(PER_ENVELOPE);
        let len = u32::from_le_bytes(len.try_into().expect("split at four bytes")) as usize;
        if tail.len() < len {
            return Err(format!(
                "a command of {len} bytes where {} remain",
                tail.len()
            ));
        }
        let (body, tail) = tail.split_at(len);
        envelopes.push(decode_envelope(body)?);
        leaves.push(merkle::leaf(body));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last command", rest.len()));
    }
    Ok(Unverified {
        envelopes,
        signed: signed_root(SIGNED_DOMAIN, group_size(count), &merkle::root(&leaves)),
        signature: signature_from(signature),
    })
}

/// A group's size as signed: held to at most [`GROUP_MAX`] before.
fn group_size(count: usize) -> u8 {
    u8::try_from(count).expect("a group's size fits a byte")
}

fn decode_envelope(body: &[u8]) -> Result<Envelope, String> {
    postcard::from_bytes(body).map_err(|error| format!("undecodable command: {error}"))
}

fn signature_from(bytes: &[u8]) -> Signature {
    Signature::from_bytes(bytes.try_into().expect("split at the signature's length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Verified;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn an_envelope_round_trips_signed_and_junk_is_named() {
        let envelope = Envelope {
            origin: "node-1".into(),
            incarnation: 7,
            request: 42,
            proposed_ms: 1_700_000_000_000,
            actor: PrincipalId(3),
            justification: "why".into(),
            body: CommandBody::Tick,
            key: key().verifying_key().to_bytes(),
            node_seq: 9,
        };
        let bytes = envelope.encode(&key());
        let (decoded, verified) = Envelope::decode(&bytes).unwrap();
        assert_eq!(decoded, std::slice::from_ref(&envelope));
        verified.unwrap();
        // Signed by another key than the one it names, or changed after signing.
        let forged = envelope.encode(&SigningKey::from_bytes(&[8; 32]));
        assert!(Envelope::decode(&forged).unwrap().1.is_err());
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(Envelope::decode(&changed).map_or(true, |(_, verified)| verified.is_err()));
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(b"\x01abc")
            .unwrap_err()
            .contains("version 1"));
        assert!(Envelope::decode(&[2; 10])
            .unwrap_err()
            .contains("too short"));
        // A group's framing: no command, more bytes than the message holds, bytes
        // after the last command.
        let count_at = 1 + SIGNATURE_BYTES;
        let mut none = bytes.clone();
        none[count_at] = 0;
        assert!(Envelope::decode(&none).unwrap_err().contains("0 commands"));
        let mut longer = bytes.clone();
        longer[count_at + 1] = 0xff;
        assert!(Envelope::decode(&longer).unwrap_err().contains("remain"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Envelope::decode(&trailing)
            .unwrap_err()
            .contains("1 bytes after the last command"));
        let mut more = bytes;
        more[count_at] = 2;
        assert!(Envelope::decode(&more).unwrap_err().contains("too short"));
    }

    fn envelope(n: u64) -> Envelope {
        Envelope {
            origin: "node-1".into(),
            incarnation: 1,
            request: n,
            proposed_ms: n,
            actor: PrincipalId(1),
            justification: format!("command {n}"),
            body: CommandBody::Tick,
            key: key().verifying_key().to_bytes(),
            node_seq: n,
        }
    }

    /// A message of `envelopes` under `signature` (the framing of version 4).
    fn framed(signature: &[u8], envelopes: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend(signature);
        bytes.push(envelopes.len() as u8);
        for envelope in envelopes {
            bytes.extend((envelope.len() as u32).to_le_bytes());
            bytes.extend(envelope);
        }
        bytes
    }

    #[test]
    fn commands_signed_together_come_back_in_their_order_and_only_so() {
        let envelopes: Vec<Vec<u8>> = (1..=5).map(|n| envelope(n).to_bytes()).collect();
        let message = sign_group(&key(), &envelopes);
        let (decoded, verified) = Envelope::decode(&message).unwrap();
        assert_eq!(decoded, (1..=5).map(envelope).collect::<Vec<_>>());
        verified.unwrap();
        let signature = &message[1..1 + SIGNATURE_BYTES];
        // The genuine signature over the commands reordered, one replaced, one left
        // out, or one added.
        let mut reordered = envelopes.clone();
        reordered.swap(1, 3);
        let mut replaced = envelopes.clone();
        replaced[2] = envelope(9).to_bytes();
        let mut added = envelopes.clone();
        added.push(envelope(6).to_bytes());
        for changed in [reordered, replaced, envelopes[..4].to_vec(), added] {
            let (_, verified) = Envelope::decode(&framed(signature, &changed)).unwrap();
            assert!(verified.is_err());
        }
        // Commands naming different keys under one signature.
        let mut other = envelope(7);
        other.key = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        let mixed = sign_group(&key(), &[envelopes[0].clone(), other.to_bytes()]);
        assert!(Envelope::decode(&mixed)
            .unwrap_err()
            .contains("different keys"));
        // The largest group, and no larger.
        let full: Vec<Vec<u8>> = (0..GROUP_MAX as u64)
            .map(|n| envelope(n).to_bytes())
            .collect();
        let (decoded, verified) = Envelope::decode(&sign_group(&key(), &full)).unwrap();
        assert_eq!(decoded.len(), GROUP_MAX);
        verified.unwrap();
        let mut too_many = framed(signature, &full);
        too_many[1 + SIGNATURE_BYTES] = GROUP_MAX as u8 + 1;
        assert!(Envelope::decode(&too_many)
            .unwrap_err()
            .contains("65 commands"));
    }

    #[test]
    fn a_signature_checked_once_is_not_checked_again() {
        let envelopes: Vec<Vec<u8>> = (1..=6).map(|n| envelope(n).to_bytes()).collect();
        let message = sign_group(&key(), &envelopes);
        // The same message twice (published again): one signature.
        let messages: Vec<Unverified> = (0..2)
            .map(|_| Unverified::decode(&message).unwrap())
            .collect();
        let refs: Vec<&Unverified> = messages.iter().collect();
        let mut verified = Verified::default();
        let (first, checked) = verified.check(&refs);
        assert!(first.iter().all(Result::is_ok));
        assert_eq!(checked, 1, "one message twice: one signature");
        let (again, checked) = verified.check(&refs[..1]);
        assert!(again[0].is_ok());
        assert_eq!(checked, 0, "the message's signature is known");
        // A forged message in a batch with a genuine one: told apart.
        let forged =
            Unverified::decode(&envelope(7).encode(&SigningKey::from_bytes(&[9; 32]))).unwrap();
        let (verdicts, checked) = verified.check(&[&forged, refs[0], &forged]);
        assert_eq!(checked, 1);
        assert!(verdicts[0].is_err() && verdicts[1].is_ok() && verdicts[2].is_err());
    }

    #[test]
    fn each_signature_is_told_apart() {
        let mut messages: Vec<Unverified> = (1..=5)
            .map(|n| Unverified::decode(&envelope(n).encode(&key())).unwrap())
            .collect();
        assert!(verify_all(&messages).iter().all(Result::is_ok));
        messages.push(
            Unverified::decode(&envelope(6).encode(&SigningKey::from_bytes(&[9; 32]))).unwrap(),
        );
        let verdicts = verify_all(&messages);
        assert!(verdicts[..5].iter().all(Result::is_ok));
        assert!(verdicts[5].is_err());
        assert!(verify_all(&[]).is_empty());
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
            key: key().verifying_key().to_bytes(),
            node_seq: 1,
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
        assert_eq!(
            Envelope::decode(&envelope.encode(&key())).unwrap().0,
            [envelope]
        );
    }

    #[test]
    fn a_message_of_version_3_is_still_read() {
        let envelopes: Vec<Vec<u8>> = (1..=3).map(|n| envelope(n).to_bytes()).collect();
        let leaves: Vec<Hash> = envelopes.iter().map(|bytes| merkle::leaf(bytes)).collect();
        let (root, proofs) = merkle::tree(&leaves);
        let signature = key().sign(&signed_root(wire_legacy::SIGNED_DOMAIN_V3, 3, &root));
        let mut message = vec![wire_legacy::WIRE_V3];
        message.extend(signature.to_bytes());
        message.extend([1, 3]);
        for hash in &proofs[1] {
            message.extend(hash);
        }
        message.extend(&envelopes[1]);
        let (decoded, verified) = Envelope::decode(&message).unwrap();
        assert_eq!(decoded, [envelope(2)]);
        verified.unwrap();
        // Moved to another place of its group, or past its end.
        let mut moved = message.clone();
        moved[1 + SIGNATURE_BYTES] = 2;
        assert!(Envelope::decode(&moved).map_or(true, |(_, verified)| verified.is_err()));
        moved[1 + SIGNATURE_BYTES] = 5;
        assert!(Envelope::decode(&moved).unwrap_err().contains("no place 5"));
    }

    #[test]
    fn a_message_of_version_2_is_still_read() {
        let body = envelope(3).to_bytes();
        let mut signed = wire_legacy::SIGNED_DOMAIN_V2.to_vec();
        signed.extend(&body);
        let mut message = vec![wire_legacy::WIRE_V2];
        message.extend(&body);
        message.extend(key().sign(&signed).to_bytes());
        let (decoded, verified) = Envelope::decode(&message).unwrap();
        assert_eq!(decoded, [envelope(3)]);
        verified.unwrap();
        let last = message.len() - 1;
        message[last] ^= 1;
        assert!(Envelope::decode(&message).unwrap().1.is_err());
    }

    #[test]
    fn a_short_message_of_an_older_version_is_named() {
        assert!(Envelope::decode(&[wire_legacy::WIRE_V2; 10])
            .unwrap_err()
            .contains("too short"));
        assert!(Envelope::decode(&[wire_legacy::WIRE_V3; 40])
            .unwrap_err()
            .contains("too short"));
    }
}
