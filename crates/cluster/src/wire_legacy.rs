//! The older versions of the command stream's wire, still read so that a stream
//! written before keeps its meaning (`wire.rs` writes version 4 only):
//!
//! - version 3: one command per message; the signature covers
//!   `colony-commands/v3\n`, the size of the group the node signed together and the
//!   root of their Merkle tree, and the message carries its place in the group and
//!   the hashes that lead from its envelope to that root;
//! - version 2: one signature per command, over `colony-command/v2\n` and the
//!   envelope's bytes (the signature last).

use crate::merkle::{self, Hash};
use crate::wire::{
    decode_envelope, group_size, signature_from, signed_root, too_short, Unverified,
    SIGNATURE_BYTES,
};

pub(crate) const WIRE_V3: u8 = 3;
const SIGNED_DOMAIN_V3: &[u8] = b"colony-commands/v3\n";
pub(crate) const WIRE_V2: u8 = 2;
const SIGNED_DOMAIN_V2: &[u8] = b"colony-command/v2\n";

/// Version 3, after its version byte: the signature, the command's place in its
/// group and the group's size, the hashes leading to the group's root, then the
/// envelope.
pub(crate) fn decode_v3(rest: &[u8]) -> Result<Unverified, String> {
    if rest.len() < SIGNATURE_BYTES + 2 {
        return Err(too_short());
    }
    let (signature, rest) = rest.split_at(SIGNATURE_BYTES);
    let (index, count) = (usize::from(rest[0]), usize::from(rest[1]));
    let proof_len = merkle::proof_len(index, count)
        .ok_or_else(|| format!("no place {index} among {count} commands signed together"))?;
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
        envelopes: vec![envelope],
        signed: signed_root(SIGNED_DOMAIN_V3, group_size(count), &root),
        signature: signature_from(signature),
    })
}

/// Version 2, after its version byte: the envelope, then its signature.
pub(crate) fn decode_v2(rest: &[u8]) -> Result<Unverified, String> {
    if rest.len() < SIGNATURE_BYTES {
        return Err(too_short());
    }
    let (body, signature) = rest.split_at(rest.len() - SIGNATURE_BYTES);
    let mut signed = SIGNED_DOMAIN_V2.to_vec();
    signed.extend_from_slice(body);
    Ok(Unverified {
        envelopes: vec![decode_envelope(body)?],
        signed,
        signature: signature_from(signature),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Envelope;
    use colony_kernel::{CommandBody, PrincipalId};
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
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
    fn a_message_of_version_3_is_still_read() {
        let envelopes: Vec<Vec<u8>> = (1..=3).map(|n| envelope(n).to_bytes()).collect();
        let leaves: Vec<Hash> = envelopes.iter().map(|bytes| merkle::leaf(bytes)).collect();
        let (root, proofs) = merkle::tree(&leaves);
        let signature = key().sign(&signed_root(SIGNED_DOMAIN_V3, 3, &root));
        let mut message = vec![WIRE_V3];
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
        let mut signed = SIGNED_DOMAIN_V2.to_vec();
        signed.extend(&body);
        let mut message = vec![WIRE_V2];
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
        assert!(Envelope::decode(&[WIRE_V2; 10])
            .unwrap_err()
            .contains("too short"));
        assert!(Envelope::decode(&[WIRE_V3; 40])
            .unwrap_err()
            .contains("too short"));
    }
}
