//! What a command looks like in the stream: an [`Envelope`], postcard-encoded after
//! a version byte, followed by the proposing node's Ed25519 signature over
//! `colony-command/v2\n` and the envelope's bytes. The envelope names the key and
//! the node's own sequence number, so that the kernel can refuse a key the cluster
//! did not admit and a command published again (`colony_kernel::cluster`).

use colony_kernel::{CommandBody, PrincipalId};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The encoding's version, the message's first byte.
const WIRE_VERSION: u8 = 2;
/// What a signature covers before the envelope's bytes.
const SIGNED_DOMAIN: &[u8] = b"colony-command/v2\n";
const SIGNATURE_BYTES: usize = 64;

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
    /// The message: version, envelope, signature by `signer` (whose public key the
    /// envelope names).
    pub(crate) fn encode(&self, signer: &SigningKey) -> Vec<u8> {
        let mut bytes = vec![WIRE_VERSION];
        // Encoding into memory fails only when serde does, which no kernel type does.
        bytes.extend(postcard::to_allocvec(self).expect("a command encodes"));
        let signature = signer.sign(&signed(&bytes[1..]));
        bytes.extend(signature.to_bytes());
        bytes
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

/// A signed command read from the stream, its signature not checked yet.
pub(crate) struct Unverified {
    pub(crate) envelope: Envelope,
    /// The envelope's bytes (what the signature covers after the domain).
    body: Vec<u8>,
    signature: Signature,
}

impl Unverified {
    /// The message's parts, or why it is not a signed command.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Unverified, String> {
        match bytes.split_first() {
            Some((&WIRE_VERSION, rest)) => {
                if rest.len() < SIGNATURE_BYTES {
                    return Err("a message too short to be signed".into());
                }
                let (body, signature) = rest.split_at(rest.len() - SIGNATURE_BYTES);
                let envelope: Envelope = postcard::from_bytes(body)
                    .map_err(|error| format!("undecodable command: {error}"))?;
                let signature = Signature::from_bytes(
                    signature
                        .try_into()
                        .expect("split at the signature's length"),
                );
                Ok(Unverified {
                    envelope,
                    body: body.to_vec(),
                    signature,
                })
            }
            Some((version, _)) => Err(format!(
                "encoding version {version}, not {WIRE_VERSION} (unsigned, or not Colony's)"
            )),
            None => Err("an empty message".into()),
        }
    }
}

/// Whether each message's signature verifies by the key it names: checked as one
/// batch (about twice as fast per signature), one by one only when the batch fails,
/// to tell which.
pub(crate) fn verify_all(messages: &[Unverified]) -> Vec<Result<(), String>> {
    verify_refs(&messages.iter().collect::<Vec<_>>())
}

/// [`verify_all`] over references.
pub(crate) fn verify_refs(messages: &[&Unverified]) -> Vec<Result<(), String>> {
    let keys: Vec<Result<VerifyingKey, String>> = messages
        .iter()
        .map(|message| {
            VerifyingKey::from_bytes(&message.envelope.key)
                .map_err(|_| "the key it names is not an Ed25519 key".to_string())
        })
        .collect();
    let signed: Vec<Vec<u8>> = messages.iter().map(|m| signed(&m.body)).collect();
    if keys.iter().all(Result::is_ok) && !messages.is_empty() {
        let keys: Vec<VerifyingKey> = keys.iter().flatten().copied().collect();
        let texts: Vec<&[u8]> = signed.iter().map(Vec::as_slice).collect();
        let signatures: Vec<Signature> = messages.iter().map(|m| m.signature).collect();
        if ed25519_dalek::verify_batch(&texts, &signatures, &keys).is_ok() {
            return vec![Ok(()); messages.len()];
        }
    }
    messages
        .iter()
        .zip(keys)
        .zip(&signed)
        .map(|((message, key), signed)| {
            key.and_then(|key| {
                key.verify(signed, &message.signature)
                    .map_err(|_| "its signature does not verify by the key it names".to_string())
            })
        })
        .collect()
}

fn signed(envelope: &[u8]) -> Vec<u8> {
    let mut message = SIGNED_DOMAIN.to_vec();
    message.extend_from_slice(envelope);
    message
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
        let at = changed.len() - 70;
        changed[at] ^= 1;
        assert!(Envelope::decode(&changed).map_or(true, |(_, verified)| verified.is_err()));
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(b"\x01abc")
            .unwrap_err()
            .contains("version 1"));
        assert!(Envelope::decode(&[2; 10])
            .unwrap_err()
            .contains("too short"));
    }

    #[test]
    fn a_batch_tells_which_signature_fails() {
        let envelope = |n: u64| Envelope {
            origin: "node-1".into(),
            incarnation: 1,
            request: n,
            proposed_ms: n,
            actor: PrincipalId(1),
            justification: format!("command {n}"),
            body: CommandBody::Tick,
            key: key().verifying_key().to_bytes(),
            node_seq: n,
        };
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
