//! Checking the signatures of the stream's messages: each distinct signature once,
//! alone, by the strict rule, the keys decompressed once; and the signatures checked
//! lately remembered, so that a message delivered again is not checked again.

use std::collections::{HashMap, HashSet, VecDeque};

use ed25519_dalek::VerifyingKey;

use crate::wire::Unverified;

/// Whether each message's signature verifies by the key it names. Messages signed
/// together share one signature, checked once.
///
/// Each signature is checked on its own, by the strict rule
/// (`VerifyingKey::verify_strict`: no key or `R` of small order), never in a batch:
/// Ed25519's batch equation may accept a signature that the single one refuses, and
/// which other signatures share a node's batch differs from node to node, so a
/// crafted signature could be applied by one node and decided as a tick by another.
/// Every node must reach the same verdict on the same message.
pub(crate) fn verify_all(messages: &[Unverified]) -> Vec<Result<(), String>> {
    let refs: Vec<&Unverified> = messages.iter().collect();
    let fingerprints = messages.iter().map(Unverified::fingerprint).collect();
    verify_fingerprinted(&refs, fingerprints, &mut Keys::default()).0
}

/// [`verify_all`] with each message's [`Unverified::fingerprint`] made already;
/// also answers how many distinct signatures were checked.
fn verify_fingerprinted(
    messages: &[&Unverified],
    fingerprints: Vec<Vec<u8>>,
    keys: &mut Keys,
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
    let verdicts: Vec<Result<(), String>> = distinct
        .iter()
        .map(|message| {
            keys.get(&message.key())?
                .verify_strict(&message.signed, &message.signature)
                .map_err(|_| "its signature does not verify by the key it names".to_string())
        })
        .collect();
    let verdicts = place_of
        .into_iter()
        .map(|place| verdicts[place].clone())
        .collect();
    (verdicts, distinct.len())
}

/// Keys named by messages, decompressed once (a point's decompression costs about
/// a tenth of a check): a cluster has a handful of nodes.
#[derive(Default)]
struct Keys {
    known: HashMap<[u8; 32], VerifyingKey>,
}

/// Keys kept decompressed, at most; past it the set starts again.
const KEYS_KEPT: usize = 64;

impl Keys {
    fn get(&mut self, bytes: &[u8; 32]) -> Result<VerifyingKey, String> {
        if let Some(key) = self.known.get(bytes) {
            return Ok(*key);
        }
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| "the key it names is not an Ed25519 key".to_string())?;
        if self.known.len() >= KEYS_KEPT {
            self.known.clear();
        }
        self.known.insert(*bytes, key);
        Ok(key)
    }
}

/// Signatures this node checked lately: the rest of a group that arrives in a later
/// batch is not checked again.
#[derive(Default)]
pub(crate) struct Verified {
    order: VecDeque<Vec<u8>>,
    known: HashSet<Vec<u8>>,
    keys: Keys,
}

/// Signatures remembered.
const VERIFIED_KEPT: usize = 256;

impl Verified {
    /// Like [`verify_all`], remembering the signatures that verify. Also answers
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
        let (verdicts, checked) =
            verify_fingerprinted(&unknown, unknown_fingerprints, &mut self.keys);
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
