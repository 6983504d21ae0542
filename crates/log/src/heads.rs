//! Signed chain heads: a node's Ed25519 signature over the decision log's head at
//! a sequence number, so that a copy kept anywhere outside the data directory can
//! later prove what the history was. Whoever rewrites a record and recomputes every
//! hash after it cannot make the chain hash to a signed head again.
//!
//! The signed message is exactly the UTF-8 bytes
//! `colony-audit-head/v1\n{seq}\n{head}\n{at_ms}` (`head` the chain hash of record
//! `seq` in lowercase hex, `at_ms` Unix milliseconds), checkable with any Ed25519
//! library; keys and signatures travel as standard base64 of their raw bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The first line of every signed message.
pub const HEAD_DOMAIN: &str = "colony-audit-head/v1";

/// One signed head, as `GET /v1/audit/head` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub seq: u64,
    /// The chain hash of record `seq`, lowercase hex.
    pub head: String,
    pub at_ms: u64,
    /// The signer's raw 32-byte Ed25519 public key, standard base64.
    pub public_key: String,
    /// The raw 64-byte signature, standard base64.
    pub signature: String,
}

/// The bytes a head's signature covers.
pub fn head_message(seq: u64, head: &str, at_ms: u64) -> Vec<u8> {
    format!("{HEAD_DOMAIN}\n{seq}\n{head}\n{at_ms}").into_bytes()
}

/// A public key as heads carry it.
pub fn encode_key(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// A public key from standard base64 of its 32 raw bytes.
pub fn decode_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("a public key is standard base64 of 32 bytes: {e}"))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Signs the head of the chain at `seq`.
pub fn sign_head(key: &SigningKey, seq: u64, head: &[u8; 32], at_ms: u64) -> SignedHead {
    let head = hex::encode(head);
    let signature = key.sign(&head_message(seq, &head, at_ms));
    SignedHead {
        seq,
        head,
        at_ms,
        public_key: encode_key(&key.verifying_key()),
        signature: STANDARD.encode(signature.to_bytes()),
    }
}

impl SignedHead {
    /// Checks the signature, by `trusted` (any of them) when given, else by the key
    /// the head names; the key that signed it.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<VerifyingKey, String> {
        let named = decode_key(&self.public_key)?;
        if !trusted.is_empty() && !trusted.contains(&named) {
            return Err(format!(
                "head at seq {} is signed by {}, which is not a trusted key",
                self.seq, self.public_key
            ));
        }
        let bytes = STANDARD
            .decode(&self.signature)
            .map_err(|e| format!("head at seq {}: the signature is not base64: {e}", self.seq))?;
        let raw: [u8; 64] = bytes
            .try_into()
            .map_err(|_| format!("head at seq {}: a signature is 64 bytes", self.seq))?;
        let valid = self.head.len() == 64
            && self
                .head
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(format!(
                "head at seq {}: the head is 64 lowercase hex digits",
                self.seq
            ));
        }
        named
            .verify(
                &head_message(self.seq, &self.head, self.at_ms),
                &Signature::from_bytes(&raw),
            )
            .map_err(|_| format!("head at seq {}: the signature does not verify", self.seq))?;
        Ok(named)
    }
}

/// Signed heads from a file's text: one head as `GET /v1/audit/head` answers it, or
/// a JSON array of them, or one per line.
pub fn parse_heads(text: &str) -> Result<Vec<SignedHead>, String> {
    let text = text.trim();
    if text.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| format!("not an array of heads: {e}"));
    }
    if let Ok(one) = serde_json::from_str::<SignedHead>(text) {
        return Ok(vec![one]);
    }
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(|e| format!("not a signed head: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_verifies_by_its_key_and_by_nothing_else() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let head = sign_head(&key, 42, &[9; 32], 1_700_000_000_000);
        assert_eq!(
            String::from_utf8(head_message(42, &head.head, head.at_ms)).unwrap(),
            format!(
                "colony-audit-head/v1\n42\n{}\n1700000000000",
                "09".repeat(32)
            )
        );
        assert_eq!(head.verify(&[]).unwrap(), key.verifying_key());
        assert!(head.verify(&[key.verifying_key()]).is_ok());
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(head
            .verify(&[other])
            .unwrap_err()
            .contains("not a trusted key"));
        for tampered in [
            SignedHead {
                seq: 43,
                ..head.clone()
            },
            SignedHead {
                at_ms: 1,
                ..head.clone()
            },
            SignedHead {
                head: "0a".repeat(32),
                ..head.clone()
            },
            SignedHead {
                public_key: encode_key(&other),
                ..head.clone()
            },
        ] {
            assert!(tampered.verify(&[]).is_err(), "{tampered:?}");
        }
        let text = serde_json::to_string(&head).unwrap();
        assert_eq!(parse_heads(&text).unwrap(), vec![head.clone()]);
        let array = serde_json::to_string(&vec![head.clone(), head.clone()]).unwrap();
        assert_eq!(parse_heads(&array).unwrap().len(), 2);
        assert_eq!(parse_heads(&format!("{text}\n{text}\n")).unwrap().len(), 2);
    }
}
