//! What a command looks like in the stream: a version byte, then the proposing
//! node's Ed25519 signature, then the command's place among the commands the node
//! signed together and the hashes that lead from it to their Merkle root
//! (`merkle.rs`), then the [`Envelope`], postcard-encoded. The signature covers
//! `colony-commands/v3\n`, the group's size (one byte) and the root: one signature
//! for up to 64 commands proposed at once, and each message still checkable alone.
//! The envelope names the key and the node's own sequence number, so that the kernel
//! can refuse a key the cluster did not admit and a command published again
//! (`colony_kernel::cluster`).
//!
//! Messages of version 2 (one signature per command, over `colony-command/v2\n`
//! and the envelope's bytes) are still read, so that a stream written before keeps
//! its meaning; they are no longer written.

use std::collections::{HashMap, HashSet, VecDeque};

use colony_kernel::{CommandBody, PrincipalId};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash, GROUP_MAX, PROOF_MAX};

/// The encoding's version, the message's first byte.
const WIRE_VERSION: u8 = 3;
/// What a signature covers before the group's size and root.
const SIGNED_DOMAIN: &[u8] = b"colony-commands/v3\n";
/// The earlier version: one signature per command.
const WIRE_V2: u8 = 2;
const SIGNED_DOMAIN_V2: &[u8] = b"colony-command/v2\n";
const SIGNATURE_BYTES: usize = 64;
/// What a message adds to its envelope's bytes, at most.
pub(crate) const OVERHEAD_MAX: usize = 1 + SIGNATURE_BYTES + 2 + 32 * PROOF_MAX;

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
            .pop()
            .expect("one message for one envelope")
    }

    /// The envelope, and whether its signature verifies by the key it names; or why
    /// the message is not one (a message of another version, or not Colony's).
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Envelope, Result<(), String>), String> {
        let unverified = Unverified::decode(bytes)?;
        let verified = verify_all(std::slice::from_ref(&unverified))
            .pop()
            .expect("one result for one message");
        Ok((unverified.envelope, verified))
    }
}

/// The messages for envelopes proposed together (one to [`GROUP_MAX`]), in their
/// order: one signature over the Merkle root of their bytes.
pub(crate) fn sign_group(signer: &SigningKey, envelopes: &[Vec<u8>]) -> Vec<Vec<u8>> {
    assert!(
        (1..=GROUP_MAX).contains(&envelopes.len()),
        "a group of 1 to {GROUP_MAX} envelopes"
    );
    let leaves: Vec<Hash> = envelopes.iter().map(|bytes| merkle::leaf(bytes)).collect();
    let (root, proofs) = merkle::tree(&leaves);
    let count = envelopes.len() as u8;
    let signature = signer.sign(&signed_root(count, &root)).to_bytes();
    envelopes
        .iter()
        .zip(proofs)
        .enumerate()
        .map(|(index, (envelope, proof))| {
            let mut bytes = Vec::with_capacity(OVERHEAD_MAX + envelope.len());
            bytes.push(WIRE_VERSION);
            bytes.extend(signature);
            bytes.extend([index as u8, count]);
            for hash in proof {
                bytes.extend(hash);
            }
            bytes.extend(envelope);
            bytes
        })
        .collect()
}

/// What a group's signature covers.
fn signed_root(count: u8, root: &Hash) -> Vec<u8> {
    let mut message = SIGNED_DOMAIN.to_vec();
    message.push(count);
    message.extend(root);
    message
}

/// A signed command read from the stream, its signature not checked yet.
pub(crate) struct Unverified {
    pub(crate) envelope: Envelope,
    /// What the signature covers: the group's root (or, in version 2, the envelope).
    signed: Vec<u8>,
    signature: Signature,
}

impl Unverified {
    /// The message's parts, or why it is not a signed command.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Unverified, String> {
        let too_short = || "a message too short to be signed".to_string();
        let (version, rest) = bytes.split_first().ok_or("an empty message")?;
        match *version {
            WIRE_VERSION => {
                if rest.len() < SIGNATURE_BYTES + 2 {
                    return Err(too_short());
                }
                let (signature, rest) = rest.split_at(SIGNATURE_BYTES);
                let (index, count) = (usize::from(rest[0]), usize::from(rest[1]));
                let proof_len = merkle::proof_len(index, count).ok_or_else(|| {
                    format!("no place {index} among {count} commands signed together")
                })?;
                let rest = &rest[2..];
                if rest.len() < 32 * proof_len {
                    return Err(too_short());
                }
                let (proof, body) = rest.split_at(32 * proof_len);
                let proof: Vec<Hash> = proof
                    .chunks_exact(32)
                    .map(|hash| hash.try_into().expect("chunks of 32"))
                    .collect();
                let envelope = decode_envelope(body)?;
                let root = merkle::root_from(merkle::leaf(body), index, count, &proof)
                    .expect("the proof's length was checked");
                Ok(Unverified {
                    envelope,
                    signed: signed_root(group_size(count), &root),
                    signature: signature_from(signature),
                })
            }
            WIRE_V2 => {
                if rest.len() < SIGNATURE_BYTES {
                    return Err(too_short());
                }
                let (body, signature) = rest.split_at(rest.len() - SIGNATURE_BYTES);
                let mut signed = SIGNED_DOMAIN_V2.to_vec();
                signed.extend_from_slice(body);
                Ok(Unverified {
                    envelope: decode_envelope(body)?,
                    signed,
                    signature: signature_from(signature),
                })
            }
            version => Err(format!(
                "encoding version {version}, not {WIRE_VERSION} (unsigned, or not Colony's)"
            )),
        }
    }

    /// What identifies the signature check: the key, the signature and what it covers.
    fn fingerprint(&self) -> Vec<u8> {
        let mut fingerprint = self.envelope.key.to_vec();
        fingerprint.extend(self.signature.to_bytes());
        fingerprint.extend(&self.signed);
        fingerprint
    }
}

/// A group's size as signed: `proof_len` has held it to at most [`GROUP_MAX`].
fn group_size(count: usize) -> u8 {
    u8::try_from(count).expect("a group's size fits a byte")
}

fn decode_envelope(body: &[u8]) -> Result<Envelope, String> {
    postcard::from_bytes(body).map_err(|error| format!("undecodable command: {error}"))
}

fn signature_from(bytes: &[u8]) -> Signature {
    Signature::from_bytes(bytes.try_into().expect("split at the signature's length"))
}

/// Whether each message's signature verifies by the key it names. Messages signed
/// together share one signature, checked once; distinct signatures are checked as
/// one batch (about twice as fast per signature), one by one only when the batch
/// fails, to tell which.
pub(crate) fn verify_all(messages: &[Unverified]) -> Vec<Result<(), String>> {
    verify_refs(&messages.iter().collect::<Vec<_>>())
}

/// [`verify_all`] over references.
pub(crate) fn verify_refs(messages: &[&Unverified]) -> Vec<Result<(), String>> {
    let fingerprints = messages.iter().map(|m| m.fingerprint()).collect();
    verify_fingerprinted(messages, fingerprints).0
}

/// [`verify_refs`] with each message's [`Unverified::fingerprint`] made already;
/// also answers how many distinct signatures were checked.
fn verify_fingerprinted(
    messages: &[&Unverified],
    fingerprints: Vec<Vec<u8>>,
) -> (Vec<Result<(), String>>, usize) {
    let mut distinct: Vec<&Unverified> = Vec::new();
    let mut places: HashMap<Vec<u8>, usize> = HashMap::new();
    let place_of: Vec<usize> = messages
        .iter()
        .zip(fingerprints)
        .map(|(message, fingerprint)| {
            *places.entry(fingerprint).or_insert_with(|| {
                distinct.push(message);
                distinct.len() - 1
            })
        })
        .collect();
    let verdicts = verify_distinct(&distinct);
    let verdicts = place_of
        .into_iter()
        .map(|place| verdicts[place].clone())
        .collect();
    (verdicts, distinct.len())
}

fn verify_distinct(messages: &[&Unverified]) -> Vec<Result<(), String>> {
    let keys: Vec<Result<VerifyingKey, String>> = messages
        .iter()
        .map(|message| {
            VerifyingKey::from_bytes(&message.envelope.key)
                .map_err(|_| "the key it names is not an Ed25519 key".to_string())
        })
        .collect();
    if keys.iter().all(Result::is_ok) && !messages.is_empty() {
        let keys: Vec<VerifyingKey> = keys.iter().flatten().copied().collect();
        let texts: Vec<&[u8]> = messages.iter().map(|m| m.signed.as_slice()).collect();
        let signatures: Vec<Signature> = messages.iter().map(|m| m.signature).collect();
        if ed25519_dalek::verify_batch(&texts, &signatures, &keys).is_ok() {
            return vec![Ok(()); messages.len()];
        }
    }
    messages
        .iter()
        .zip(keys)
        .map(|(message, key)| {
            key.and_then(|key| {
                key.verify(&message.signed, &message.signature)
                    .map_err(|_| "its signature does not verify by the key it names".to_string())
            })
        })
        .collect()
}

/// Signatures this node checked lately: the rest of a group that arrives in a later
/// batch is not checked again.
#[derive(Default)]
pub(crate) struct Verified {
    order: VecDeque<Vec<u8>>,
    known: HashSet<Vec<u8>>,
}

/// Signatures remembered.
const VERIFIED_KEPT: usize = 256;

impl Verified {
    /// Like [`verify_refs`], remembering the signatures that verify. Also answers
    /// how many distinct signatures were checked.
    pub(crate) fn check(&mut self, messages: &[&Unverified]) -> (Vec<Result<(), String>>, usize) {
        let fingerprints: Vec<Vec<u8>> = messages.iter().map(|m| m.fingerprint()).collect();
        let known: Vec<bool> = fingerprints
            .iter()
            .map(|fingerprint| self.known.contains(fingerprint))
            .collect();
        let (unknown, unknown_fingerprints): (Vec<&Unverified>, Vec<Vec<u8>>) = messages
            .iter()
            .zip(&fingerprints)
            .zip(&known)
            .filter(|(_, known)| !**known)
            .map(|((message, fingerprint), _)| (*message, fingerprint.clone()))
            .unzip();
        let (verdicts, checked) = verify_fingerprinted(&unknown, unknown_fingerprints);
        let mut verdicts = verdicts.into_iter();
        let results = fingerprints
            .into_iter()
            .zip(known)
            .map(|(fingerprint, known)| {
                if known {
                    return Ok(());
                }
                let verdict = verdicts.next().expect("one verdict per message checked");
                if verdict.is_ok() {
                    self.remember(fingerprint);
                }
                verdict
            })
            .collect();
        (results, checked)
    }

    fn remember(&mut self, fingerprint: Vec<u8>) {
        if self.known.insert(fingerprint.clone()) {
            self.order.push_back(fingerprint);
            if self.order.len() > VERIFIED_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.known.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(decoded, envelope);
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

    #[test]
    fn commands_signed_together_each_verify_alone_and_keep_their_place() {
        let envelopes: Vec<Vec<u8>> = (1..=5).map(|n| envelope(n).to_bytes()).collect();
        let messages = sign_group(&key(), &envelopes);
        assert_eq!(messages.len(), 5);
        for (n, message) in (1..=5).zip(&messages) {
            let (decoded, verified) = Envelope::decode(message).unwrap();
            assert_eq!(decoded, envelope(n));
            verified.unwrap();
        }
        // Another envelope under a genuine signature and proof.
        let mut swapped = messages[1].clone();
        let tail = swapped.len() - envelopes[1].len();
        swapped.truncate(tail);
        swapped.extend(envelope(9).to_bytes());
        assert!(Envelope::decode(&swapped).unwrap().1.is_err());
        // A message moved to another place of its group.
        let mut moved = messages[1].clone();
        moved[1 + SIGNATURE_BYTES] = 2;
        assert!(Envelope::decode(&moved).map_or(true, |(_, verified)| verified.is_err()));
        // A place past the group's end, or a group larger than any signed.
        let mut outside = messages[1].clone();
        outside[1 + SIGNATURE_BYTES] = 5;
        assert!(Envelope::decode(&outside)
            .unwrap_err()
            .contains("no place 5"));
        outside[1 + SIGNATURE_BYTES + 1] = 200;
        assert!(Envelope::decode(&outside)
            .unwrap_err()
            .contains("among 200"));
    }

    #[test]
    fn a_message_of_version_2_is_still_read() {
        let body = envelope(3).to_bytes();
        let mut signed = SIGNED_DOMAIN_V2.to_vec();
        signed.extend(&body);
        let mut message = vec![WIRE_V2];
        message.extend(&body);
        message.extend(key().sign(&signed).to_bytes());
        let (decoded, verified) = Envelope::decode(&message).unwrap();
        assert_eq!(decoded, envelope(3));
        verified.unwrap();
        let last = message.len() - 1;
        message[last] ^= 1;
        assert!(Envelope::decode(&message).unwrap().1.is_err());
    }

    #[test]
    fn a_signature_checked_once_is_not_checked_again_for_its_group() {
        let envelopes: Vec<Vec<u8>> = (1..=6).map(|n| envelope(n).to_bytes()).collect();
        let messages: Vec<Unverified> = sign_group(&key(), &envelopes)
            .iter()
            .map(|bytes| Unverified::decode(bytes).unwrap())
            .collect();
        let refs: Vec<&Unverified> = messages.iter().collect();
        let mut verified = Verified::default();
        let (first, checked) = verified.check(&refs[..2]);
        assert!(first.iter().all(Result::is_ok));
        assert_eq!(checked, 1, "two messages of one group: one signature");
        let (rest, checked) = verified.check(&refs[2..]);
        assert!(rest.iter().all(Result::is_ok));
        assert_eq!(checked, 0, "the group's signature is known");
        // A forged message in a batch with its genuine group: told apart.
        let forged =
            Unverified::decode(&envelope(7).encode(&SigningKey::from_bytes(&[9; 32]))).unwrap();
        let (verdicts, checked) = verified.check(&[&forged, refs[0], &forged]);
        assert_eq!(checked, 1);
        assert!(verdicts[0].is_err() && verdicts[1].is_ok() && verdicts[2].is_err());
    }

    #[test]
    fn a_batch_tells_which_signature_fails() {
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
            envelope
        );
    }
}
