//! Artifacts: WebAssembly modules that principals deploy and Colony runs, each as a
//! principal of kind `artifact` (address `3.N`) under its deployer.
//!
//! The kernel keeps what must be the same on every node and in every replay: which
//! artifacts exist, the digest of their code, who deployed them, and whether they are
//! meant to run. The node's runtime stores the bytes and runs them; every resource
//! an artifact uses goes through the ledger like anyone else's.

use serde::{Deserialize, Serialize};

use crate::ledger::Resource;
use crate::principal::{PrincipalId, TokenHash};

/// Largest module, in bytes.
pub const ARTIFACT_BYTES_MAX: u64 = 16 << 20;

/// Most live artifacts one principal deploys.
pub const ARTIFACTS_PER_DEPLOYER_MAX: usize = 64;

/// What a deploy asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewArtifact {
    /// 1 to 64 bytes: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The SHA-256 of the module's bytes, in lower-case hex.
    pub digest: String,
    /// The module's size, charged to the deployer's `disk_bytes` while it exists.
    pub bytes: u64,
    /// The artifact principal's token (the runtime acts with it).
    pub token_hash: TokenHash,
    /// Quotas of its own, each at most the deployer's own quota of that resource;
    /// the others come from `[defaults.artifact]`.
    pub quotas: Vec<(Resource, u64)>,
    /// Whether it starts running at once.
    pub run: bool,
}

/// A deployed artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub principal: PrincipalId,
    pub address: String,
    pub name: String,
    pub digest: String,
    pub bytes: u64,
    pub deployer: PrincipalId,
    /// Whether it is meant to run (`start`/`stop`).
    pub run: bool,
    pub deployed_at_ms: u64,
}

/// Checks a name: 1 to 64 bytes of letters, digits, `-`, `_` and `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("an artifact's name is 1 to 64 letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

/// Checks a digest: 64 lower-case hex digits.
pub fn check_digest(digest: &str) -> Result<(), String> {
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("a digest is the module's SHA-256 in 64 lower-case hex digits".into());
    }
    Ok(())
}
