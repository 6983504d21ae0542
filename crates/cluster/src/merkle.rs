//! Several commands under one signature: a node signs the root of a small Merkle
//! tree (SHA-256) over the envelopes it proposes together. A message of version 4
//! carries them all, and its reader hashes them up to the root. A message of version
//! 3 carried one envelope, its place among the group and the sibling hashes that
//! lead from it to the root, so that each could be checked alone; such messages are
//! still read (`proof_len`, `root_from`).
//!
//! Leaves and inner nodes hash under different prefixes (`0x00`, `0x01`), so that an
//! inner node can never pass for an envelope. A level with an odd number of hashes
//! passes its last one up unchanged (nothing is duplicated).

use sha2::{Digest, Sha256};

/// Most commands signed together: a proof then holds at most six hashes.
pub(crate) const GROUP_MAX: usize = 64;
/// The longest proof a group of `GROUP_MAX` needs.
#[cfg(test)]
pub(crate) const PROOF_MAX: usize = 6;

pub(crate) type Hash = [u8; 32];

/// The hash of one envelope's bytes.
pub(crate) fn leaf(envelope: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(envelope);
    hasher.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root over `leaves` (one at least) and each leaf's proof: its siblings from
/// the bottom level up (version 3 of the wire carried them; tests make such
/// messages).
#[cfg(test)]
pub(crate) fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    assert!(!leaves.is_empty(), "a tree of no envelope");
    let mut proofs = vec![Vec::new(); leaves.len()];
    let mut places: Vec<usize> = (0..leaves.len()).collect();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        for (proof, place) in proofs.iter_mut().zip(places.iter_mut()) {
            if let Some(sibling) = level.get(*place ^ 1) {
                proof.push(*sibling);
            }
            *place /= 2;
        }
        level = up(&level);
    }
    (level[0], proofs)
}

/// The level above `level`: each pair hashed into one, an odd last hash passed up
/// unchanged.
fn up(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node(left, right),
            [last] => *last,
            _ => unreachable!("chunks of two"),
        })
        .collect()
}

/// The root over `leaves` (one at least).
pub(crate) fn root(leaves: &[Hash]) -> Hash {
    assert!(!leaves.is_empty(), "a tree of no envelope");
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = up(&level);
    }
    level[0]
}

/// How many sibling hashes the proof of leaf `index` of `count` holds; `None` when
/// there is no such leaf or the group is larger than [`GROUP_MAX`].
pub(crate) fn proof_len(index: usize, count: usize) -> Option<usize> {
    if index >= count || count > GROUP_MAX {
        return None;
    }
    let (mut place, mut width, mut len) = (index, count, 0);
    while width > 1 {
        if place ^ 1 < width {
            len += 1;
        }
        place /= 2;
        width = width.div_ceil(2);
    }
    Some(len)
}

/// The root that `leaf`, as leaf `index` of `count`, leads to through `proof`; `None`
/// when the proof does not have the tree's shape.
pub(crate) fn root_from(leaf: Hash, index: usize, count: usize, proof: &[Hash]) -> Option<Hash> {
    if proof_len(index, count)? != proof.len() {
        return None;
    }
    let (mut hash, mut place, mut width) = (leaf, index, count);
    let mut siblings = proof.iter();
    while width > 1 {
        if place ^ 1 < width {
            let sibling = siblings.next()?;
            hash = if place % 2 == 0 {
                node(&hash, sibling)
            } else {
                node(sibling, &hash)
            };
        }
        place /= 2;
        width = width.div_ceil(2);
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_size_leads_to_the_root_and_nothing_else_does() {
        for count in 1..=GROUP_MAX {
            let leaves: Vec<Hash> = (0..count).map(|n| leaf(&n.to_le_bytes())).collect();
            let (root, proofs) = tree(&leaves);
            assert_eq!(self::root(&leaves), root);
            for (index, proof) in proofs.iter().enumerate() {
                assert!(proof.len() <= PROOF_MAX);
                assert_eq!(proof_len(index, count), Some(proof.len()));
                assert_eq!(root_from(leaves[index], index, count, proof), Some(root));
                // Another place, another envelope, a proof cut short or made longer.
                if count > 1 {
                    let other = (index + 1) % count;
                    assert_ne!(root_from(leaves[index], other, count, proof), Some(root));
                    assert_ne!(root_from(leaves[other], index, count, proof), Some(root));
                    assert_eq!(root_from(leaves[index], index, count, &proof[1..]), None);
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert_eq!(root_from(leaves[index], index, count, &longer), None);
            }
        }
        assert_eq!(proof_len(3, 3), None);
        assert_eq!(proof_len(0, GROUP_MAX + 1), None);
    }

    #[test]
    fn an_inner_node_is_not_an_envelope() {
        let leaves: Vec<Hash> = (0..2u8).map(|n| leaf(&[n])).collect();
        // The bytes an inner node hashes, offered as an envelope, hash otherwise.
        assert_ne!(leaf(&leaves.concat()), node(&leaves[0], &leaves[1]));
        assert_eq!(tree(&leaves[..1]).0, leaves[0]);
    }
}
