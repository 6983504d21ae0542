//! The older versions of the command stream's wire, still read so that a stream
//! written before keeps its meaning (`wire.rs` writes version 4 only, and makes
//! these parts into its `Unverified`):
//!
//! - version 3: one command per message; the signature covers
//!   `colony-commands/v3\n`, the size of the group the node signed together and the
//!   root of their Merkle tree, and the message carries its place in the group and
//!   the hashes that lead from its envelope to that root;
//! - version 2: one signature per command, over `colony-command/v2\n` and the
//!   envelope's bytes (the signature last).

use crate::merkle::{self, Hash};

pub(crate) const WIRE_V3: u8 = 3;
pub(crate) const SIGNED_DOMAIN_V3: &[u8] = b"colony-commands/v3\n";
pub(crate) const WIRE_V2: u8 = 2;
pub(crate) const SIGNED_DOMAIN_V2: &[u8] = b"colony-command/v2\n";
/// An Ed25519 signature's length, in every version.
const SIGNATURE_BYTES: usize = 64;

/// A message of an older version, taken apart: its one envelope's bytes, what its
/// signature covers, and the signature.
pub(crate) struct Legacy<'a> {
    pub(crate) envelope: &'a [u8],
    pub(crate) signed: Vec<u8>,
    pub(crate) signature: &'a [u8],
}

fn too_short() -> String {
    "a message too short to be signed".to_string()
}

/// Version 3, after its version byte: the signature, the command's place in its
/// group and the group's size, the hashes leading to the group's root, then the
/// envelope.
pub(crate) fn decode_v3(rest: &[u8]) -> Result<Legacy<'_>, String> {
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
    let (proof, envelope) = rest.split_at(32 * proof_len);
    let proof: Vec<Hash> = proof
        .chunks_exact(32)
        .map(|hash| hash.try_into().expect("chunks of 32"))
        .collect();
    let root = merkle::root_from(merkle::leaf(envelope), index, count, &proof)
        .expect("the proof's length was checked");
    // `proof_len` held the group to at most 64.
    let mut signed = SIGNED_DOMAIN_V3.to_vec();
    signed.push(count as u8);
    signed.extend(root);
    Ok(Legacy {
        envelope,
        signed,
        signature,
    })
}

/// Version 2, after its version byte: the envelope, then its signature.
pub(crate) fn decode_v2(rest: &[u8]) -> Result<Legacy<'_>, String> {
    if rest.len() < SIGNATURE_BYTES {
        return Err(too_short());
    }
    let (envelope, signature) = rest.split_at(rest.len() - SIGNATURE_BYTES);
    let mut signed = SIGNED_DOMAIN_V2.to_vec();
    signed.extend_from_slice(envelope);
    Ok(Legacy {
        envelope,
        signed,
        signature,
    })
}
